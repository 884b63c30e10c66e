"""``sde-sam reproduce``: every figure (F1–F10) and paper check (C1–C11) of DESIGN §8 from one command.

Stages (``analysis.stages``) run through the cached pipeline (:mod:`analysis.pipeline`); figures (``figures/``) and
checks (``paper_checks/``) read their results. The report ``report.md`` + ``report.json`` embeds the figures, the
check table and the symbolic drifts (:mod:`sde_sam.symbolic`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing
import os
import queue
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from analysis.pipeline import Stage, git_revision, run_stage
from analysis.presets import preset
from sde_sam._io import atomic_write_bytes, provenance, to_jsonable
from stage_types import config_of

STAGE_DESCRIPTIONS = {
    "drift": "exact expected steps vs closed-form drifts (small smooth problem, float64)",
    "variance_term": "m-USAM minus n-USAM drift projected on grad tr Sigma (Monte Carlo)",
    "grad_norm": "E||grad f_gamma|| against the batch size",
    "weak_order": "weak error vs eta (analysis.weak_order)",
    "eta_rho": "weak-error map over (eta, rho)",
    "escape": "escape from the sharp basin, discrete and each SDE model",
    "training": "tr Sigma per variant along real training (analysis.m_sharpness)",
    "generalization": "test accuracy and loss under label noise per variant (analysis.generalization)",
    "train_sde": "training against the SDE prediction (analysis.training_vs_sde)",
    "sgn": "noise structure along training: spectra, alignment, tail index",
    "timing": "cost per step of every variant and of the simulator",
    "fidelity": "error budget of every variant against the SDE model ladder and SVAG (analysis.fidelity)",
    "eta_map": "verdicts of sde_sam.validity_map per variant over eta on digits training (C10)",
    "symbolic": "sympy drifts and diffusions of every variant (report section)",
}


def registry() -> tuple[dict, dict]:
    """``(figures, checks)``: id -> module."""
    from figures import FIGURES
    from paper_checks import CHECKS

    return FIGURES, CHECKS


def parse_only(only: str | None) -> list[str]:
    """The figure/check ids in ``only`` (comma-separated, case-insensitive); all when ``None``."""
    figures, checks = registry()
    valid = list(figures) + list(checks)
    if only is None:
        return valid
    items = [s.strip().upper() for s in only.split(",") if s.strip()]
    if not items:
        raise ValueError(f"--only is empty; valid names: {','.join(valid)}")
    bad = [s for s in items if s not in valid]
    if bad:
        raise ValueError(f"--only: unknown figure/check {', '.join(bad)}; valid names: {','.join(valid)}")
    return list(dict.fromkeys(items))


def stages_for(ids: Sequence[str], mode: str) -> list[Stage]:
    from analysis import stages as S

    figures, checks = registry()
    needed: list[str] = []
    for i in ids:
        for s in (figures.get(i) or checks[i]).STAGES:
            if s not in needed:
                needed.append(s)
    if "symbolic" not in needed:
        needed.append("symbolic")  # the report always embeds the symbolic drifts (cached after the first run)
    cfg = preset(mode)
    order = list(STAGE_DESCRIPTIONS)
    needed.sort(key=order.index)
    configs = {name: config_of(name, cfg[name]) for name in needed}  # every config checked before any stage runs
    return [Stage(name, getattr(S, f"stage_{name}"), configs[name], STAGE_DESCRIPTIONS[name]) for name in needed]


def check_out_dir(out: str | os.PathLike) -> Path:
    """Create ``out`` (and parents) and make sure a file can be written there; clear ValueError otherwise."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(
            f"output folder {str(out)!r} is not writable ({e.strerror or e}); pass --out DIR with a writable folder"
        ) from None
    return out


def _cpu() -> float:
    """CPU seconds of this process and of its finished stage processes."""
    r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def set_device(device: str) -> None:
    """``cpu``: force JAX onto the CPU; ``gpu``: require an accelerator (clear error when none)."""
    import jax

    if device == "cpu":
        jax.config.update("jax_platforms", "cpu")
    elif device == "gpu":
        try:
            if jax.default_backend() not in ("gpu", "cuda", "rocm"):
                raise RuntimeError
        except RuntimeError:
            raise ValueError(
                "--device gpu: no GPU is visible to JAX (install jax[cuda12]) or use --device cpu"
            ) from None
    elif device is not None:
        raise ValueError(f"--device must be 'cpu' or 'gpu', got {device!r}")


def compile_counter():
    """The process's compilation count (:func:`sde_sam._compiles.process_count`): ``count`` programs handed to XLA
    (compiled, or read from the persistent cache), their ``seconds``, and the persistent cache's ``cache_hits``."""
    from sde_sam._compiles import process_count

    return process_count()


