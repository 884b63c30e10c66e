"""benchmarks/gpu_session.sh at its tiny size on the CPU: every step runs and is summarised (so it cannot rot
before the first GPU session)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(2400)  # six subprocess steps: 260 s alone on 2 cores, over 600 s while sharing them in CI
def test_gpu_session_script_runs_tiny_on_cpu(tmp_path):
    out = tmp_path / "session"
    env = dict(os.environ, SIZE="tiny", PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    r = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_session.sh"), str(out)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"results: {out}" in r.stdout
    summary = (out / "SUMMARY.md").read_text()
    for step in ("device", "training_vs_sde", "m_sharpness", "variants", "simulate", "generalization"):
        row = next(line for line in summary.splitlines() if line.startswith(f"| {step} |"))
        assert row.split("|")[2].strip() == "0", (step, row, r.stdout)
    device = json.loads((out / "device.json").read_text())
    assert device["device"]["platform"] == "cpu"
    for name in ("variants.txt", "simulate.txt"):  # each benchmark ends with its JSON line of ratios
        ratios = json.loads((out / name).read_text().strip().splitlines()[-1])
        assert ratios and all(isinstance(v, (int, float)) for v in ratios.values())
    assert json.loads((out / "simulate.txt").read_text().strip().splitlines()[-1])["general_vs_closed_form_drift"] > 0
    assert any((out / "training_vs_sde").iterdir()) and any((out / "m_sharpness").iterdir())
    assert (out / "generalization" / "generalization.json").exists()
