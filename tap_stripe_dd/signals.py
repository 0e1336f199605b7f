"""SIGINT and SIGTERM stop the tap and the loader at once (`docker stop`, `systemctl stop`,
Ctrl-C), rather than the SDK's "Gracefully shutting down..." that synced to the end and exited 0.

The handler raises `Stopped` in the main thread; the program removes what it wrote that nobody
will read, prints one line and exits 128 + the signal's number, as a shell reports it. A STATE
already sent stays valid: the tap's bookmarks only ever cover announced records, the loader's
only rows in the warehouse. Exiting with `os._exit` does not wait for worker threads, which may
be blocked on a pipe that nobody reads any more.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import NoReturn


class Stopped(BaseException):
    """A stop signal arrived. A BaseException, as KeyboardInterrupt: no `except Exception`
    between the handler and the program's top level swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum
        self.name = signal.Signals(signum).name


def raise_stopped(signum: int, frame: FrameType | None = None) -> None:
    """The handler: the first signal raises `Stopped`; later ones, while stopping, are ignored."""
    for each in (signal.SIGINT, signal.SIGTERM):
        signal.signal(each, ignore)
    raise Stopped(signum)


def ignore(signum: int, frame: FrameType | None = None) -> None:
    """A handler that does nothing, not SIG_IGN: a signal already pending (Meltano's SIGTERM
    right after Ctrl-C's SIGINT) would then raise "OSError: Signal 15 ignored due to race
    condition" in the middle of the cleanup."""


def stop_on_signals() -> None:
    for each in (signal.SIGINT, signal.SIGTERM):
        signal.signal(each, raise_stopped)


def exit_stopped(program: str, stopped: Stopped, what: str) -> NoReturn:
    """One line, then the exit a shell reports for the signal, without waiting for threads."""
    print(f"{program}: stopped by {stopped.name}: {what}", file=sys.stderr, flush=True)
    os._exit(stopped.exit_code)
