"""The ``sde-sam`` command line: bad input, a small end-to-end run, each paper check able to FAIL."""

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from analysis import presets as _presets
from analysis import stages as S
from paper_checks import CHECKS
from sde_sam import cli
from sde_sam._io import from_jsonable
from stage_types import CONFIGS, Results, mismatches

ROOT = Path(__file__).resolve().parent.parent


# -- bad input ---------------------------------------------------------------------------------------------


def test_unknown_figure_or_check(tmp_path, capsys):
    assert cli.main(["reproduce", "--only", "F1,X9", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "X9" in err and "F1" in err and "C9" in err  # names the bad item and lists the valid ones
    assert cli.main(["check", "--only", "F1", "--out", str(tmp_path)]) == 2
    assert "unknown check F1" in capsys.readouterr().err
    assert cli.main(["figures", "--only", "C1", "--out", str(tmp_path)]) == 2
    assert "unknown figure C1" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_unwritable_out_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    assert cli.main(["reproduce", "--only", "C3", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert "not writable" in err and "--out" in err
    assert blocker.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_out_dir(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert cli.main(["reproduce", "--only", "C3", "--out", str(ro)]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


# -- end to end on a tiny preset -----------------------------------------------------------------------------


#: The stages in this process: the fixture's monkeypatched stage function would not reach a stage process.
ONE = ("--workers", "1")


@pytest.fixture
def tiny(monkeypatch):
    quick = copy.deepcopy(_presets.QUICK)
    quick["grad_norm"] = {"seed": 0, "batch_sizes": [1, 64], "num_batches": 32}
    quick["variance_term"] = {
        "seed": 0,
        "l2": 0.0,
        "init_scale": 0.3,
        "batch_size": 2,
        "rho": 0.01,
        "num_batches": 32,
        "ms": [1, 2],
    }
    monkeypatch.setitem(_presets.PRESETS, "quick", quick)
    calls = []

    def fake_symbolic(cfg):  # the sympy report has its own tests; keep the smoke run fast
        calls.append(cfg)
        return {"data": {"markdown": "### SGD\n\n$b = g$"}}

    monkeypatch.setattr(S, "stage_symbolic", fake_symbolic)
    return calls


def test_reproduce_end_to_end_and_resume(tmp_path, tiny, capsys):
    out = tmp_path / "out"
    assert cli.main(["reproduce", "--quick", "--only", "C3,F4", "--out", str(out), "--no-progress", *ONE]) == 0
    text = capsys.readouterr().out
    assert "C3" in text and "F4" in text and "report:" in text and str(out / "report.md") in text
    report = json.loads((out / "report.json").read_text())
    assert [c["id"] for c in report["checks"]] == ["C3"] and report["checks"][0]["status"] in ("PASS", "FAIL")
    assert {r["stage"] for r in report["stages"]} == {"grad_norm", "variance_term", "symbolic"}
    for f in ("figures/F4_variance_regularizer.png", "figures/F4_variance_regularizer.pdf"):
        assert (out / f).stat().st_size > 1000
    md = (out / "report.md").read_text()
    assert "![F4](figures/F4_variance_regularizer.png)" in md and "$b = g$" in md and "| C3 |" in md
    stage_files = sorted((out / "stages").glob("*.json"))
    _assert_stage_data_conforms(stage_files, {"grad_norm", "variance_term", "symbolic"})
    mtimes = [p.stat().st_mtime_ns for p in stage_files]
    assert cli.main(["reproduce", "--quick", "--only", "C3,F4", "--out", str(out), "--no-progress", *ONE]) == 0
    again = json.loads((out / "report.json").read_text())
    assert all(r["cached"] for r in again["stages"])
    assert [p.stat().st_mtime_ns for p in stage_files] == mtimes
    assert again["checks"] == report["checks"]
    assert len(tiny) == 1


def test_check_subcommand_reports_pass_fail(tmp_path, tiny, capsys):
    assert cli.main(["check", "--only", "c3", "--out", str(tmp_path), "--no-progress", *ONE]) == 0
    out = capsys.readouterr().out
    assert "C3" in out and ("PASS" in out or "FAIL" in out) and "measured" in out and "expected" in out


def test_python_dash_m_help():
    r = subprocess.run(
        [sys.executable, "-m", "sde_sam", "reproduce", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=120,
    )
    assert r.returncode == 0 and "--quick" in r.stdout and "--only" in r.stdout and "--device" in r.stdout


@pytest.mark.slow
def test_reproduce_quick_full_run(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "sde_sam", "reproduce", "--quick", "--out", str(tmp_path), "--no-progress"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=3600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert sorted(c["id"] for c in report["checks"]) == sorted(f"C{i}" for i in range(1, 12))
    assert sorted(f["id"] for f in report["figures"]) == sorted(f"F{i}" for i in range(1, 11))
    assert not any(f.get("error") for f in report["figures"])
    assert all(c["status"] in ("PASS", "FAIL", "INCONCLUSIVE") for c in report["checks"])
    _assert_stage_data_conforms(sorted((tmp_path / "stages").glob("*.json")), set(CONFIGS))


def _assert_stage_data_conforms(files: list[Path], stages: set[str]) -> None:
    """Each stage's data, as its figures and checks read it, is of its type in ``stage_types``."""
    seen = set()
    for f in files:
        meta = json.loads(f.read_text())
        seen.add(meta["stage"])
        assert mismatches(meta["stage"], from_jsonable(meta["data"])) == [], f.name
    assert seen == stages


# -- every check can fail -----------------------------------------------------------------------------------


def _esc(time_avg, index=None):
    out = {"time_avg": time_avg, "time_avg_stderr": 0.01, "final": time_avg, "final_stderr": 0.01}
    return out if index is None else out | {"index": index}


def _gen_rows(levels: dict) -> dict:
    """Rows of the generalization stage: per label, per-seed final test accuracies ``mean + jitter``."""
    jitter = np.array([0.004, -0.002, 0.001, -0.003])
    out = {}
    for p, accs in levels.items():
        out[p] = {}
        for i, (k, a) in enumerate(accs.items()):
            per = a + np.roll(jitter, i) * 0.5 + jitter
            out[p][k] = {
                "test_accuracy_final": {
                    "mean": float(per.mean()),
                    "stderr": float(per.std(ddof=1) / 2),
                    "num_seeds": 4,
                    "per_seed": per.tolist(),
                }
            }
    return out


def _good_data():
    """Minimal stage results shaped like the real ones, with values that satisfy each claim."""
    fit = {"slope": 2.01, "slope_stderr": 0.01}
    return {
        "drift": {
            "problem": "p",
            "n": 6,
            "B": 2,
            "d": 8,
            "rhos": [0.02, 0.01],
            "residual_fits": {"SAM": fit, "USAM": fit},
            "variance_coefficient": {
                "rhos": [1e-3],
                "values": {"n-USAM": [1e-5], "m-USAM (m=1)": [1.0001]},
                "expected": {"n-USAM": 0.0, "m-USAM (m=1)": 1.0},
            },
            "f_usam_grad_norm_coefficient": {
                "rho": 1e-3,
                "values": {"0.0": 1.0, "1.0": 1e-4},
                "expected": {"0.0": 1.0, "1.0": 0.0},
            },
            "sam_on": {
                "rows": [{"rho": 1e-3, "rel_err_masked": 1e-4, "rel_err_unmasked": 0.8}],
                "max_unmasked_perturbation": 0.0,
                "max_masked_perturbation": 1e-3,
                "masked_leaf": "w2",
                "num_masked": 2,
                "d": 8,
            },
        },
        "variance_term": {
            "problem": "p",
            "B": 4,
            "rows": [
                {"m": 1, "c_m": 1.0, "coef_general": 0.98, "coef_general_stderr": 0.02},
                {"m": 4, "c_m": 0.25, "coef_general": 0.26, "coef_general_stderr": 0.01},
            ],
        },
        "grad_norm": {
            "problem": "p",
            "full_grad_norm": 1.0,
            "rows": [
                {"B": 1, "value": 3.0, "stderr": 0.1},
                {"B": 4, "value": 2.0, "stderr": 0.05},
                {"B": 16, "value": 1.5, "stderr": 0.02},
            ],
        },
        "weak_order": {
            "linreg_exact": {
                "SGD|order1": {"variant": "SGD", "order": 1, "method": "exact", "slope": 1.03, "lo": 1.0, "hi": 1.06},
                "SGD|order2": {"variant": "SGD", "order": 2, "method": "exact", "slope": 2.0, "lo": 1.9, "hi": 2.1},
            },
            "diffusion_ablation": {
                "USAM": {
                    "variant": "USAM",
                    "observable": "tr Cov[x_t]",
                    "etas": [0.1, 0.05],
                    "best": "empirical",
                    "ratio": {"leading": [2.0, 2.1], "empirical": [8.0, 16.0]},
                    "slopes": {"leading": 1.1, "empirical": 2.1, "none": 1.0},
                }
            },
        },
        "escape": {
            "problem": "p",
            "B": 8,
            "eta": 0.05,
            "rho": 0.1,
            "barrier": -0.65,
            "sampler": "UniformSubset",
            "models": ["general/leading", "expected/leading"],
            "rows": {
                "m-SAM (m=1)": {
                    "m": 1,
                    "discrete": _esc(0.8),
                    "models": {"general/leading": _esc(0.1, 0), "expected/leading": _esc(0.79, 1)},
                },
                "m-SAM (m=8)": {
                    "m": 8,
                    "discrete": _esc(0.5),
                    "models": {"general/leading": _esc(0.1, 0), "expected/leading": _esc(0.51, 1)},
                },
                "n-SAM": {
                    "m": 0,
                    "discrete": _esc(0.1),
                    "models": {"general/leading": _esc(0.1, 0), "expected/leading": _esc(0.1, 1)},
                },
            },
        },
        "eta_map": _eta_map(["tracked", "tracked", "outside the SDE regime"], ["tracks", "tracks", "departs"]),
        "training": {
            "batch_size": 32,
            "eta": 0.1,
            "rho": 0.05,
            "paper_reference": {"SGD": 572.39, "SAM": 198.40, "RW-SAM": 177.79},
            "rows": {
                k: {
                    "trace_sigma_final": {"mean": v, "stderr": 0.1, "num_seeds": 4},
                    "trace_sigma_area": {"mean": 2 * v, "stderr": 0.1, "num_seeds": 4},
                }
                for k, v in {
                    "SGD": 10.0,
                    "SAM": 8.0,
                    "m-SAM (m=B)": 8.0,
                    "m-SAM (m=8)": 7.0,
                    "m-SAM (m=1)": 5.0,
                    "RW-SAM": 5.5,
                }.items()
            },
        },
        "generalization": {
            "models": {
                "digits_mlp_8": {
                    "config": {"batch_size": 32, "steps": 100, "seeds": [0, 1, 2, 3]},
                    "gpu_settles": False,
                    "rw_calibration": {"0.0": {"score": "4 probes", "reading": "ascent", "ess": 0.5, "lambda": 2.0}},
                    "rows": _gen_rows(
                        {
                            "0.0": {
                                "SGD": 0.89,
                                "SAM": 0.90,
                                "m-SAM (m=16)": 0.91,
                                "m-SAM (m=4)": 0.92,
                                "m-SAM (m=1)": 0.93,
                                "RW-SAM": 0.93,
                                "F-SAM": 0.90,
                                "SAM-ON": 0.90,
                            },
                            "0.4": {
                                "SGD": 0.65,
                                "SAM": 0.70,
                                "m-SAM (m=16)": 0.74,
                                "m-SAM (m=4)": 0.78,
                                "m-SAM (m=1)": 0.82,
                                "RW-SAM": 0.82,
                                "F-SAM": 0.70,
                                "SAM-ON": 0.69,
                            },
                        }
                    ),
                }
            }
        },
        "timing": {
            "problem": "p",
            "d": 10,
            "B": 64,
            "device": "cpu",
            "platform": "cpu",
            "repeats": 3,
            "forward_flops_vs_SAM": 0.222,
            "rw_sam_extra_forwards": 1.005,
            "rows": {
                "RW-SAM": {"vs_SAM": 1.1, "flops_vs_SAM": 1.223},
                "serial m-SAM (k=2)": {"vs_SAM": 2.1, "flops_vs_SAM": 1.0},
            },
        },
    }


WRONG = {
    "C1": lambda d: d["drift"]["residual_fits"]["SAM"].update(slope=1.0),
    "C2": lambda d: d["variance_term"]["rows"][0].update(coef_general=0.5),
    "C3": lambda d: d["grad_norm"]["rows"][2].update(value=3.5),
    "C4": lambda d: d["weak_order"]["linreg_exact"]["SGD|order1"].update(slope=0.5),
    "C5": lambda d: d["escape"]["rows"]["m-SAM (m=8)"]["discrete"].update(time_avg=0.95),
    "C6": lambda d: d["training"]["rows"]["RW-SAM"]["trace_sigma_final"].update(mean=9.0),
    "C7": lambda d: d["timing"]["rows"]["RW-SAM"].update(flops_vs_SAM=1.2),  # SAM + 0.9 forward: not one pass
    "C8": lambda d: d["drift"]["f_usam_grad_norm_coefficient"]["values"].update({"1.0": 0.5}),
    "C9": lambda d: d["drift"]["sam_on"].update(max_unmasked_perturbation=1e-3),
    "C11": lambda d: d["generalization"]["models"]["digits_mlp_8"]["rows"]["0.4"]["m-SAM (m=1)"][
        "test_accuracy_final"
    ].update(per_seed=[0.60, 0.61, 0.59, 0.60], mean=0.60),
    "C10": lambda d: d["eta_map"]["variants"]["SAM"]["points"][1]["verdicts"]["loss"].update(kind="model gap"),
}


def test_c4_fails_when_the_diffusion_is_no_better_than_the_ode():
    """Weak order 1 holds, but the SDE's variance error falls only like eta (a diffusion off by a constant): FAIL."""
    data = _good_data()
    ab = data["weak_order"]["diffusion_ablation"]["USAM"]
    ab.update(best="leading", ratio={"leading": [2.0, 2.1]})
    assert CHECKS["C4"].evaluate(data).status == "FAIL"


def test_c6_fails_when_smaller_m_does_not_fall_faster():
    """Final values ordered, but the area under m = 1's curve is the largest: "falls faster" fails."""
    data = _good_data()
    data["training"]["rows"]["m-SAM (m=1)"]["trace_sigma_area"].update(mean=30.0)
    res = CHECKS["C6"].evaluate(data)
    assert res.status == "FAIL" and any("area" in r.what and not r.passed for r in res.rows)


def test_c6_fails_when_the_ordering_is_not_resolved():
    """SGD above SAM by less than 2 s.e. is not a resolved ordering."""
    data = _good_data()
    data["training"]["rows"]["SGD"]["trace_sigma_final"].update(mean=8.2)
    assert CHECKS["C6"].evaluate(data).status == "FAIL"


def test_c6_rw_study_rows_pass_and_fail_for_the_right_reason():
    """A study row passes when SAM - it is resolved and its closest m-SAM is small-m; it fails when its final
    tr Sigma is SAM's (not resolved) and when it is closest to m = B."""
    data = _good_data()
    rows = data["training"]["rows"]
    for k in ("SAM", "RW-SAM"):
        rows[k]["test_accuracy_final"] = {"mean": 0.9, "stderr": 0.01}
    label = "RW-SAM [exact, ESS 10%, ascent]"
    rows[label] = {
        "trace_sigma_final": {"mean": 5.2, "stderr": 0.1, "num_seeds": 4},
        "trace_sigma_area": {"mean": 10.0, "stderr": 0.1, "num_seeds": 4},
        "test_accuracy_final": {"mean": 0.91, "stderr": 0.01},
        "ess_fraction_final": {"mean": 0.12},
        "rw_setting": {"lambda": 3.0, "ess_target": 0.1},
    }
    res = CHECKS["C6"].evaluate(data)
    assert res.status == "PASS" and any(label in r.what for r in res.rows) and label in res.note
    rows[label]["trace_sigma_final"].update(mean=8.1)  # SAM - it = -0.1: unresolved, and closest to m = B
    res = CHECKS["C6"].evaluate(data)
    assert res.status == "FAIL" and [r for r in res.rows if label in r.what and not r.passed]


def test_c5_fails_when_no_model_reproduces_the_ordering():
    """The discrete ordering holds, but the best model's pair difference is off by 10 s.e.: FAIL, naming it."""
    data = _good_data()
    data["escape"]["rows"]["m-SAM (m=8)"]["models"]["expected/leading"].update(time_avg=0.65)
    res = CHECKS["C5"].evaluate(data)
    assert res.status == "FAIL" and "Best model" in res.note


@pytest.mark.parametrize("cid", sorted(CHECKS))
def test_each_check_passes_on_good_and_fails_on_wrong_values(cid, capsys):
    check = CHECKS[cid]
    good = check.evaluate(_good_data())
    assert good.status == "PASS", good.format()
    data = _good_data()
    WRONG[cid](data)
    bad = check.evaluate(data)
    assert bad.status == "FAIL"
    text = bad.format()
    assert "FAIL" in text and "measured" in text and "expected" in text and "tolerance" in text


def test_c7_wall_time_rows_count_only_on_a_gpu():
    """On a CPU record the paper's GPU wall-time ratios are "N/A" whatever they are (the flop rows decide); on a GPU
    record a serial m-SAM that costs what SAM costs in wall time fails the check."""
    from paper_checks import cost

    data = _good_data()
    data["timing"]["rows"]["serial m-SAM (k=2)"]["vs_SAM"] = 0.8  # a CPU runs the serial form at SAM's cost
    res = cost.evaluate(cast(Results, data))
    assert res.status == "PASS", res.format()
    assert [r.status for r in res.rows] == ["PASS", "PASS", "N/A", "N/A"], res.format()
    data["timing"]["platform"] = "gpu"
    res = cost.evaluate(cast(Results, data))
    assert res.status == "FAIL" and [r.status for r in res.rows] == ["PASS", "PASS", "PASS", "FAIL"], res.format()


def test_reproduce_no_progress_silences_library_bars_and_restores_the_environment(monkeypatch):
    from analysis import reproduce as R

    seen = []
    monkeypatch.setattr(R, "_reproduce", lambda *a, **k: seen.append(os.environ.get("TQDM_DISABLE")) or {})
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    R.reproduce("quick", progress=False)
    R.reproduce("quick", progress=True)
    assert seen == ["1", None] and "TQDM_DISABLE" not in os.environ


def test_c11_rows_fail_for_the_right_reason():
    """C11 on constructed values: RW-SAM far below small-m m-SAM fails only its match row; equal gains at both noise
    levels fail only the two gain rows; the good values pass every row."""
    data = _good_data()
    res = CHECKS["C11"].evaluate(data)
    assert res.status == "PASS" and len(res.rows) == 8, res.format()
    data["generalization"]["models"]["digits_mlp_8"]["rows"]["0.0"]["RW-SAM"]["test_accuracy_final"].update(
        per_seed=[0.80, 0.81, 0.80, 0.79], mean=0.80
    )
    failed = [r.what for r in CHECKS["C11"].evaluate(data).rows if not r.passed]
    assert len(failed) == 1 and "RW-SAM - best small-m" in failed[0], failed
    data = _good_data()
    rows = data["generalization"]["models"]["digits_mlp_8"]["rows"]
    for k in rows["0.4"]:  # the same gains at 40 % as at 0 %
        rows["0.4"][k] = rows["0.0"][k]
    failed = [r.what for r in CHECKS["C11"].evaluate(data).rows if not r.passed]
    assert len(failed) == 2 and all("gain" in w for w in failed), failed


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_validate_command_prints_the_verdicts_and_saves_them(tmp_path, capsys):
    """``sde-sam validate`` on a built-in problem: the verdict table, and a result Validation.load reads."""
    import sde_sam as ss
    from sde_sam.cli import main

    out = tmp_path / "v"
    assert (
        main(
            [
                "validate",
                "--problem",
                "quadratic",
                "--variant",
                "sgd",
                "--steps",
                "10",
                "--every",
                "5",
                "--runs",
                "4",
                "--max-refine",
                "0",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| loss |" in printed and "SVAG l=8" in printed
    assert ss.Validation.load(out).config["variant"]["name"] == "SGD"
    assert main(["validate", "--steps", "10", "--every", "3"]) != 0  # refused before any work
    assert "--every=3 must divide --steps=10" in capsys.readouterr().err


def _escape_map(inside_diff: float, se: float = 0.01) -> dict:
    """A C5 map: one point inside the first-order regime (rho lambda = 0.25) whose m = 1 minus m = 8 difference is
    ``inside_diff``, one outside (1.6) where m = 1 leaves later (reversed)."""

    def row(m, ta):
        stat = {"time_avg": ta, "time_avg_stderr": se / math.sqrt(2)}
        return {"m": m, "discrete": stat, "model": dict(stat)}

    return {
        "model": "expected/leading",
        "num_runs": 512,
        "steps": 240,
        "theory_rho_lambda": 0.5,
        "sharp_curvature": 16.0,
        "points": [
            {
                "eta": 0.05,
                "rho": 0.25 / 16,
                "rho_lambda": 0.25,
                "rows": {"m-SAM (m=1)": row(1, 0.3 + inside_diff), "SAM (m=B=8)": row(8, 0.3)},
            },
            {
                "eta": 0.05,
                "rho": 0.1,
                "rho_lambda": 1.6,
                "rows": {"m-SAM (m=1)": row(1, 0.6), "SAM (m=B=8)": row(8, 0.7)},
            },
        ],
    }


@pytest.mark.parametrize(("inside_diff", "status"), [(0.1, "PASS"), (-0.1, "FAIL"), (0.005, "INCONCLUSIVE")])
def test_c5_reads_the_claim_inside_its_regime(inside_diff, status):
    """Inside rho lambda <= 0.5: m = 1 sooner by 10 s.e. passes, later by 10 s.e. fails, 0.5 s.e. cannot tell
    (INCONCLUSIVE, never FAIL); the reversal outside the regime is reported, not failed."""
    data = _good_data()
    data["escape"]["map"] = _escape_map(inside_diff)
    res = CHECKS["C5"].evaluate(data)
    assert res.status == status, res.format()
    assert "reversed from rho*lambda = 1.6" in res.format()


def _eta_map(kinds: list[str], svag: list[str]) -> dict:
    """An eta map of one variant: at each eta the verdict on the loss and SVAG's agreement."""
    points = [
        {
            "eta": eta,
            "verdicts": {"loss": {"kind": k, "rung": "general/leading/o1", "text": k}},
            "svag": {"loss": {"agreement": a}},
            "tau": {"loss": 0.1},
            "compiles": 0,
        }
        for eta, k, a in zip((0.025, 0.05, 0.1), kinds, svag, strict=True)
    ]
    return {
        "problem": "digits_mlp_8",
        "batch_size": 32,
        "steps": 40,
        "num_runs": 64,
        "etas": [0.025, 0.05, 0.1],
        "observables": ["loss"],
        "variants": {"SAM": {"points": points}},
    }


@pytest.mark.parametrize(
    ("kinds", "svag", "status"),
    [
        (["tracked", "tracked", "outside the SDE regime"], ["tracks", "tracks", "departs"], "PASS"),
        (["tracked", "model gap", "outside the SDE regime"], ["tracks", "tracks", "departs"], "FAIL"),
        (
            ["inconclusive", "inconclusive", "outside the SDE regime"],
            ["inconclusive", "inconclusive", "departs"],
            "INCONCLUSIVE",
        ),
    ],
)
def test_c10_reads_the_eta_map_inside_the_sde_regime(kinds, svag, status):
    """A model gap where SVAG tracks fails; beyond the eta where SVAG departs nothing is asked; a map whose points
    inside the regime are all undecided is INCONCLUSIVE, not FAIL."""
    res = CHECKS["C10"].evaluate({"eta_map": _eta_map(kinds, svag)})
    assert res.status == status, res.format()
    assert "SVAG departs from eta = 0.1" in res.format()


@pytest.mark.parametrize(("samples", "want"), [(64, 64), (None, 256)])
def test_the_eta_map_stage_gives_the_sampled_diffusion_its_batches(monkeypatch, samples, want):
    """``diffusion_samples`` of the eta map's config sizes the empirical diffusion of its rungs (absent: the
    diffusion's default, 256), as the map it hands to ``validity_map`` shows."""
    import sde_sam as ss

    class Seen(Exception):
        pass

    def validity_map(problem, variant, sampler, *, rungs, **kwargs):
        raise Seen(rungs)

    monkeypatch.setattr(ss, "validity_map", validity_map)
    cfg = copy.deepcopy(_presets.preset("quick")["eta_map"])
    cfg.pop("diffusion_samples", None)
    if samples is not None:
        cfg["diffusion_samples"] = samples
    cfg["rungs"] = [["expected", "empirical", 1], ["general", "leading", 1]]
    with pytest.raises(Seen) as seen:
        S.stage_eta_map(cfg)
    rungs = seen.value.args[0]
    assert [type(r.diffusion).__name__ for r in rungs] == ["EmpiricalDiffusion", "LeadingDiffusion"]
    assert rungs[0].diffusion.num_samples == want


def test_c11_is_inconclusive_for_lack_of_power_and_fails_only_when_reversed():
    """An undertrained quick run (SGD train accuracy 0.64) cannot test a generalization claim: INCONCLUSIVE, even
    where a difference is reversed; trained (0.95), a gain of m = 1 over SAM reversed beyond 2 s.e. FAILs, and one
    the seeds cannot resolve is INCONCLUSIVE with the seeds that would decide it."""
    data = _good_data()
    rows = data["generalization"]["models"]["digits_mlp_8"]["rows"]
    rows["0.0"]["SGD"]["accuracy_final"] = {"mean": 0.64}
    rows["0.4"]["m-SAM (m=1)"]["test_accuracy_final"].update(per_seed=[0.60, 0.61, 0.59, 0.60], mean=0.60)
    res = CHECKS["C11"].evaluate(data)
    assert res.status == "INCONCLUSIVE" and "undertrained" in res.format(), res.format()
    rows["0.0"]["SGD"]["accuracy_final"] = {"mean": 0.95}
    assert CHECKS["C11"].evaluate(data).status == "FAIL"
    sam = rows["0.4"]["SAM"]["test_accuracy_final"]["per_seed"]
    rows["0.4"]["m-SAM (m=1)"]["test_accuracy_final"].update(
        per_seed=[a + d for a, d in zip(sam, (0.004, -0.003, 0.002, -0.001), strict=True)]
    )
    row = next(r for r in CHECKS["C11"].evaluate(data).rows if "noise 0.4] m-SAM (m=1) - SAM" in r.what)
    assert row.status == "INCONCLUSIVE" and "seeds would decide it" in row.measured, row


# -- stages in several processes -----------------------------------------------------------------------------


@pytest.fixture
def small(monkeypatch):
    """The quick preset with a small grad_norm stage (the stage's config travels to the stage processes; a
    monkeypatched stage function would not)."""
    quick = copy.deepcopy(_presets.QUICK)
    quick["grad_norm"] = {"seed": 0, "batch_sizes": [1, 64], "num_batches": 32}
    monkeypatch.setitem(_presets.PRESETS, "quick", quick)


def test_stages_in_two_processes_give_the_results_of_one(tmp_path, small):
    """``workers=2``: the same stage results bit for bit as one process (the stage checksums), every stage's row,
    and records whose provenance names this process's command, not the stage process's."""
    from analysis import reproduce as R

    one = R.reproduce("quick", only="C3", out=tmp_path / "one", progress=False, log=lambda m: None)
    two = R.reproduce("quick", only="C3", out=tmp_path / "two", progress=False, log=lambda m: None, workers=2)
    assert (one["workers"], two["workers"]) == (1, 2)
    assert [r["stage"] for r in two["stages"]] == [r["stage"] for r in one["stages"]] == ["grad_norm", "symbolic"]
    assert all(not r["cached"] and r["cpu_s"] > 0 for r in two["stages"])
    assert two["checks"] == one["checks"]
    metas = {
        n: json.loads(next((tmp_path / n / "stages").glob("grad_norm-*.json")).read_text()) for n in ("one", "two")
    }
    assert metas["two"]["checksums"] == metas["one"]["checksums"]
    assert metas["two"]["provenance"]["command"] == metas["one"]["provenance"]["command"]
    assert "spawn" not in metas["two"]["provenance"]["command"]


def test_a_failing_stage_in_a_stage_process_fails_the_run(tmp_path):
    """A stage that raises in a stage process raises here, with its own error."""
    from analysis import reproduce as R
    from analysis.pipeline import Stage

    bad = Stage("grad_norm", S.stage_grad_norm, {"seed": 0, "batch_sizes": [0], "num_batches": 4})
    with pytest.raises(ValueError, match="batch"):
        R._run_stages([bad], tmp_path, print, False, 2)


def test_stage_groups_keep_shared_stages_together_and_take_the_longest_first():
    from analysis import reproduce as R
    from analysis.pipeline import Stage

    stages = [Stage(n, print, {}) for n in ("drift", "training", "generalization", "escape", "symbolic")]  # pyright: ignore[reportArgumentType]
    groups = [[st.name for st in g] for g in R.stage_groups(stages)]
    assert groups == [["escape"], ["training", "generalization"], ["drift"], ["symbolic"]]
    assert [[st.name for st in g] for g in R.stage_groups(stages[2:3])] == [["generalization"]]


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_workers_must_be_a_positive_integer(tmp_path, capsys, workers):
    from analysis import reproduce as R

    assert cli.main(["reproduce", "--only", "C3", "--out", str(tmp_path), "--workers", workers]) == 2
    assert "workers must be an integer >= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        R.reproduce("quick", only="C3", out=tmp_path, workers=int(workers))
    with pytest.raises(SystemExit) as e:  # not a number: argparse's own message
        cli.main(["reproduce", "--only", "C3", "--out", str(tmp_path), "--workers", "x"])
    assert e.value.code == 2 and "--workers" in capsys.readouterr().err
