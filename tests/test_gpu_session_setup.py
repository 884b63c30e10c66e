"""benchmarks/gpu_session.sh's set-up on a machine that lacks a dependency (a lent GPU's image has no matfree and
reaches no index): wheels carried in ``WHEELS`` are installed without an index; with none, the script stops with
a message before any step. Also the session budget (a step that finds it spent is skipped, not run) and the pack
that the device tool brings back (one archive and the summary). Only the quick ``device`` step runs."""

import base64
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_session.sh"


def _hide_matfree(tmp_path: Path) -> Path:
    """A folder whose ``matfree`` fails to import, to put first on the path: the machine without matfree."""
    blocker = tmp_path / "blocker" / "matfree"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('matfree is not installed on this machine')\n")
    return blocker.parent


def _wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel of a stand-in ``matfree`` (a module that imports)."""
    folder.mkdir()
    files = {
        "matfree/__init__.py": "CARRIED = True\n",
        "matfree-0.0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: matfree\nVersion: 0.0.1\n",
        "matfree-0.0.1.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }

    def record_line(name, text):
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        return f"{name},sha256={digest},{len(text.encode())}"

    record = "\n".join([*(record_line(n, t) for n, t in files.items()), "matfree-0.0.1.dist-info/RECORD,,"]) + "\n"
    path = folder / "matfree-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in {**files, "matfree-0.0.1.dist-info/RECORD": record}.items():
            z.writestr(name, text)
    return path


def _run(tmp_path, **env):
    out = tmp_path / "session"
    full_env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu", STEPS="device", **env)
    r = subprocess.run(
        ["bash", str(SCRIPT), str(out), str(tmp_path / "pack")],
        env=full_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return r, out


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_carried_wheels_fill_a_missing_dependency_and_the_session_is_packed(tmp_path):
    blocker = _hide_matfree(tmp_path)
    _wheel(tmp_path / "wheels")
    r, out = _run(tmp_path, PYTHONPATH=str(blocker), WHEELS=str(tmp_path / "wheels"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((out / "device.json").read_text())["device"]["platform"] == "cpu"
    assert (tmp_path / "pack" / "SUMMARY.md").read_text() == (out / "SUMMARY.md").read_text()
    with tarfile.open(tmp_path / "pack" / "gpu_session.tgz") as tar:
        assert {"session/SUMMARY.md", "session/device.json"} <= set(tar.getnames())


def test_without_the_wheel_the_session_stops_before_any_step(tmp_path):
    blocker = _hide_matfree(tmp_path)
    r, out = _run(tmp_path, PYTHONPATH=str(blocker), WHEELS=str(tmp_path / "no-wheels"))
    assert r.returncode == 2
    assert "gpu_wheels.sh" in r.stderr
    assert not (out / "device.json").exists()


def test_a_step_that_finds_the_budget_spent_is_skipped(tmp_path):
    r, out = _run(tmp_path, BUDGET="5")  # under the 10 s a step needs to start
    assert r.returncode == 0, r.stdout + r.stderr
    row = next(line for line in (out / "SUMMARY.md").read_text().splitlines() if line.startswith("| device |"))
    assert row.split("|")[2].strip() == "skipped"
    assert not (out / "device.json").exists()
