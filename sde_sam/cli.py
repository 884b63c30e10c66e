"""The ``sde-sam`` command line (also ``python -m sde_sam``)."""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    from ._demo import format_table, run_demo

    rows = run_demo(steps=args.steps, num_runs=args.runs, seed=args.seed)
    print(format_table(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sde-sam", description="SAM variants, their SDEs, estimators and checks.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train the digits MLP with every variant and print a table")
    demo.add_argument("--steps", type=int, default=200, help="training steps per variant (default 200)")
    demo.add_argument("--runs", type=int, default=2, help="independent runs per variant (default 2)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