_CACHE_OPTIONS = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)


def enable_compilation_cache(out: str | os.PathLike) -> Path:
    """JAX's persistent compilation cache in ``out/jax_cache`` (the environment's ``JAX_COMPILATION_CACHE_DIR``
    when set), every program kept: a rerun compiles nothing it compiled before. Returns the folder."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    folder = Path(os.environ.get("JAX_COMPILATION_CACHE_DIR") or Path(out) / "jax_cache")
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in zip(_CACHE_OPTIONS, (str(folder), 0.0, 0), strict=True):
        jax.config.update(name, value)
    compilation_cache.reset_cache()  # read the settings above even if something compiled before
    return folder


@contextlib.contextmanager
def compilation_cache_in(out: str | os.PathLike):
    """:func:`enable_compilation_cache` for the duration of a ``with`` block; the process's settings after it."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    old = {name: getattr(jax.config, name) for name in _CACHE_OPTIONS}
    try:
        yield enable_compilation_cache(out)
    finally:
        for name, value in old.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()


def reproduce(
    mode: str = "quick",
    only: str | None = None,
    out: str | os.PathLike = "results",
    log: Callable[[str], None] = print,
    progress: bool = True,
    workers: int | None = 1,
) -> dict:
    """Run the stages needed by ``only`` (default all), then the checks and figures; write the report.

    Returns the report dict (also written to ``out/report.json``). ``progress=False`` also silences the
    library's own bars inside the stages (``TQDM_DISABLE=1`` for the duration of the call). ``workers > 1`` runs
    the stages in that many processes (each stage is a pure function of its config, so the results are those of
    one process; the timing stage's wall times then share the machine with another stage); ``None``:
    :func:`default_workers`."""
    workers = check_workers(workers)
    if progress:
        return _reproduce(mode, only, out, log, progress, workers)
    with _quiet_library():
        return _reproduce(mode, only, out, log, progress, workers)


@contextlib.contextmanager
def _quiet_library():
    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old


def _reproduce(mode: str, only: str | None, out, log: Callable[[str], None], progress: bool, workers: int) -> dict:
    ids = parse_only(only)
    stages = stages_for(ids, mode)  # every stage's config checked before anything is written
    out = check_out_dir(out)
    with compilation_cache_in(out):
        return _reproduce_in(ids, stages, out, mode, log, progress, workers)


#: Stages that share compiled programs, run one after the other in one process (the training stage's variants are
#: the generalization stage's; analysis.m_sharpness.shared_problem).
TOGETHER = (("training", "generalization"),)
#: The order in which stage processes take their stages: the longest first (the quick run's stage table in
#: docs/reproduction.md), so that two processes finish close together.
LONGEST_FIRST = (
    "escape",
    "fidelity",
    "eta_map",
    "training",
    "timing",
    "train_sde",
    "weak_order",
    "sgn",
    "drift",
    "eta_rho",
    "variance_term",
    "grad_norm",
    "symbolic",
)


def stage_groups(stages: Sequence[Stage]) -> list[list[Stage]]:
    """``stages`` in the groups that one process runs in order (:data:`TOGETHER`), longest first
    (:data:`LONGEST_FIRST`)."""
    by_name = {st.name: st for st in stages}
    groups: list[list[Stage]] = []
    placed: set[str] = set()
    for name in sorted(by_name, key=lambda n: LONGEST_FIRST.index(n) if n in LONGEST_FIRST else len(LONGEST_FIRST)):
        if name in placed:
            continue
        together = next((t for t in TOGETHER if name in t), (name,))
        group = [by_name[n] for n in together if n in by_name]
        placed.update(st.name for st in group)
        groups.append(group)
    return groups


def default_workers() -> int:
    """Stage processes by default: 2 on a CPU with two or more cores, else 1 (an accelerator runs one stage at a
    time)."""
    import jax

    return min(2, os.cpu_count() or 1) if jax.default_backend() == "cpu" else 1


def check_workers(workers: int | None) -> int:
    """``workers`` if it is an integer >= 1 (``None``: :func:`default_workers`); a clear ValueError otherwise."""
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1 (the number of stage processes), got {workers!r}")
    return workers


def _stage_row(st: Stage, res, cpu_s: float | None, compiles: tuple[int, float, int]) -> dict:
    n, seconds, hits = compiles
    return {
        "stage": st.name,
        "cached": res.cached,
        "wall_s": round(res.wall_s, 2),
        "cpu_s": None if res.cached else cpu_s,
        "path": str(res.path),
        "compiles": n - hits,
        "compile_cache_hits": hits,
        "compile_s": round(seconds, 2),
    }


