"""C10: for each variant, the best model of the SDE ladder tracks the discrete runs, or SVAG shows that eta lies
outside the SDE regime for it.

Read over its regime (the ``eta_map`` stage: :func:`sde_sam.validity_map` per variant over eta, DESIGN §3.5): at every
eta and observable the verdict of the equivalence tests. The check FAILs when a *model gap* (SVAG tracks, every rung
departs) appears at an eta inside the SDE regime; it is INCONCLUSIVE when no point inside the regime was decided; it
reports per variant the eta at which SVAG first departs (the edge of the regime) and where tracking stops.

Without an eta map (older records) the ``fidelity`` stage is read as below (``analysis.fidelity``):

A model tracks an observable when ``|z| < 3`` at every recorded time (the gap over its standard error). The best
model of a variant tracks the most observables (ties: the smaller sum over observables of the largest |z|). A
variant passes when its best model tracks at least 80 % of the observables (8 of the 10 of digits-MLP training),
or when every observable it misses is one on which SVAG at its largest ``l`` differs from the discrete method:
there the discrete run at this eta is resolved to differ from its moment-matching SDE limit, and no SDE can be
asked to track it. "Differs" is a family-wise test: ``|z|`` above the Bonferroni threshold for 5 % over all
observables and recorded times (about 3.3 for 10 observables x 5 times), so chance alone rarely opens that door.
"""

import math
from statistics import NormalDist

from ._base import CheckResult, Row

ID, STAGES, Z, SHARE, ALPHA = "C10", ("eta_map",), 3.0, 0.8, 0.05
CLAIM = ("the best SDE of the ladder tracks each variant wherever eta lies inside the SDE regime, and SVAG shows eta "
         "outside that regime wherever none does")


def _max_z(g: dict) -> float:
    return float(g["max_abs_z"])  # float(): JSON stores inf as "inf"


def _best(models: dict) -> tuple[str, list[str], int]:
    best, key = None, None
    for name, m in models.items():
        last = m["levels"][-1]
        gaps = last["gaps"]
        missed = [n for n, g in gaps.items() if not _max_z(g) < Z]
        finite = sum(min(_max_z(g), 1e6) for g in gaps.values())
        k = (len(missed), finite)
        if key is None or k < key:
            best, key = (f"{name} at dt=eta/{last['refine']}", missed, len(gaps)), k
    return best


def _threshold(gaps: dict) -> float:
    times = max(len(g.get("mean_model", [0])) for g in gaps.values())
    return NormalDist().inv_cdf(1 - ALPHA / (2 * max(1, len(gaps) * times)))


def evaluate_map(d: dict) -> CheckResult:
    """C10 read over the eta map (see the module docstring)."""
    rows = []
    for label, res in d["variants"].items():
        leaves, gaps, tracked, undecided = None, [], 0, 0
        stops: dict[str, float] = {}  # observable -> the first eta decided as not tracked
        open_: dict[str, int] = {}  # observable -> etas left inconclusive
        cells = []
        for p in res["points"]:
            eta = p["eta"]
            departs = [o for o, s in p["svag"].items() if s is not None and s["agreement"] == "departs"]
            if departs and leaves is None:
                leaves = eta
            kinds = {o: v["kind"] for o, v in p["verdicts"].items()}
            inside = not departs
            for o, k in kinds.items():
                if k == "inconclusive":
                    open_[o] = open_.get(o, 0) + 1
                elif k != "tracked":
                    stops.setdefault(o, eta)
                if inside and k == "model gap":
                    gaps.append(f"eta={eta:g} {o}: {p['verdicts'][o]['text']}")
                tracked += inside and k == "tracked"
                undecided += inside and k == "inconclusive"
            cells.append(f"eta={eta:g}: " + ", ".join(f"{o} {k}" for o, k in kinds.items()))
        edge = (f"SVAG departs from eta = {leaves:g}" if leaves is not None else "SVAG never departs on this grid")
        stop = "; ".join([f"{o} not tracked from eta = {e:g}" for o, e in stops.items()]
                         + [f"{o} undecided at {n} of {len(res['points'])} etas" for o, n in open_.items()]) \
            or "tracked at every eta"
        decided = tracked > 0 or bool(gaps)
        rows.append(Row(f"{label}: inside the SDE regime a rung tracks (no model gap)",
                        f"{edge}; {stop}; " + "; ".join(cells) + (f"; model gaps: {'; '.join(gaps)}" if gaps else ""),
                        "no model gap where SVAG does not depart", "equivalence tests, tolerance 5 % of the scale",
                        not gaps, inconclusive=not decided))
    note = (f"{d['problem']}, UniformSubset B={d['batch_size']}, {d['steps']} steps, {d['num_runs']} runs per point; "
            f"observables {', '.join(d['observables'])}")
    return CheckResult(ID, CLAIM, tuple(rows), note)


def evaluate(results: dict) -> CheckResult:
    if results.get("eta_map"):
        return evaluate_map(results["eta_map"])
    d = results["fidelity"]
    rows = []
    for part in ("escape", "training"):
        if not d.get(part):
            continue
        for label, res in d[part]["variants"].items():
            best, missed, total = _best(res["models"])
            svag = res.get("svag", {})
            far, svag_text = [], "no SVAG run"
            if svag:
                l_max = max(svag, key=int)
                gaps = svag[l_max]["gaps"]
                zc = _threshold(gaps)
                far = [n for n, g in gaps.items() if _max_z(g) > zc]
                svag_text = (f"SVAG l={l_max} differs (abs(z) > {zc:.2f}) on {', '.join(far)}" if far
                             else f"SVAG l={l_max} within abs(z) {zc:.2f} everywhere (eta inside the SDE regime)")
            need = math.ceil(SHARE * total)
            unexplained = [n for n in missed if n not in far]
            tracks = total - len(missed) >= need
            verdict = ("tracks" if tracks else "misses explained by SVAG" if not unexplained
                       else f"unexplained misses: {', '.join(unexplained)}")
            miss = f"; misses {', '.join(missed)}" if missed else ""
            rows.append(Row(f"{part}: {label}", f"best {best}: tracks {total - len(missed)}/{total}{miss}; {svag_text}; "
                            f"{verdict}", f">= {need}/{total} tracked, or every miss where SVAG differs",
                            f"abs(z) < {Z:g} at every recorded time", tracks or not unexplained))
    return CheckResult(ID, CLAIM, tuple(rows), f"{float(d.get('wall_s', math.nan)):.0f} s; models: drift/diffusion/order")
