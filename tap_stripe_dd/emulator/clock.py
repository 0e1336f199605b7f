"""The emulator's clock: Stripe's `now`, which starts at `--now`, runs with real time and can
be moved forward (never back) by `POST /_emulator/clock` or `StripeEmulator.advance`."""

from __future__ import annotations

import threading
import time


class Clock:
    """`now()` = start + real seconds elapsed (unless `frozen`) + seconds advanced."""

    def __init__(self, start: float | None = None, frozen: bool = False) -> None:
        self.start = time.time() if start is None else float(start)
        self._began = time.monotonic()
        self._frozen = frozen
        self._advanced = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        running = 0.0 if self._frozen else time.monotonic() - self._began
        return self.start + running + self._advanced

    def advance(self, seconds: float) -> float:
        if not seconds >= 0:  # also rejects NaN
            raise ValueError("the clock only moves forward: seconds must not be negative")
        with self._lock:
            self._advanced += seconds
        return self.now()
