"""Run one benchmark and keep what it printed as a recording.

    python benchmarks/record.py NAME [--tag TAG] [--out DIR] [-- ARGS...]

runs ``python benchmarks/NAME.py ARGS`` (its output goes to the terminal as it runs) and writes
``analysis/recordings/<platform>/bench_<NAME>[_<TAG>].json``: the command, git revision, machine and versions
(``provenance``), the whole output, and the ratios of its last line (one JSON object). Documented benchmark
figures are read from these files (``analysis/documented.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/record.py", description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("name", help="a script of benchmarks/ without .py (variants, simulate, noise, scaling, sweep)")
    parser.add_argument("--tag", default="", help="suffix of the recording's name (e.g. the model size)")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder of the recording (default: analysis/recordings/<platform>)"
    )
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    a = parser.parse_args(argv[:cut])
    args = argv[cut + 1 :]  # after --: the benchmark's own arguments
    script = ROOT / "benchmarks" / f"{a.name}.py"
    if not script.is_file():
        parser.error(f"name: no benchmark {script.relative_to(ROOT)}")
    sys.path.insert(0, str(ROOT))
    from sde_sam._io import provenance

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    if proc.wait() != 0:
        print(f"benchmarks/{a.name}.py exited with {proc.returncode}; nothing recorded", file=sys.stderr)
        return proc.returncode
    last = next((ln for ln in reversed(lines) if ln.strip()), "{}")
    prov = provenance()
    record = {
        "benchmark": a.name,
        "args": args,
        "provenance": prov,
        "ratios": json.loads(last),
        "seeds": f"the fixed keys of benchmarks/{a.name}.py",
        "output": "".join(lines),
    }
    name = f"bench_{a.name}{'_' + a.tag if a.tag else ''}.json"
    folder = a.out if a.out is not None else ROOT / "analysis" / "recordings" / prov["device"]["platform"]
    out = folder / name
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out.parent, delete=False, suffix=".tmp") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    os.replace(f.name, out)
    print(f"recorded {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
