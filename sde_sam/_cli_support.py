"""What every command line of the package shares: argument types, output checks and one exit path.

A user error (bad value, unwritable output) ends in one line on stderr and exit status 2, never a traceback;
Ctrl-C ends in exit status 130 with the finished work kept (results are written atomically as they finish).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every option's default (options without help text get one that names it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            default is not None
            and default is not argparse.SUPPRESS
            and default is not False
            and "%(default)" not in text
        ):
            text += " (default: %(default)s)"
        return text


def json_object(option: str) -> Callable[[str], dict]:
    """An argparse type: a JSON object, else an error that names ``option``."""

    def parse(text: str) -> dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise argparse.ArgumentTypeError(f"{option} must be a JSON object, e.g. '{{\"n\": 32}}' ({err})") from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"{option} must be a JSON object, got {text!r}")
        return value

    parse.__name__ = "JSON object"
    return parse


def levels(text: str) -> tuple[float, ...]:
    """``--quantiles``: comma-separated levels in (0, 1)."""
    try:
        values = tuple(float(q) for q in text.split(",") if q.strip())
    except ValueError:
        values = (-1.0,)
    if not all(0.0 < q < 1.0 for q in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated levels in (0, 1), e.g. 0.1,0.5,0.9; got {text!r}")
    return values


def seeds(text: str) -> tuple[int, ...]:
    """``--seeds``: a count (``4`` is seeds 0..3) or a comma-separated list (``0,1,7``)."""
    try:
        if "," not in text:
            count = int(text)
            if count < 1:
                raise ValueError
            return tuple(range(count))
        values = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive count (4 = seeds 0..3) or a comma-separated list of seeds (0,1,7), got {text!r}"
        ) from None
    if not values or len(set(values)) != len(values) or min(values) < 0:
        raise argparse.ArgumentTypeError(f"seeds must be distinct non-negative integers, got {text!r}")
    return values


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def check_output(path: str | os.PathLike | None, name: str = "--out") -> None:
    """Make sure results can be written at ``path`` (its folder exists or can be made, and is writable),
    before any computation; raise ``ValueError`` naming ``name`` otherwise."""
    if path is None:
        return
    target = Path(path)
    if target.exists() and target.is_dir():
        raise ValueError(f"`{name}` {str(path)!r} is a directory; give a file path prefix (OUT.json, OUT.npz)")
    for folder in target.parents:
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"`{name}` {str(path)!r} cannot be written: {str(folder)!r} is a file, not a folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".probe"):
            pass
    except OSError as err:
        raise ValueError(f"`{name}` {str(path)!r} cannot be written: {err.strerror or err}") from None


def _interrupted(prog: str) -> None:
    print(f"\n{prog}: interrupted; finished results are kept and a rerun resumes from them", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def _watch_interrupts(prog: str, grace_s: float = 2.0) -> None:
    """Make Ctrl-C prompt even while the main thread waits inside a compiled computation.

    Python runs its SIGINT handler only when the main thread returns to the interpreter, which a long XLA call
    does not do. The signal is also written to a wakeup fd by Python's C-level handler; a daemon thread waits on it
    and, if the main thread has not left within ``grace_s``, ends the process itself."""
    if threading.current_thread() is not threading.main_thread():
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except ValueError:  # not the main thread of the main interpreter
        return

    def watch() -> None:
        while True:
            data = os.read(read_fd, 64)
            if signal.SIGINT in data:
                time.sleep(grace_s)  # let the main thread's KeyboardInterrupt path run first
                _interrupted(prog)

    threading.Thread(target=watch, name="sde-sam-interrupt", daemon=True).start()


def run(prog: str, func: Callable[[], int]) -> int:
    """Run a command: user errors as one line and status 2; Ctrl-C as status 130 without a traceback.

    On Ctrl-C the process leaves through :func:`os._exit` after flushing its streams, so the interpreter does not
    tear down while XLA's threads still run (which can crash it), and it does so within about 2 seconds even in the
    middle of a compiled computation; whatever finished was already written (atomically)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on, KeyboardInterrupt (below)
    _watch_interrupts(prog)
    try:
        return func()
    except (ValueError, TypeError, KeyError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _interrupted(prog)
        raise  # not reached: _interrupted leaves the process
