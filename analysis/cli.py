"""The reproduction commands of ``sde-sam``: ``reproduce``, ``check`` and ``figures`` (registered with the library's
command line through the ``sde_sam.commands`` entry point in ``pyproject.toml``).

``sde-sam reproduce --quick`` regenerates every figure and paper check of DESIGN §8 and writes ``OUT/report.md`` +
``OUT/report.json``; ``check`` and ``figures`` run a subset.
"""

from __future__ import annotations


def _run_reproduce(args, only: str | None) -> int:
    from analysis import reproduce as R

    R.set_device(args.device)
    mode = "full" if args.full else "quick"
    report = R.reproduce(mode, only=only, out=args.out, progress=not args.no_progress, workers=args.workers)
    print()
    print(R.summary_table(report))
    bad = [c for c in report["checks"] if c["status"] != "PASS"]
    errors = [f for f in report["figures"] if f.get("error")]
    return 1 if (args.strict and bad) or errors else 0


def _reproduce(args) -> int:
    return _run_reproduce(args, args.only)


def _subset(prefix: str, kind: str):
    def run(args) -> int:
        from analysis import reproduce as R

        figures, checks = R.registry()
        pool = figures if prefix == "F" else checks
        if args.only is None:
            only = ",".join(pool)
        else:
            items = [s.strip().upper() for s in args.only.split(",") if s.strip()]
            bad = [s for s in items if s not in pool]
            if bad or not items:
                raise ValueError(f"--only: unknown {kind} {', '.join(bad) or '(empty)'}; valid: {','.join(pool)}")
            only = ",".join(items)
        return _run_reproduce(args, only)

    return run


def _add_run_options(p, only_help: str) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small stages, a few minutes on 2 CPU cores (default)")
    mode.add_argument("--full", action="store_true", help="the full-size stages (hours on CPU; see README)")
    p.add_argument("--only", default=None, help=only_help)
    p.add_argument("--out", default="results", help="output folder (stage cache, figures, report; default results)")
    p.add_argument("--device", choices=("cpu", "gpu"), default=None, help="force the JAX platform")
    p.add_argument("--strict", action="store_true", help="exit status 1 when a check does not PASS")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="stage processes run side by side (default: 2 on a CPU with two or more cores, else 1; 1 runs every "
        "stage in this process)",
    )


def register(sub) -> None:
    """Add ``reproduce``, ``check`` and ``figures`` to the ``sde-sam`` subparsers ``sub``."""
    rep = sub.add_parser("reproduce", help="every figure and paper check of DESIGN §8, and the report")
    _add_run_options(rep, "comma-separated figures/checks, e.g. F1,C3 (default: all)")
    rep.set_defaults(func=_reproduce)
    chk = sub.add_parser("check", help="the paper checks only (C1, C2, ...)")
    _add_run_options(chk, "comma-separated checks, e.g. C1,C5 (default: all)")
    chk.set_defaults(func=_subset("C", "check"))
    fig = sub.add_parser("figures", help="the figures only (F1, F2, ...)")
    _add_run_options(fig, "comma-separated figures, e.g. F1,F3 (default: all)")
    fig.set_defaults(func=_subset("F", "figure"))
