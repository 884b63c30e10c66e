"""C10: for each variant, the best model of the SDE ladder tracks the discrete runs, or SVAG shows that eta lies
outside the SDE regime for it (``analysis.fidelity``).

A model tracks an observable when ``|z| < 3`` at every recorded time (the gap over its standard error); the best
model of a variant is the one (at its finest dt) that tracks the most observables. A variant passes when its
best model tracks at least 80 % of the observables (8 of the 10 of digits-MLP training), or when SVAG at its
largest ``l`` differs from the discrete method by ``|z| > 3`` somewhere: then the discrete run at this eta is
resolved to differ from its moment-matching SDE limit, and no SDE can be asked to track it.
"""

import math

from ._base import CheckResult, Row

ID, STAGES, Z, SHARE = "C10", ("fidelity",), 3.0, 0.8
CLAIM = "the best SDE of the ladder tracks each variant (|z| < 3 on >= 80 % of observables), or SVAG shows eta outside the SDE regime"


def _tracked(gaps: dict) -> tuple[int, list[str]]:
    ok = [n for n, g in gaps.items() if float(g["max_abs_z"]) < Z]  # float(): JSON stores inf as "inf"
    return len(ok), [n for n in gaps if n not in ok]


def evaluate(results: dict) -> CheckResult:
    d = results["fidelity"]
    rows = []
    for part in ("escape", "training"):
        if not d.get(part):
            continue
        for label, res in d[part]["variants"].items():
            best, best_n, best_miss, total = None, -1, [], 0
            for name, m in res["models"].items():
                gaps = m["levels"][-1]["gaps"]
                n, miss = _tracked(gaps)
                total = len(gaps)
                if n > best_n:
                    best, best_n, best_miss = f"{name} at dt=eta/{m['levels'][-1]['refine']}", n, miss
            svag = res.get("svag", {})
            outside, svag_text = False, "no SVAG run"
            if svag:
                l_max = max(svag, key=int)
                zs = {n: float(g["max_abs_z"]) for n, g in svag[l_max]["gaps"].items()}
                outside = any(z > Z for z in zs.values() if math.isfinite(z))
                far = [n for n, z in zs.items() if z > Z]
                svag_text = (f"SVAG l={l_max} vs discrete: " + (f"|z| > {Z:g} on {', '.join(far)} (eta outside the SDE regime)"
                                                               if far else f"|z| <= {Z:g} everywhere (eta inside)"))
            need = math.ceil(SHARE * total)
            tracks = best_n >= need
            miss = f"; misses {', '.join(best_miss)}" if best_miss else ""
            rows.append(Row(f"{part}: {label}", f"best {best}: tracks {best_n}/{total}{miss}; {svag_text}",
                            f">= {need}/{total} tracked, or SVAG outside", f"|z| < {Z:g} at every recorded time",
                            tracks or outside))
    return CheckResult(ID, CLAIM, tuple(rows), f"{d.get('wall_s', math.nan):.0f} s; models: drift/diffusion/order")
