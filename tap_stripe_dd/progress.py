"""What a run shows while it runs: a readable line per stream every few seconds (objects,
requests, slices left, rate-limit waits), a summary at the end, and nothing repeated.

The SDK reports its measurements as `METRIC: {json}` records of the `singer_sdk.metrics`
logger: most of a run's output. Here they feed the counters instead, and reach the console
only with the `log_metrics` setting. The fetch loop adds what the SDK does not measure
live: `requested`, `fetched`, `count_slices`; and `backoff_handler` replaces the SDK's, which
logs every handled retry at ERROR.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from singer_sdk.metrics import METRICS_LOGGER_NAME, Metric, Point

DEFAULT_INTERVAL = 5.0


@dataclass
class StreamProgress:
    """One stream's counters; fetcher threads add to them under the lock.

    Objects and requests come twice: from the SDK's measurements (`written`, `measured`),
    exact but late (a record count each minute, a request count when a slice ends), and from
    the fetch loop, if it tells (`fetched`, `sent`), live. A line shows the larger."""

    name: str
    started: float = field(default_factory=time.monotonic)
    written: int = 0
    fetched: int = 0
    measured: int = 0
    sent: int = 0
    rate_limit_waits: int = 0
    retries: int = 0
    #: Counts the slices waiting or being read, when a line is shown (the fetch loop's).
    slices_left: t.Callable[[], int] | None = None
    finished: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def objects(self) -> int:
        """Once the stream is done, the records it wrote (local filters drop some fetched)."""
        return self.written if self.finished is not None else max(self.written, self.fetched)

    @property
    def requests(self) -> int:
        return max(self.measured, self.sent)

    def line(self) -> str:
        # Until a first count arrives, say nothing rather than "0 objects".
        known = self.objects or self.finished is not None
        parts = [plural(self.objects, "object")] if known else []
        parts.append(plural(self.requests, "request"))
        if self.slices_left is not None and self.finished is None:
            parts.append(plural(self.slices_left(), "slice") + " left")
        if self.rate_limit_waits:
            parts.append(plural(self.rate_limit_waits, "rate-limit wait"))
        if self.retries:
            parts.append(plural(self.retries, "retry", "retries"))
        seconds = (self.finished or time.monotonic()) - self.started
        return f"{self.name}: {', '.join(parts)} in {seconds:.1f} s"


def plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count:,} {one if count == 1 else many or one + 's'}"


class Progress:
    """The run's counters per stream, a line per running stream every `interval` seconds
    (0: none), and a summary when the run ends. One per tap; thread-safe."""

    def __init__(
        self, logger: logging.Logger, *, interval: float = DEFAULT_INTERVAL, log_metrics: bool
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.log_metrics = log_metrics
        self.streams: dict[str, StreamProgress] = {}
        self.synced: set[str] = set()
        self._lock = threading.Lock()

    def stream(self, name: str) -> StreamProgress:
        if (progress := self.streams.get(name)) is None:
            with self._lock:
                progress = self.streams.setdefault(name, StreamProgress(name))
        return progress

    # What the fetch loop tells: cheap enough for every request and page.

    def requested(self, stream: str) -> None:
        """A request is sent (each attempt)."""
        progress = self.stream(stream)
        with progress.lock:
            progress.sent += 1

    def fetched(self, stream: str, count: int) -> None:
        """`count` more objects read from the API (a page)."""
        progress = self.stream(stream)
        with progress.lock:
            progress.fetched += count

    def count_slices(self, stream: str, counter: t.Callable[[], int]) -> None:
        """How to count the slices waiting or being read: only when a line is shown, since
        counting visits every walk in flight (with many accounts, a few per cent of a run's
        time when counted at every page)."""
        self.stream(stream).slices_left = counter

    def backoff_handler(self, stream: str, details: t.Mapping[str, t.Any]) -> None:
        """For `RESTStream.backoff_handler`: counts the retry (a 429 as a rate-limit wait).
        Backoff itself logs one INFO line per retry and the final failure at ERROR, so a
        handled retry is no error."""
        response = getattr(details.get("exception"), "response", None)
        self.retried(stream, getattr(response, "status_code", None))

    def retried(self, stream: str, status: int | None) -> None:
        """A request is tried again, after `status` (None: no response); after a 429, Stripe's
        rate limit is what it waits for."""
        progress = self.stream(stream)
        with progress.lock:
            if status == 429:
                progress.rate_limit_waits += 1
            else:
                progress.retries += 1

    def finished(self, stream: str) -> None:
        self.stream(stream).finished = time.monotonic()

    # The SDK's measurements.

    def measure(self, point: Point) -> None:
        stream = point.tags.get("stream")
        if not isinstance(stream, str) or point.metric_type != "counter":
            return
        progress = self.stream(stream)
        with progress.lock:
            if point.metric == Metric.RECORD_COUNT:
                progress.written += point.value
            elif point.metric == Metric.HTTP_REQUEST_COUNT:
                progress.measured += point.value

    # The run.

    @contextmanager
    def running(self, streams: Iterable[str]) -> Iterator[None]:
        """Counts and reports while the block runs; logs the summary if it succeeds."""
        started = time.monotonic()
        self.synced = set(streams)  # not the account lookups (streams.py): their requests count
        for name in self.synced:
            self.stream(name).started = started
        metrics_logger = logging.getLogger(METRICS_LOGGER_NAME)
        feed = MetricsFeed(self)
        metrics_logger.addHandler(feed)
        propagate, metrics_logger.propagate = metrics_logger.propagate, self.log_metrics
        stop = threading.Event()
        if self.interval > 0:
            threading.Thread(target=self._tick, args=(stop,), name="progress", daemon=True).start()
        try:
            yield
            stop.set()
            self.summary(time.monotonic() - started)
        finally:
            stop.set()
            metrics_logger.removeHandler(feed)
            metrics_logger.propagate = propagate

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            for progress in list(self.streams.values()):
                if progress.finished is None and progress.name in self.synced:
                    self.logger.info("%s", progress.line())

    def summary(self, seconds: float) -> None:
        streams = [p for p in self.streams.values() if p.name in self.synced]
        for progress in streams:
            self.logger.info("%s", progress.line())
        objects = sum(p.objects for p in streams)
        requests = sum(p.requests for p in self.streams.values())
        self.logger.info(
            "done: %s from %s, %s in %.1f s",
            plural(objects, "object"),
            plural(len(streams), "stream"),
            plural(requests, "request"),
            seconds,
        )


class MetricsFeed(logging.Handler):
    """The SDK's METRIC records, counted (printing them is the console's business)."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        if record.args and isinstance(point := record.args[0], Point):  # type: ignore[index]
            self.progress.measure(point)
