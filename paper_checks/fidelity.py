"""C10: for each variant, the best model of the SDE ladder tracks the discrete runs, or SVAG shows that eta lies
outside the SDE regime for it.

Read over its regime (the ``eta_map`` stage: :func:`sde_sam.validity_map` per variant over eta, DESIGN §3.5): at every
eta and observable the verdict of the equivalence tests. The check FAILs when a *model gap* (SVAG tracks, every rung
departs) appears at an eta inside the SDE regime; it is INCONCLUSIVE when no point inside the regime was decided; it
reports per variant the eta at which SVAG first departs (the edge of the regime) and where tracking stops.
"""

# pyright: reportTypedDictNotRequiredAccess=false

from stage_types import EtaMapData, Results

from ._base import CheckResult, Row

ID, STAGES = "C10", ("eta_map",)
CLAIM = (
    "the best SDE of the ladder tracks each variant wherever eta lies inside the SDE regime, and SVAG shows eta "
    "outside that regime wherever none does"
)


def evaluate_map(d: EtaMapData) -> CheckResult:
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
        edge = f"SVAG departs from eta = {leaves:g}" if leaves is not None else "SVAG never departs on this grid"
        stop = (
            "; ".join(
                [f"{o} not tracked from eta = {e:g}" for o, e in stops.items()]
                + [f"{o} undecided at {n} of {len(res['points'])} etas" for o, n in open_.items()]
            )
            or "tracked at every eta"
        )
        decided = tracked > 0 or bool(gaps)
        rows.append(
            Row(
                f"{label}: inside the SDE regime a rung tracks (no model gap)",
                f"{edge}; {stop}; " + "; ".join(cells) + (f"; model gaps: {'; '.join(gaps)}" if gaps else ""),
                "no model gap where SVAG does not depart",
                "equivalence tests, tolerance 5 % of the scale",
                not gaps,
                inconclusive=not decided,
            )
        )
    note = (
        f"{d['problem']}, UniformSubset B={d['batch_size']}, {d['steps']} steps, {d['num_runs']} runs per point; "
        f"observables {', '.join(d['observables'])}"
    )
    return CheckResult(ID, CLAIM, tuple(rows), note)


def evaluate(results: Results) -> CheckResult:
    return evaluate_map(results["eta_map"])
