"""Documented numbers: the tables of README.md and docs/ rendered from committed recordings.

A generated block in a page reads::

    <!-- generated: RENDERER RECORDING [KEY=VALUE ...] -->
    | ... the table ... |
    <!-- /generated -->

``RENDERER`` names a function of :data:`RENDERERS` (recording dict -> markdown), ``RECORDING`` a JSON file under
``analysis/recordings/`` (path from the repository root); the options are passed as strings.
Prose numbers sit in sections marked ``<!-- numbers: RECORDING [RECORDING ...] -->``, where each decimal of the
section must be a value of the recordings at the precision shown (:func:`found`); a measured value (``x ± s``)
anywhere else is an error. ``python -m analysis.documented`` rewrites every block from its recording and lists what
is still wrong; ``--check`` only lists it (exit 1 if anything; ``tests/test_documented.py`` runs the same check).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from sde_sam._io import from_jsonable

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = ROOT / "analysis" / "recordings"
PAGES = ("README.md", "docs/*.md")
BLOCK = re.compile(r"<!-- generated: (?P<spec>[^>]*?) -->\n(?P<body>.*?)<!-- /generated -->", re.S)
NUMBERS = re.compile(r"<!-- numbers: (?P<spec>[^>]*?) -->")


def _g(x: float, digits: int) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def _pm(d: dict, fmt: str = ".4g", se_fmt: str = ".2g") -> str:
    return f"{d['mean']:{fmt}} ± {d['stderr']:{se_fmt}}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


OBSERVABLE_NAMES = {
    "loss": "loss",
    "accuracy": "train accuracy",
    "test_loss": "test loss",
    "test_accuracy": "test accuracy",
    "grad_norm_sq": "‖g‖²",
    "trace_sigma": "`tr Sigma`",
    "lambda_max": "`lambda_max`",
    "trace_hessian": "`tr H`",
    "batch_grad_norm": "E‖g_m‖",
    "distance": "distance from x0",
    "effective_sample_size": "effective sample size",
}


def training_vs_sde(rec: dict, reading: str = "comparison") -> str:
    """``analysis.training_vs_sde``'s summary: final training and SDE values (mean ± 95 % band), relative gap at the
    end and its maximum over the recorded times, max |z|; one row per variant and observable."""
    rows = []
    for label, v in rec["variants"].items():
        for name, c in v[reading].items():
            rows.append(
                [
                    label,
                    OBSERVABLE_NAMES.get(name, name),
                    f"{c['train_mean'][-1]:.4g} ± {c['train_band95'][-1]:.2g}",
                    f"{c['sde_mean'][-1]:.4g} ± {c['sde_band95'][-1]:.2g}",
                    f"{c['final_relative_gap']:.3f}",
                    f"{c['max_relative_gap']:.3f}",
                    f"{c['max_abs_z']:.2f}",
                ]
            )
    return _table(["variant", "observable", "training", "SDE", "rel. gap (end)", "rel. gap (max)", "max abs z"], rows)


def training_vs_sde_momentum(rec: dict, observables: str = "loss,trace_sigma,lambda_max,trace_hessian,distance") -> str:
    """The momentum preset: the SDE read at the plain and at the warm-up-corrected time."""
    rows = []
    for label, v in rec["variants"].items():
        for name in observables.split(","):
            if name not in v["comparison"]:
                continue
            c, w = v["comparison"][name], v["comparison_warmup"][name]
            rows.append(
                [
                    label,
                    OBSERVABLE_NAMES.get(name, name),
                    f"{c['train_mean'][-1]:.4g} ± {c['train_band95'][-1]:.2g}",
                    f"{c['sde_mean'][-1]:.4g} ± {c['sde_band95'][-1]:.2g}",
                    f"{c['final_relative_gap']:.3f} / {c['max_relative_gap']:.3f}, {c['max_abs_z']:.1f}",
                    f"{w['sde_mean'][-1]:.4g} ± {w['sde_band95'][-1]:.2g}",
                    f"{w['final_relative_gap']:.3f} / {w['max_relative_gap']:.3f}, {w['max_abs_z']:.1f}",
                ]
            )
    return _table(
        [
            "variant",
            "observable",
            "training",
            "SDE, plain time",
            "gap end / max, max abs z",
            "SDE, corrected time",
            "gap end / max, max abs z",
        ],
        rows,
    )


def noise_along(rec: dict, variant: str = "SGD") -> str:
    """``analysis.training_vs_sde``'s noise along one variant's run (seed 0): predicted ``c(B) tr Sigma`` against
    the covariance of sampled mini-batch gradients, top eigenvalues, cosine and top-k overlap (in brackets: two
    independent estimates of the measured noise)."""
    v = rec["variants"][variant]
    n = v["noise"]
    rows = []
    for i, step in enumerate(v["steps"]):
        rows.append(
            [
                str(step),
                f"{n['pred_trace'][i]:.4f}",
                f"{n['meas_trace'][i]:.4f} ± {n['meas_trace_se'][i]:.4f}",
                f"{n['trace_ratio_measured_over_predicted'][i]:.3f}",
                f"{n['pred_top'][i][0]:.4f}",
                f"{n['meas_top'][i][0]:.4f}",
                f"{n['cosine'][i]:.3f} ({n['cosine_ref'][i]:.3f})",
                f"{n['overlap'][i]:.3f} ({n['overlap_ref'][i]:.3f})",
            ]
        )
    return _table(
        [
            "step",
            "c(B) tr Sigma",
            "tr C (± se)",
            "ratio",
            "top eig predicted",
            "top eig measured",
            "cosine (ref)",
            "overlap (ref)",
        ],
        rows,
    )


def m_sharpness(rec: dict, problem: str = "digits_mlp", rows: str = "") -> str:
    """``analysis.m_sharpness``'s table: final ``tr Sigma`` (mean ± s.e. over seeds), training loss, test accuracy
    and time per step of every variant (``rows``: a comma list of labels, default all but the RW study's)."""
    table = rec["problems"][problem]["trace_sigma"]
    labels = rows.split(",") if rows else [k for k in table if "[" not in k]
    out = []
    for label in labels:
        r = table[label]
        t = r.get("time_per_step_s")
        out.append(
            [
                label,
                _pm(r["trace_sigma_final"]),
                f"{r['loss_final']['mean']:.4f}",
                f"{r['test_accuracy_final']['mean']:.4f}",
                "-" if t is None else f"{1e3 * t:.2f}",
            ]
        )
    return _table(["variant", "tr Sigma", "loss", "test acc", "ms/step"], out)


def rw_study(rec: dict, problem: str = "digits_mlp") -> str:
    """The RW-SAM study of ``analysis.m_sharpness`` (every row, the study's settings last): final ``tr Sigma``, test
    accuracy and loss (mean ± s.e.), effective sample size over B at the start and end, lambda."""
    out = []
    for label, r in rec["problems"][problem]["trace_sigma"].items():
        s = r.get("rw_setting")
        ess = f"{r['ess_fraction_final']['mean']:.3f}"
        if s is not None:
            ess = f"{s['ess_at_init']:.2f} → {r['ess_fraction_final']['mean']:.3f}"
        out.append(
            [
                label,
                _pm(r["trace_sigma_final"], ".4g"),
                _pm(r["test_accuracy_final"], ".3f", ".3f"),
                _pm(r["test_loss_final"], ".3f", ".3f"),
                ess,
                "-" if s is None else f"{s['lambda']:.2f}",
            ]
        )
    return _table(["variant", "tr Sigma (final)", "test accuracy", "test loss", "ESS/B at init → final", "lambda"], out)


def escape(rec: dict, problem: str = "digits_mlp") -> str:
    """``analysis.m_sharpness``'s escape from a sharp minimum: ``lambda_max`` at the end (± s.e.), its relative
    drop, ``tr Sigma`` start and end, final loss."""
    out = []
    for label, r in rec["problems"][problem]["escape"]["rows"].items():
        lm, ts, loss = r["lambda_max_mean"], r["trace_sigma_mean"], r["loss_final"]
        out.append(
            [
                label,
                f"{lm[-1]:.2f} ± {r['lambda_max_stderr'][-1]:.2f}",
                f"{r['lambda_max_drop']:.3f}",
                f"{ts[0]:.2f} → {ts[-1]:.2f}",
                f"{loss['mean'] if isinstance(loss, dict) else loss:.3f}",
            ]
        )
    return _table(["variant", "lambda_max end (± se)", "relative drop", "tr Sigma start → end", "loss end"], out)


def generalization(rec: dict, model: str = "digits_mlp_64") -> str:
    """``analysis.generalization``: final test accuracy (mean ± s.e.) / test loss per label noise and variant."""
    rows_by_noise = rec["models"][model]["rows"]
    labels = list(next(iter(rows_by_noise.values())))
    out = []
    for noise, row in rows_by_noise.items():
        out.append(
            [f"{float(noise):g}"]
            + [
                f"{row[lab]['test_accuracy_final']['mean']:.3f} ± {row[lab]['test_accuracy_final']['stderr']:.3f}"
                f" / {row[lab]['test_loss_final']['mean']:.3f}"
                for lab in labels
            ]
        )
    return _table(["label noise", *labels], out)


def paper_check(rec: dict, check: str, stage: str) -> str:
    """The rows of a paper check (``paper_checks.<check>.evaluate``) on a recording of its stage ``stage``: what is
    compared, the measured value, the expected one, the criterion and the verdict."""
    import importlib

    result = importlib.import_module(f"paper_checks.{check}").evaluate({stage: rec})
    return _table(
        ["what", "measured", "expected", "criterion", "verdict"],
        [[r.what, r.measured, r.expected, r.tolerance, r.status] for r in result.rows],
    )


def escape_map(rec: dict) -> str:
    """C5's map (``analysis.escape_map``): per point (eta, rho lambda_sharp) and m, the time-averaged fraction past
    the barrier (mean ± s.e.) of the discrete runs and of the map's SDE model."""
    mp = rec["map"]
    ms = sorted({r["m"] for p in mp["points"] for r in p["rows"].values()})
    rows = []
    for p in mp["points"]:
        by_m = {r["m"]: r for r in p["rows"].values()}
        cells = []
        for m in ms:
            r = by_m.get(m)
            cells.append(
                "-"
                if r is None
                else " / ".join(
                    _pm({"mean": r[s]["time_avg"], "stderr": r[s]["time_avg_stderr"]}, ".3g")
                    for s in ("discrete", "model")
                )
            )
        rows.append([f"{p['eta']:g}", f"{p['rho_lambda']:g}", *cells])
    return _table(["eta", "rho·lambda", *(f"m = {m}" for m in ms)], rows)


def weak_order_slopes(rec: dict, part: str = "linreg_exact") -> str:
    """``analysis.weak_order``'s slope fits of one study: variant, order, diffusion, learning rates, slope with its
    95 % interval, constant ``C`` of ``err ≈ C eta^slope`` and
    the error at the smallest eta (exact, or Monte Carlo ± s.e.)."""
    out = []
    for key, r in rec[part].items():
        label = key.split("|")[0]
        order = str(r.get("order", 1))
        etas = r["etas"]
        shown = ", ".join(f"{e:g}" for e in etas) if len(etas) <= 4 else f"{max(etas):g} … {min(etas):g}"
        i = etas.index(min(etas))
        err = f"{r['errors'][i]:.2e}" + (" (exact)" if r.get("method") == "exact" else f" ± {r['stderrs'][i]:.1e}")
        slope = f"{r['slope']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]"
        out.append([label, order, r.get("diffusion", "-"), shown, slope, f"{r['constant']:.3g}", err])
    header = ["variant", "order", "diffusion", "etas", "slope [95% CI]", "C (err ≈ C eta^slope)", "err at smallest eta"]
    return _table(header, out)


def bench_output(rec: dict, skip: str = "") -> str:
    """What a benchmark printed (``benchmarks/record.py``) as a text block, without its last line (the JSON of
    ratios, which the recording keeps as ``ratios``) and the lines starting with one of the comma-separated
    prefixes ``skip``."""
    prefixes = tuple(p for p in skip.split(",") if p)
    lines = [ln for ln in rec["output"].splitlines() if ln.strip() and not (prefixes and ln.startswith(prefixes))]
    if lines and lines[-1].startswith("{"):
        lines = lines[:-1]
    return "```text\n" + "\n".join(lines) + "\n```\n"


def ratios(rec: dict, keys: str = "", title: str = "ratio") -> str:
    """The ratios a benchmark printed as its last line (``benchmarks/record.py``): the comma-separated ``keys``
    (default all), one row each; ``title`` names the first column (underscores read as spaces)."""
    r = rec["ratios"]
    names = keys.split(",") if keys else list(r)
    return _table([title.replace("_", " "), "value"], [[f"`{k}`", f"{r[k]:.3g}"] for k in names])


def text(rec: dict, path: str) -> str:
    """A sentence a study wrote into its recording (``path``: dot-separated keys), quoted."""
    value = rec
    for key in path.split("."):
        value = value[key]
    return f"> {value}\n"


def report_checks(rec: dict) -> str:
    """A reproduction's ``report.json``: each paper check's status and its rows by status, the claim it tests."""
    out = []
    for c in rec["checks"]:
        counts: dict[str, int] = {}
        for r in c["rows"]:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        out.append([c["id"], c["status"], ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), c["claim"]])
    return _table(["id", "status", "rows", "claim"], out)


