"""Client-side rate limiting shared by every stream of a run: Stripe counts per account and per
endpoint, so one token bucket per endpoint and one for the account, taken together.

Requests are paced evenly, with no burst, a little under the configured rate: a server that
counts requests in any one-second window (as Stripe does) then never sees one too many, even
when the network bunches a few together. A 429 costs a whole `Retry-After`; pacing costs 5%.
"""

from __future__ import annotations

import threading
import time

SAFETY = 0.95


class TokenBucket:
    """`rate` tokens a second, at most one banked: requests leave evenly spaced."""

    def __init__(self, rate: float) -> None:
        self.rate = rate * SAFETY
        self.tokens = 1.0
        self.updated = time.monotonic()
        self.paused_until = 0.0

    def wait_time(self, now: float) -> float:
        """Seconds until a token is free (0: take it now); the caller holds the limiter's lock."""
        self.tokens = min(1.0, self.tokens + (now - self.updated) * self.rate)
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

    def _buckets(self, endpoint: str) -> tuple[TokenBucket, TokenBucket]:
        bucket = self.endpoints.get(endpoint)
        if bucket is None:
            bucket = self.endpoints[endpoint] = TokenBucket(self.per_endpoint)
        return bucket, self.account

    def acquire(self, endpoint: str) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                buckets = self._buckets(endpoint)
                wait = max(bucket.wait_time(now) for bucket in buckets)
                if wait <= 0:
                    for bucket in buckets:
                        bucket.tokens -= 1
                    return
            time.sleep(wait)

    def pause(self, endpoint: str, seconds: float) -> None:
        """After a 429 every request to that endpoint waits, not only the one that is retried."""
        with self.lock:
            bucket, _ = self._buckets(endpoint)
            bucket.paused_until = max(bucket.paused_until, time.monotonic() + seconds)
            bucket.tokens = 0
