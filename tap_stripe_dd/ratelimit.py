"""Client-side rate limiting shared by every stream of a run: Stripe counts per account and per
endpoint, so one token bucket per endpoint and one for the account, taken together.

Requests are paced evenly a little under the configured rate (3% under 100/s, 1.25/s under
25/s), and a bucket banks the few tokens that headroom leaves (two for 100/s, one for 25/s):
a server that counts requests in any one-second window (as Stripe does) then never sees one
too many, even when the network bunches a few together, while a grant that comes a little late
(a thread waits for the GIL after its sleep) is not lost to the account. Measured at 100/s
with six busy streams: paced at 98/s with one token banked, grants came at 92/s; at 97/s with
two, at 97/s. A 429 costs a whole `Retry-After`; pacing costs 3-5%.

When several endpoints queue for the account's tokens, the one granted fewest so far goes
first: the streams of a run keep pace with each other and finish together, instead of the
last one crawling on alone at its endpoint's rate.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter

# Requests are paced this far under a limit: 3% of it, and at least 1.25 requests a second.
HEADROOM = 0.03
MIN_HEADROOM = 1.25
# A request whose endpoint is ahead of another that queues waits this long for it to go first.
YIELD_SECONDS = 0.002


class TokenBucket:
    """`rate` tokens a second, at most `banked` saved up: requests leave evenly spaced."""

    def __init__(self, rate: float) -> None:
        self.rate = rate - max(rate * HEADROOM, MIN_HEADROOM)
        # Paced rate plus banked tokens stay a token under the limit in any one-second window.
        self.banked = max(1.0, math.floor(rate - self.rate) - 1.0)
        self.tokens = 1.0
        self.updated = time.monotonic()
        self.paused_until = 0.0

    def wait_time(self, now: float) -> float:
        """Seconds until a token is free (0: take it now); the caller holds the limiter's lock."""
        self.tokens = min(self.banked, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if now < self.paused_until:
            return self.paused_until - now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


class RateLimiter:
    """Blocks a request until both its endpoint's bucket and the account's bucket allow it."""

    def __init__(self, per_endpoint: float, per_account: float) -> None:
        self.per_endpoint = per_endpoint
        self.account = TokenBucket(per_account)
        self.endpoints: dict[str, TokenBucket] = {}
        self.lock = threading.Lock()
        self.queued: Counter[str] = Counter()  # requests waiting for a token, per endpoint
        self.granted: Counter[str] = Counter()  # requests let go so far, per endpoint (`_behind`)

    def _buckets(self, endpoint: str) -> tuple[TokenBucket, TokenBucket]:
        bucket = self.endpoints.get(endpoint)
        if bucket is None:
            bucket = self.endpoints[endpoint] = TokenBucket(self.per_endpoint)
        return bucket, self.account

    def acquire(self, endpoint: str) -> None:
        queued = False
        while True:
            with self.lock:
                now = time.monotonic()
                buckets = self._buckets(endpoint)
                wait = max(bucket.wait_time(now) for bucket in buckets)
                if wait <= 0 and self._behind(endpoint, now):
                    wait = YIELD_SECONDS
                elif wait <= 0:
                    for bucket in buckets:
                        bucket.tokens -= 1
                    self.queued[endpoint] -= queued
                    self.granted[endpoint] += 1
                    return
                if not queued:
                    queued = True
                    self.queued[endpoint] += 1
            time.sleep(wait)

    def _behind(self, endpoint: str, now: float) -> bool:
        """Whether another endpoint, granted fewer so far, has a request queued that its own
        bucket would let go now: that one goes first."""
        mine = self.granted[endpoint]
        return any(
            waiting
            and other != endpoint
            and self.granted[other] < mine
            and self.endpoints[other].wait_time(now) <= 0
            for other, waiting in self.queued.items()
        )

    def saturated(self, endpoint: str) -> bool:
        """Whether requests to `endpoint` queue for tokens now: more of them in parallel would
        only queue too."""
        return self.queued[endpoint] > 0

    def pause(self, endpoint: str, seconds: float) -> None:
        """After a 429 every request to that endpoint waits, not only the one that is retried."""
        with self.lock:
            bucket, _ = self._buckets(endpoint)
            bucket.paused_until = max(bucket.paused_until, time.monotonic() + seconds)
            bucket.tokens = 0