def report_stages(rec: dict, before: str | None = None) -> str:
    """A reproduction's ``report.json``: per stage, wall and CPU seconds, programs compiled, programs read from the
    compilation cache and the compile seconds; then the pipeline's and (where recorded) the whole command's
    seconds, and each clone's where several were timed. ``before=PATH``: an earlier report's wall, CPU and compile
    seconds beside them."""

    def row(s: dict) -> list[str]:
        return [
            "cached" if s["cached"] else f"{s['wall_s']:.1f}",
            f"{s.get('cpu_s') or 0:.1f}",
            str(s.get("compiles", "-")),
            str(s.get("compile_cache_hits", "-")),
            f"{s.get('compile_s') or 0:.1f}",
        ]

    def totals(r: dict) -> list[list[str]]:
        out = [["pipeline", f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", "", "", ""]]
        if "fresh_clone" in r:
            f = r["fresh_clone"]
            out.append(["command in all", f"{f['wall_s']:.1f}", f"{f['user_s'] + f['system_s']:.1f}", "", "", ""])
            for i, run in enumerate(f.get("runs", ()), 1):  # every clone timed, where there were several
                cpu = run["user_s"] + run["system_s"]
                out.append([f"command in all, clone {i}", f"{run['wall_s']:.1f}", f"{cpu:.1f}", "", "", ""])
        return out

    head = ["stage", "wall s", "CPU s", "compiled", "from cache", "compile s"]
    out = [[s["stage"], *row(s)] for s in rec["stages"]] + totals(rec)
    if before is None:
        return _table(head, out)
    old = load(before)
    was = {s["stage"]: row(s) for s in old["stages"]} | {t[0]: t[1:] for t in totals(old)}
    keep = [0, 1, 4]  # wall, CPU, compile seconds
    head = [head[0], *(f"{head[1 + k]} before" for k in keep), *head[1:]]
    return _table(head, [[r[0], *(was.get(r[0], [""] * 5)[k] for k in keep), *r[1:]] for r in out])


def _short(verdict: dict) -> str:
    """A verdict in a table cell: its kind, with the rung that tracks or is nearest."""
    kind, rung = verdict["kind"], verdict.get("rung")
    if kind == "tracked":
        return f"tracked by {rung}"
    return kind if not rung else f"{kind} (nearest {rung})"


def fidelity_verdicts(rec: dict, part: str = "escape") -> str:
    """``analysis.fidelity``: per variant the verdict on each observable (``ss.validate``'s equivalence tests)."""
    res = rec[part]
    names = list(next(iter(res["variants"].values()))["verdicts"])
    rows = [[label] + [_short(v["verdicts"][o]) for o in names] for label, v in res["variants"].items()]
    return _table(["variant"] + [OBSERVABLE_NAMES.get(o, f"`{o}`") for o in names], rows)


def fidelity_budget(rec: dict, part: str = "escape") -> str:
    """``analysis.fidelity``: per variant the error budget of the key observable, each model's largest gap over the
    recorded times ± s.e. [its agreement] (rungs at their finest dt, the gap at dt = eta in brackets; SVAG at its
    largest l)."""
    res = rec[part]
    models: list[str] = []
    for v in res["variants"].values():
        models += [r["model"] for r in v["budget"] if r["model"] not in models]
    rows = []
    for label, v in res["variants"].items():
        by = {r["model"]: r for r in v["budget"]}
        cells = []
        for m in models:
            r = by.get(m)
            if r is None:
                cells.append("–")
                continue
            coarse = "" if r["gap_at_h"] is None or r["refine"] == 1 else f" ({r['gap_at_h']:+.3f})"
            cells.append(f"{r['gap']:+.3f} ± {r['stderr']:.3f}{coarse} [{r['agreement']}]")
        rows.append([label, *cells])
    return _table(["variant", *models], rows)


RENDERERS: dict[str, Callable[..., str]] = {
    f.__name__: f
    for f in (
        training_vs_sde,
        training_vs_sde_momentum,
        fidelity_verdicts,
        fidelity_budget,
        noise_along,
        m_sharpness,
        rw_study,
        escape,
        escape_map,
        generalization,
        paper_check,
        report_checks,
        report_stages,
        weak_order_slopes,
        bench_output,
        ratios,
        text,
    )
}


def pages() -> list[Path]:
    return sorted({p for pattern in PAGES for p in ROOT.glob(pattern)})


def load(name: str) -> dict:
    path = ROOT / name
    if not path.is_file() or RECORDINGS not in path.resolve().parents:
        raise FileNotFoundError(f"recording {name!r} is not a file under {RECORDINGS.relative_to(ROOT)}/")
    return from_jsonable(json.loads(path.read_text()))


def render(spec: str) -> str:
    """The body of the block ``<!-- generated: spec -->``."""
    renderer, recording, *opts = spec.split()
    if renderer not in RENDERERS:
        raise ValueError(f"unknown renderer {renderer!r}; valid: {', '.join(RENDERERS)}")
    kwargs = dict(o.split("=", 1) for o in opts)
    return RENDERERS[renderer](load(recording), **kwargs)


def blocks(text: str) -> Iterator[re.Match]:
    return BLOCK.finditer(text)


def regenerate(text: str) -> str:
    """``text`` with every block rendered from its recording (a block whose recording, or a key of it, is missing is
    left as it is; :func:`problems` reports it)."""

    def one(m: re.Match) -> str:
        try:
            return f"<!-- generated: {m['spec']} -->\n{render(m['spec'])}<!-- /generated -->"
        except (FileNotFoundError, KeyError):
            return m[0]

    return BLOCK.sub(one, text)


def _numbers_in(text: str) -> list[float]:
    return [float(s) for s in re.findall(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?", text)]


@functools.cache
def _pool(recordings: tuple[str, ...]) -> tuple[float, ...]:
    return tuple(pool(list(recordings)))


def pool(recordings: list[str]) -> list[float]:
    """Every number a recording holds (JSON leaves, recursively; for a ``.md`` recording, every number of its text)."""
    out: list[float] = []

    def walk(x):
        if isinstance(x, bool):
            return
        if isinstance(x, int | float):
            out.append(float(x))
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v)
                with contextlib.suppress(ValueError):  # keys such as label noise levels "0.2"
                    out.append(float(k))
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, str):  # a check's measured value is a sentence
            out.extend(_numbers_in(x))

    for name in recordings:
        path = ROOT / name
        if path.suffix == ".md":
            out += _numbers_in(path.read_text())
        else:
            walk(load(name))
    return out


DECIMAL = re.compile(r"(?<![\w.§])([-\u2212]?)(\d+)\.(\d+)(\s?%)?(?![\w.])")
MEASURED = re.compile(r"\d\s?±\s?\d")  # a value with its error: 0.42 ± 0.01
FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)


def _blank(m: re.Match) -> str:
    return re.sub(r"[^\n]", " ", m[0])


def found(text: str, values: list[float]) -> list[str]:
    """The decimals of ``text`` that no value of ``values`` rounds to (at the precision shown; a number followed
    by ``%`` is read as a fraction; signs are ignored, so a gap may be shown as a difference either way)."""
    arr = sorted({abs(v) for v in values if math.isfinite(v)})
    import bisect

    missing = []
    for m in DECIMAL.finditer(text):
        k = len(m[3])
        x = float(f"{m[2]}.{m[3]}")
        if m[4]:
            x, k = x / 100, k + 2
        half = 0.5 * 10.0**-k * (1 + 1e-9)
        i = bisect.bisect_left(arr, x - half)
        if not (i < len(arr) and arr[i] <= x + half):
            missing.append(m[0].strip())
    return missing


def problems(text: str, values_of: Callable[[list[str]], list[float]] | None = None) -> list[str]:
    """What is wrong with one page's documented numbers: generated blocks that differ from their recordings,
    measured values (``±``) outside a generated block or a ``numbers`` section, and decimals of a ``numbers``
    section that its recordings do not hold. Code blocks are left out (the doc tests run them)."""
    out = []
    for m in blocks(text):
        try:
            body = render(m["spec"])
        except (FileNotFoundError, KeyError, ValueError, TypeError) as e:
            out.append(f"block '{m['spec']}': {type(e).__name__}: {e}")
            continue
        if body != m["body"]:
            old = m["body"].splitlines()
            new = body.splitlines()
            diff = next(
                (f"{a!r} -> {b!r}" for a, b in zip(old, new, strict=False) if a != b), f"{len(old)} -> {len(new)} lines"
            )
            out.append(f"block '{m['spec']}' differs from its recording: {diff}")
    values_of = values_of or (lambda names: list(_pool(tuple(names))))
    prose = BLOCK.sub(_blank, FENCE.sub(_blank, text))
    section: list[str] | None = None
    for line in prose.splitlines():
        if line.startswith("#"):
            section = None
            continue
        if mark := NUMBERS.search(line):
            section = names = mark["spec"].split()
            try:
                values_of(names)
            except FileNotFoundError as e:
                out.append(f"numbers section: {e}")
                section = None
            continue
        if section is None:
            if MEASURED.search(line):
                out.append(f"a measured value outside a generated block or numbers section: {line.strip()[:100]!r}")
            continue
        missing = found(line, values_of(section))
        if missing:
            out.append(f"numbers not in the section's recordings: {', '.join(missing)} in {line.strip()[:90]!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.documented", description=(__doc__ or "").partition("\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="list the blocks that differ from their recording")
    args = parser.parse_args(argv)
    bad = 0
    for page in pages():
        text = page.read_text()
        if not args.check:
            new = regenerate(text)
            if new != text:
                page.write_text(new)
                print(f"{page.relative_to(ROOT)}: rewritten from its recordings")
            text = new
        for problem in problems(text):
            bad += 1
            print(f"{page.relative_to(ROOT)}: {problem}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
