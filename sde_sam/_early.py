"""Ctrl-C from the command line's first line: the one piece of the package that runs before anything is imported.

``python -m sde_sam`` and the ``sde-sam`` script import the whole package (JAX with it) before the command's own
handling starts, which takes seconds. A Ctrl-C in that time would end Python with a traceback and the status of a
signal; :func:`interrupt_cleanly_if_cli`, called on the package's first line, ends it as the command does later:
one line on stderr and status 130. It imports nothing but the standard library and acts only when the process
is the command line (``sys.argv[0]`` is ``-m`` while ``python -m sde_sam`` locates the package, or the script is
named ``sde-sam``); a program that imports the package keeps its own Ctrl-C handling.
"""

from __future__ import annotations

import os
import signal
import sys


def is_cli(argv: list[str]) -> bool:
    """Whether ``argv`` is that of the command line (``python -m sde_sam`` or the ``sde-sam`` script)."""
    return bool(argv) and (argv[0] == "-m" or os.path.basename(argv[0]) in ("sde-sam", "sde-sam.exe"))


def _leave(signum, frame) -> None:
    print("\nsde-sam: interrupted while starting; nothing was computed", file=sys.stderr)
    sys.stderr.flush()
    os._exit(130)


def interrupt_cleanly_if_cli() -> None:
    """On the command line, until the command's own handling takes over: Ctrl-C leaves with one line and 130."""
    if is_cli(sys.argv) and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _leave)


interrupt_cleanly_if_cli()  # on import: the package imports this module first