def _run_counted(st: Stage, out: Path, log: Callable[[str], None]) -> tuple:
    """``(result, row)`` of one stage in this process; ``(None, None)`` when the symbolic stage lacks sympy."""
    counts = compile_counter()
    c, n0, s0, h0 = _cpu(), counts.count, counts.seconds, counts.cache_hits
    try:
        res = run_stage(st, out, log=log)
    except ImportError as e:
        if st.name != "symbolic":
            raise
        log(f"note: symbolic stage skipped ({e})")
        return None, None
    cpu = round(_cpu() - c, 2)
    return res, _stage_row(st, res, cpu, (counts.count - n0, counts.seconds - s0, counts.cache_hits - h0))


def _worker_init(out: str, device: str | None, argv: list[str]) -> None:
    """Set up a stage process: Ctrl-C is the parent's to handle (it ends the stage processes), the process ends
    with its parent (Linux), the records name the parent's command, one progress bar (the parent's)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if device != "cpu":  # an accelerator shared by the stage processes: no process takes most of its memory
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    with contextlib.suppress(OSError, AttributeError):  # PR_SET_PDEATHSIG: Linux only
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    sys.orig_argv = argv  # the records' provenance names the command that was run, not the stage process's
    os.environ["TQDM_DISABLE"] = "1"  # the library's own bars would interleave with the parent's
    if device is not None:
        set_device(device)
    enable_compilation_cache(out)


def _worker_run(group: list[Stage], out: str) -> tuple[list[dict | None], list[str]]:
    """Run ``group`` in a stage process: its rows (``None`` for a skipped stage) and log lines. Results go to the
    stage cache."""
    lines: list[str] = []
    return [_run_counted(st, Path(out), lines.append)[1] for st in group], lines


def _run_stages(stages, out: Path, log, progress: bool, workers: int) -> tuple[dict, dict, list[dict]]:
    """Every stage's result and row: in this process (``workers == 1``), or in ``workers`` processes that write the
    stage cache, which this process then reads. A stage's error, or Ctrl-C, ends every stage process (the results
    already written stay for a rerun)."""
    results, arrays, rows = {}, {}, {}
    bar = tqdm(total=len(stages), desc="stages", unit="stage", disable=not progress)
    say = (lambda m: tqdm.write(m)) if progress else log
    if workers == 1:
        for st in stages:
            bar.set_postfix_str(st.name)
            res, rows[st.name] = _run_counted(st, out, say)
            if res is not None:
                results[st.name], arrays[st.name] = res.data, res.arrays
            bar.update()
    else:
        import jax

        device = "cpu" if jax.default_backend() == "cpu" else None  # the stage processes run where this one does
        context = multiprocessing.get_context("spawn")  # never fork a process that has started JAX
        done: queue.Queue = queue.Queue()
        groups = stage_groups(stages)
        init = (str(out), device, list(sys.orig_argv))
        # leaving this block (all done, a stage's error, Ctrl-C) terminates the stage processes
        with context.Pool(min(workers, len(groups)), initializer=_worker_init, initargs=init) as pool:
            for group in groups:
                pool.apply_async(
                    _worker_run,
                    (group, str(out)),
                    callback=lambda r, group=group: done.put((group, r, None)),
                    error_callback=lambda e, group=group: done.put((group, None, e)),
                )
            for _ in groups:
                group, result, error = done.get()
                if error is not None:
                    raise error
                group_rows, lines = result
                for line in lines:
                    say(line)
                for st, row in zip(group, group_rows, strict=True):
                    rows[st.name] = row
                    bar.set_postfix_str(st.name)
                    bar.update()
        for st in stages:
            if rows[st.name] is None:
                continue
            res = run_stage(st, out, log=say)  # written by a stage process: read back from the cache
            results[st.name], arrays[st.name] = res.data, res.arrays
    bar.close()
    return results, arrays, [rows[st.name] for st in stages if rows[st.name] is not None]


def _reproduce_in(
    ids, stages: list[Stage], out: Path, mode: str, log: Callable[[str], None], progress: bool, workers: int = 1
) -> dict:
    figures, checks = registry()
    t0, c0 = time.perf_counter(), _cpu()
    results, arrays, stage_rows = _run_stages(stages, out, log, progress, workers)
    check_rows, fig_rows = [], []
    for i in ids:
        if i in checks:
            try:
                r = checks[i].evaluate(results)
                check_rows.append(r.to_dict())
                log(r.format())
            except Exception as e:  # a broken check must not hide the others
                check_rows.append({"id": i, "claim": checks[i].CLAIM, "status": "ERROR", "error": repr(e), "rows": []})
                log(f"[ERROR] {i}: {e!r}\n{traceback.format_exc()}")
    fig_dir = out / "figures"
    for i in tqdm([i for i in ids if i in figures], desc="figures", disable=not progress):
        try:
            paths = figures[i].render(results, arrays, fig_dir)
            fig_rows.append({"id": i, "title": figures[i].TITLE, "files": [str(p.relative_to(out)) for p in paths]})
        except Exception as e:
            fig_rows.append({"id": i, "title": figures[i].TITLE, "error": repr(e), "files": []})
            log(f"[ERROR] figure {i}: {e!r}\n{traceback.format_exc()}")
    report = {
        "mode": mode,
        "only": ids,
        "out": str(out),
        "stages": stage_rows,
        "checks": check_rows,
        "figures": fig_rows,
        "wall_s": round(time.perf_counter() - t0, 2),
        "cpu_s": round(_cpu() - c0, 2),
        "workers": workers,
        "git_revision": git_revision(),
        "provenance": provenance(),
    }
    sym = results.get("symbolic")
    report["symbolic"] = (
        {"available": True, "markdown": sym["markdown"]}
        if sym
        else {"available": False, "note": "symbolic stage not run"}
    )
    write_report(out, report)
    return report


def _atomic_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())  # a unique temporary name: concurrent writers never collide


def write_report(out: Path, report: dict) -> Path:
    lines = [
        f"# sde-sam reproduce ({report['mode']})",
        "",
        f"git revision `{report['git_revision']}`, device `{report['provenance']['device']}`, "
        f"wall time {report['wall_s']:.0f} s (CPU time {report['cpu_s']:.0f} s), "
        f"jax {report['provenance']['versions']['jax']}.",
        "",
        "## Paper checks",
        "",
        "| id | claim | status |",
        "|---|---|---|",
    ]
    for c in report["checks"]:
        lines.append(f"| {c['id']} | {c['claim']} | **{c['status']}** |")
    for c in report["checks"]:
        lines += ["", f"### {c['id']}: {c['claim']} — {c['status']}", ""]
        if c.get("error"):
            lines.append(f"error: `{c['error']}`")
            continue
        lines += ["| what | measured | expected | tolerance | status |", "|---|---|---|---|---|"]
        for r in c["rows"]:
            lines.append(f"| {r['what']} | {r['measured']} | {r['expected']} | {r['tolerance']} | {r['status']} |")
        if c.get("note"):
            lines += ["", c["note"]]
    lines += ["", "## Figures", ""]
    for f in report["figures"]:
        lines.append(f"### {f['id']}: {f['title']}")
        lines.append("")
        if f.get("error"):
            lines.append(f"not rendered: `{f['error']}`")
        else:
            png = next(p for p in f["files"] if p.endswith(".png"))
            pdf = next(p for p in f["files"] if p.endswith(".pdf"))
            lines.append(f"![{f['id']}]({png})  ([PDF]({pdf}))")
        lines.append("")
    lines += [
        "## Stages",
        "",
        "| stage | cached | wall s | CPU s | programs compiled | read from the compilation cache | compile s "
        "| result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in report["stages"]:
        lines.append(
            f"| {s['stage']} | {s['cached']} | {s['wall_s']} | {s['cpu_s']} | {s.get('compiles', '')} | "
            f"{s.get('compile_cache_hits', '')} | {s.get('compile_s', '')} | `{Path(s['path']).name}` |"
        )
    lines += ["", "## Symbolic drifts (sympy, DESIGN §5)", ""]
    sym = report["symbolic"]
    lines.append(sym["markdown"] if sym.get("available") else f"_{sym['note']}_")
    md = out / "report.md"
    _atomic_text(md, "\n".join(lines) + "\n")
    slim = dict(report)
    slim["symbolic"] = {k: v for k, v in sym.items() if k != "markdown"}
    _atomic_text(out / "report.json", json.dumps(to_jsonable(slim), indent=1))
    return md


def summary_table(report: dict) -> str:
    lines = [f"{'item':<6}{'status':<13}description", "-" * 72]
    for c in report["checks"]:
        lines.append(f"{c['id']:<6}{c['status']:<13}{c['claim'][:53]}")
    for f in report["figures"]:
        lines.append(f"{f['id']:<6}{'ERROR' if f.get('error') else 'done':<13}{f['title'][:53]}")
    n_pass = sum(c["status"] == "PASS" for c in report["checks"])
    n_open = sum(c["status"] == "INCONCLUSIVE" for c in report["checks"])
    lines.append("-" * 72)
    lines.append(
        f"{n_pass}/{len(report['checks'])} checks PASS ({n_open} INCONCLUSIVE), "
        f"{len(report['figures'])} figures; "
        f"{report['wall_s']:.0f} s wall, {report['cpu_s']:.0f} s CPU"
    )
    lines.append(f"report: {Path(report['out']) / 'report.md'}")
    return "\n".join(lines)
