"""The benchmark scripts keep running as the library changes (each is also run whole by its recording)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_simulate_memory_demo_lowers_the_program_simulate_runs(monkeypatch):
    """The memory row lowers ``_simulate_jit`` with the arguments ``ss.simulate`` passes (it fell behind once)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import simulate as bench  # pyright: ignore[reportMissingImports]

    out = bench.memory_demo({}, hidden=(12, 8), paths=2, steps=2)
    assert out["finite"] and out["temp_bytes"] > 0


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a subprocess of about 90 s alone; several times that on a shared machine
def test_record_keeps_the_output_command_revision_and_ratios(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "record.py"),
            "simulate",
            "--tag",
            "tiny",
            "--out",
            str(tmp_path),
            "--",
            "--tiny",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3500,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((tmp_path / "bench_simulate_tiny.json").read_text())
    assert rec["args"] == ["--tiny"] and rec["ratios"] and rec["output"].rstrip().endswith(json.dumps(rec["ratios"]))
    assert "benchmarks/record.py simulate" in rec["provenance"]["command"] and rec["provenance"]["host"]
    assert "revision" in rec["provenance"]
    bad = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "record.py"), "nosuch", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "no benchmark" in bad.stderr
