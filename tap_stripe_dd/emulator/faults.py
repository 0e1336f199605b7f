"""What can go wrong on the wire: scripted and random faults, and Stripe's rate limits.

Fault spec (`--faults`, `set_faults`): comma-separated `KIND=PROBABILITY[@SECONDS]`, e.g.
`429=0.2@2,500=0.05,drop=0.01,slow=0.001@30`. SECONDS is the Retry-After of a 429/503 and
the delay of `slow`. Kinds: HTTP statuses 400 401 403 404 429 500 502 503; `drop` (close the
connection without a response), `truncate` (promise a longer body than is sent, then close),
`nonjson` (an HTML page with status 200), `slow` (answer only after SECONDS, default 30).
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass, replace

HTTP_KINDS = frozenset({"400", "401", "403", "404", "429", "500", "502", "503"})
WIRE_KINDS = frozenset({"drop", "truncate", "nonjson", "slow"})
KINDS = HTTP_KINDS | WIRE_KINDS
# Stripe's limits (requests per second): (overall, per endpoint).
RATE_LIMITS: dict[str, tuple[int, int | None]] = {"live": (100, 25), "test": (25, None)}


@dataclass(frozen=True)
class Fault:
    kind: str
    retry_after: int | None = None  # the Retry-After header, seconds
    should_retry: bool | None = None  # the Stripe-Should-Retry header; None leaves it out
    seconds: float = 30.0  # how long `slow` stalls

    @classmethod
    def make(
        cls,
        kind: str,
        retry_after: int | None = None,
        should_retry: bool | None = None,
        seconds: float | None = None,
    ) -> Fault:
        """A fault with Stripe's headers for its kind unless given: 429 says retry after 1 s."""
        if kind not in KINDS:
            raise ValueError(
                f"unknown fault kind {kind!r}; expected one of {', '.join(sorted(KINDS))}"
            )
        if kind == "429":
            retry_after = 1 if retry_after is None else retry_after
            should_retry = True if should_retry is None else should_retry
        fault = cls(kind, retry_after, should_retry)
        return fault if seconds is None else replace(fault, seconds=seconds)


def parse_spec(spec: str) -> list[tuple[float, Fault]]:
    """`429=0.2@2,drop=0.01` -> [(0.2, Fault('429', retry_after=2)), (0.01, Fault('drop'))]."""
    faults: list[tuple[float, Fault]] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        kind, equals, rest = item.partition("=")
        probability, at, seconds = rest.partition("@")
        try:
            chance = float(probability)
            delay = float(seconds) if at else None
        except ValueError:
            chance = delay = -1.0
        if not equals or not 0 <= chance <= 1 or (delay is not None and delay < 0):
            raise ValueError(f"bad fault {item!r}: expected KIND=PROBABILITY[@SECONDS]")
        if kind in ("429", "503") and delay is not None:
            faults.append((chance, Fault.make(kind, retry_after=round(delay))))
        else:
            faults.append((chance, Fault.make(kind, seconds=delay)))
    if sum(chance for chance, _ in faults) > 1:
        raise ValueError(f"fault probabilities in {spec!r} add up to more than 1")
    return faults


@dataclass
class Script:
    """Requests `first`..`last` (counted from when it was scripted) to `path` get `fault`."""

    path: str
    first: int
    last: int
    fault: Fault
    seen: int = 0


class Faults:
    """Decides each request's fault: a scripted one if due, else maybe a random one."""

    def __init__(self, seed: int, spec: str | None = None) -> None:
        self._rng = random.Random(f"faults:{seed}")
        self._random = parse_spec(spec or "")
        self._scripts: list[Script] = []
        self._lock = threading.Lock()

    def set_random(self, spec: str | None) -> None:
        faults = parse_spec(spec or "")
        with self._lock:
            self._random = faults

    def script(self, path: str, nth: int, fault: Fault, count: int) -> None:
        if nth < 1 or count < 1:
            raise ValueError("nth and count must be at least 1")
        with self._lock:
            self._scripts.append(Script(path, nth, nth + count - 1, fault))

    def next(self, path: str) -> Fault | None:
        with self._lock:
            due = None
            for script in self._scripts:
                if script.path == path:
                    script.seen += 1
                    if due is None and script.first <= script.seen <= script.last:
                        due = script.fault
            self._scripts = [s for s in self._scripts if s.seen < s.last]
            if due is not None or not self._random:
                return due
            roll = self._rng.random()
            for chance, fault in self._random:
                if roll < chance:
                    return fault
                roll -= chance
            return None


class RateLimiter:
    """Stripe's limits as a sliding one-second window, overall and per endpoint, counted per
    account (the platform is None) as Stripe counts them."""

    def __init__(self, mode: str) -> None:
        if mode not in (*RATE_LIMITS, "off"):
            raise ValueError(f"rate limit must be live, test or off, not {mode!r}")
        self._limits = RATE_LIMITS.get(mode)
        self._windows: dict[tuple[str | None, str], deque[float]] = {}
        self._lock = threading.Lock()

    def admit(self, endpoint: str, account: str | None = None) -> float | None:
        """None if the request may proceed, else how many seconds until it would."""
        if self._limits is None:
            return None
        overall, per_endpoint = self._limits
        buckets = [("", overall)] + ([(endpoint, per_endpoint)] if per_endpoint else [])
        with self._lock:
            now = time.monotonic()
            waits = []
            for name, limit in buckets:
                window = self._windows.setdefault((account, name), deque())
                while window and window[0] <= now - 1:
                    window.popleft()
                if len(window) >= limit:
                    waits.append(window[0] + 1 - now)
            if waits:
                return max(waits)
            for name, _ in buckets:
                self._windows[account, name].append(now)
            return None
