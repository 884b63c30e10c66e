"""C7: RW-SAM's cost per step is within 1.2x of SAM; m-SAM's serial form (k = 2 micro-batches) about 2x."""

from ._base import CheckResult, Row

ID, STAGES = "C7", ("timing",)
CLAIM = "RW-SAM cost per step <= 1.2x SAM; serial m-SAM about 2x SAM"
RW_MAX, SERIAL, SERIAL_TOL = 1.2, 2.0, 0.5


def evaluate(results: dict) -> CheckResult:
    d = results["timing"]["rows"]
    rows = [Row("RW-SAM / SAM time per step", f"{d['RW-SAM']['vs_SAM']:.3f}", f"<= {RW_MAX}", "upper bound",
                d["RW-SAM"]["vs_SAM"] <= RW_MAX)]
    serial = d.get("serial m-SAM (k=2)")
    if serial is not None:
        rows.append(Row("serial m-SAM (k=2) / SAM", f"{serial['vs_SAM']:.3f}", f"{SERIAL}", f"±{SERIAL_TOL}",
                        abs(serial["vs_SAM"] - SERIAL) <= SERIAL_TOL))
    t = results["timing"]
    return CheckResult(ID, CLAIM, tuple(rows), f"{t['problem']} (d={t['d']}), B={t['B']}, {t['device']}; medians "
                       f"of {t['repeats']} interleaved rounds; the paper's 2x is for a GPU")
