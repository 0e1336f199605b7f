"""The one Stripe base stream: URL, auth, headers, pagination, params, slices and state, retries
and error translation. A concrete stream only names its endpoint and its filters."""

from __future__ import annotations

import calendar
import queue
import threading
import time
import typing as t
from collections.abc import Generator, Iterable, Iterator
from datetime import datetime, timezone
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

import msgspec
import requests
from singer_sdk import RESTStream, StreamSchema
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from singer_sdk.helpers._catalog import pop_deselected_record_properties
from singer_sdk.helpers._util import utc_now
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.pagination import BaseAPIPaginator
from singer_sdk.schema.source import SchemaDirectory

from tap_stripe_dd.errors import UserError
from tap_stripe_dd.slices import Slice, SliceScheduler

if t.TYPE_CHECKING:
    from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchConfig
    from singer_sdk.helpers.types import Context

DEFAULT_API_URL = "https://api.stripe.com"
STRIPE_VERSION = "2024-06-20"
#: Stripe opened in 2011: with neither bookmark nor start_date, history starts here.
STRIPE_EPOCH = calendar.timegm((2011, 1, 1, 0, 0, 0))
DAY = 86_400
MAX_RETRY_WAIT = 60.0
# Sparse slices are merged up to this many pages: each slice costs one partial page, so this
# keeps that overhead near 4%, while a kill still re-reads little (see SliceScheduler).
MERGE_PAGES = 25
# A fetcher with nothing to take splits another's slice when that has this many pages left.
STEAL_PAGES = 4
IDLE_POLL_SECONDS = 0.05

Plan = dict[str, "Plan | None"]
"""Where the Unix-time fields are in a record: `None` marks one, a dict descends into an object."""


def schemas_dir() -> Path:
    """The schemas ship inside the wheel; an editable install reads the repo's `schemas/`."""
    packaged = Path(str(resources.files("tap_stripe_dd"))) / "schemas"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "schemas"


def to_unix(value: str) -> int:
    """Parse an RFC 3339 / ISO 8601 date-time (naive means UTC) into Unix seconds."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp())


CLOCK_MINUTES = [f"T{hour:02d}:{minute:02d}:" for hour in range(24) for minute in range(60)]
CLOCK_SECONDS = [f"{second:02d}Z" for second in range(60)]


@lru_cache(maxsize=16_384)
def utc_date(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * DAY))


def to_rfc3339(unix: int) -> str:
    """`time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))`, at half the cost: every record
    has a few of these, and dates repeat."""
    day, second = divmod(unix, DAY)
    return utc_date(day) + CLOCK_MINUTES[second // 60] + CLOCK_SECONDS[second % 60]


def datetime_plan(schema: dict) -> Plan:
    """Walk a JSON schema once to find every `date-time` field, so records convert without it."""
    plan: Plan = {}
    for name, node in schema.get("properties", {}).items():
        items = node.get("items", node)
        if node.get("format") == "date-time":
            plan[name] = None
        elif sub := datetime_plan(items):
            plan[name] = sub
    return plan


def apply_plan(value: t.Any, plan: Plan) -> None:
    """Turn Stripe's Unix-time integers into RFC 3339 strings, in place, objects and lists alike."""
    if isinstance(value, list):
        for item in value:
            apply_plan(item, plan)
        return
    if not isinstance(value, dict):
        return
    for name, sub in plan.items():
        field = value.get(name)
        if sub is None:
            if isinstance(field, int) and not isinstance(field, bool):
                value[name] = to_rfc3339(field)
        elif field is not None:
            apply_plan(field, sub)


def mask_secret(text: str, secret: str | None) -> str:
    """Stripe echoes keys as `sk_test_****abcd`; never let more than the last four through."""
    if secret and len(secret) > 4:
        text = text.replace(secret, "****" + secret[-4:])
    return text


def retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.replace(".", "", 1).isdigit() else None


class StripeAPIError(FatalAPIError):
    """A response the run cannot get past: shown as one line, never with the key or the body."""


class Channel:
    """Fetchers to their stream's thread: bounded, so memory stays flat, and closed by the
    reader when it stops, so that no fetcher waits forever on a reader that has gone."""

    def __init__(self, size: int) -> None:
        self.queue: queue.Queue[tuple[str, t.Any, t.Any]] = queue.Queue(maxsize=size)
        self.closed = threading.Event()

    def send(self, item: tuple[str, t.Any, t.Any]) -> bool:
        while not self.closed.is_set():
            try:
                self.queue.put(item, timeout=0.2)
            except queue.Full:
                continue
            return True
        return False


class StripePaginator(BaseAPIPaginator[str | None]):
    """Stripe's cursor: `starting_after` the last id of a page while `has_more` says so."""

    def __init__(self) -> None:
        super().__init__(None)

    def get_next(self, response: requests.Response) -> str | None:
        body = StripeStream.body(response)
        if body.get("has_more") and body.get("data"):
            return str(body["data"][-1]["id"])
        return None


class StripeStream(RESTStream[str | None]):
    """A Stripe list endpoint, synced incrementally on `created` in resumable slices.

    Stripe lists newest first and cannot sort ascending, so the SDK's own bookmark (which only
    moves with sorted records) cannot make a run resumable. Instead the run's window, from the
    bookmark minus `lookback_seconds` (or `start_date`, or 2011) up to the moment the run started
    (or `end_date`), is cut into half-open `created` slices `[gte, lt)` of `slice_days`, walked
    oldest first. Records never move the bookmark; a slice that has been emitted in full does, to
    its end, followed by a STATE message. A run that dies resumes at the first incomplete slice,
    and objects on a slice edge belong to exactly one slice. Fetcher threads walk slices side by
    side; sparse ones are merged and dense ones shared (`slices.py`), never leaving a gap.
    """

    primary_keys: t.ClassVar[tuple[str, ...]] = ("id",)
    replication_key = "created"
    is_sorted = False
    records_jsonpath = "$.data[*]"
    schema = StreamSchema(SchemaDirectory(schemas_dir()))
    # The schema-driven date-time conversion below already makes records match their schema;
    # the SDK's generic conformance pass would only cost time.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    #: The query parameters Stripe filters this endpoint by, settable under `filters.<stream>`.
    filters: t.ClassVar[tuple[str, ...]] = ()
    #: Filters Stripe does not offer for this endpoint, applied by the tap to each record.
    local_filters: t.ClassVar[tuple[str, ...]] = ()

    @property
    def url_base(self) -> str:
        return self.config.get("api_url", DEFAULT_API_URL).rstrip("/") + "/v1"

    @property
    def http_headers(self) -> dict:
        headers = {
            "Authorization": f"Bearer {self.config['api_key']}",
            "Stripe-Version": self.config.get("stripe_version", STRIPE_VERSION),
            "User-Agent": "tap-stripe-dd",
        }
        if account := self.config.get("account_id"):
            headers["Stripe-Account"] = account
        return headers

    @property
    def timeout(self) -> float:  # type: ignore[override]
        return float(self.config.get("request_timeout", 60))

    @property
    def requests_session(self) -> requests.Session:
        """One session per fetcher thread: connections are reused, never shared across threads."""
        local = self._tap.thread_local
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session

    def request_decorator(self, func: t.Callable) -> t.Callable:
        """Every attempt, retries included, first waits for the run's shared rate limiter."""
        limiter = self._tap.rate_limiter

        def limited(*args: t.Any, **kwargs: t.Any) -> requests.Response:
            limiter.acquire(self.path)
            return func(*args, **kwargs)

        return super().request_decorator(limited)

    def get_new_paginator(self) -> StripePaginator:
        return StripePaginator()

    @cached_property
    def _filter_config(self) -> dict[str, t.Any]:
        return dict(self.config.get("filters", {}).get(self.name, {}))

    def get_url_params(self, context: Context | None, next_page_token: str | None) -> dict:
        assert context is not None, "requests are always made for a slice"
        params: dict[str, t.Any] = {
            "limit": self.page_size,
            "created[gte]": context["gte"],
            "created[lt]": context["lt"],
        }
        for name in self.filters:
            value = self._filter_config.get(name)
            if isinstance(value, dict):
                params.update({f"{name}[{op}]": bound for op, bound in value.items()})
            elif value is not None:
                params[name] = value
        if cursor := next_page_token or context.get("after"):
            params["starting_after"] = cursor
        return params

    # Responses: decoded once, errors translated.

    @staticmethod
    def body(response: requests.Response) -> dict:
        """The decoded JSON body, cached on the response: pagination and parsing both need it."""
        cached = getattr(response, "_stripe_body", None)
        if cached is None:
            cached = msgspec.json.decode(response.content)
            response._stripe_body = cached  # type: ignore[attr-defined]
        return cached

    def parse_response(self, response: requests.Response) -> Iterable[dict]:
        return self.body(response).get("data", [])

    def validate_response(self, response: requests.Response) -> None:
        status = response.status_code
        should_retry = response.headers.get("Stripe-Should-Retry")
        if status < 400:
            try:
                body = self.body(response)
            except (msgspec.DecodeError, ValueError) as exc:
                msg = f"{self.path}: Stripe sent a body that is not JSON (status {status})"
                raise RetriableAPIError(msg, response) from exc
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                msg = f"{self.path}: Stripe sent JSON that is not a list of objects"
                raise RetriableAPIError(msg, response)
            return
        message = self.response_error_message(response)
        if status == 429:
            self._tap.rate_limiter.pause(self.path, retry_after_seconds(response) or 1.0)
        if should_retry == "false":
            raise StripeAPIError(message)
        if status in (409, 429) or status >= 500 or should_retry == "true":
            raise RetriableAPIError(message, response)
        raise StripeAPIError(message)

    def response_error_message(self, response: requests.Response) -> str:
        """Stripe's error type, code and message only: the body and headers may carry secrets."""
        status = response.status_code
        try:
            error = msgspec.json.decode(response.content).get("error", {})
        except (msgspec.DecodeError, AttributeError):
            error = {}
        stripe_says = " ".join(
            part
            for part in (
                f"({error.get('type')}{'/' + error['code'] if error.get('code') else ''})"
                if error.get("type")
                else "",
                error.get("message") or response.reason or "",
            )
            if part
        )
        stripe_says = mask_secret(stripe_says, self.config.get("api_key"))
        if status == 401:
            problem = "the API key was rejected (invalid, revoked or for another account)"
        elif status == 403:
            problem = "the API key lacks a permission this stream needs (restricted key?)"
        else:
            problem = f"HTTP {status}"
        return f"GET {self.path}: {problem}: {stripe_says}".rstrip(": ")

    # Retries: exponential backoff with jitter, but Stripe's Retry-After wins when it is given.

    def backoff_max_tries(self) -> int:
        return int(self.config.get("max_retries", 8)) + 1

    def backoff_wait_generator(self) -> Generator[float, t.Any, None]:
        first_wait = int(self.config.get("retry_initial_wait_ms", 1000)) / 1000
        exc = yield 0.0  # backoff primes the generator, then sends each failure in
        attempt = 0
        while True:
            response = getattr(exc, "response", None)
            retry_after = retry_after_seconds(response) if response is not None else None
            wait = min(MAX_RETRY_WAIT, retry_after or first_wait * 2**attempt)
            attempt += 1
            exc = yield wait

    # Records: Unix times become RFC 3339, local filters drop what does not match.

    @cached_property
    def _datetime_plan(self) -> Plan:
        return datetime_plan(self.schema)

    def post_process(self, row: dict, context: Context | None = None) -> dict | None:
        for name in self.local_filters:
            wanted = self._filter_config.get(name)
            if wanted is not None and row.get(name) != wanted:
                return None
        apply_plan(row, self._datetime_plan)
        return row

    @cached_property
    def _deselects_properties(self) -> bool:
        return not all(selected for breadcrumb, selected in self.mask.items() if breadcrumb)

    @cached_property
    def _records_go_out_as_they_are(self) -> bool:
        """No property deselected, and no stream map but the SDK's pass-through, unflattened,
        to the tap's own writer (the SDK's test helpers may bring theirs)."""
        maps = self.stream_maps
        return (
            hasattr(self._tap.message_writer, "write_record")
            and not self._deselects_properties
            and len(maps) == 1
            and type(maps[0]) is SameRecordTransform
            and not maps[0].flattening_enabled
        )

    def _write_record_message(self, record: dict) -> None:
        """Records that go out as they are are written as the SDK writes them, without its
        per-record walk over deselected properties and message object: on large Stripe objects
        those were a sixth of the tap's time. Otherwise the SDK's path."""
        if self._records_go_out_as_they_are:
            self._tap.message_writer.write_record(self.name, record, self._page_extracted_at)
            self.state_manager.is_flushed = False
        else:
            super()._write_record_message(record)

    def generate_child_contexts(self, record: dict, context: Context | None) -> Iterable[Context]:
        """Stripe streams have no child streams: the SDK would copy a context per record."""
        return ()

    # Slices and state.

    def _increment_stream_state(
        self, latest_record: dict, *, context: Context | None = None
    ) -> None:
        """Records never move the bookmark: completed slices do (see the class docstring)."""

    def sync_window(self) -> tuple[int, int]:
        """The `created` range this run covers: `[start, end)` in Unix seconds."""
        now = int(self._tap.run_started)
        end = min(now, to_unix(self.config["end_date"])) if self.config.get("end_date") else now
        start = (
            to_unix(self.config["start_date"]) if self.config.get("start_date") else STRIPE_EPOCH
        )
        bookmark = self.stream_state.get("replication_key_value")
        if bookmark:
            try:
                bookmark_ts = to_unix(str(bookmark))
            except ValueError:
                msg = f"the state's bookmark for '{self.name}' ({bookmark!r}) is not a date-time"
                raise UserError(msg) from None
            if bookmark_ts > now:
                msg = (
                    f"the state's bookmark for stream '{self.name}' ({bookmark}) is in the "
                    "future; fix or remove the state before syncing"
                )
                raise UserError(msg)
            start = max(start, bookmark_ts - int(self.config.get("lookback_seconds", 600)))
        return start, max(start, end)

    @property
    def concurrency(self) -> int:
        return int(self.config.get("max_concurrency") or self._tap.default_concurrency)

    @property
    def page_size(self) -> int:
        return int(self.config.get("page_size", 100))

    def _slice_events(self) -> Iterator[tuple[str, t.Any]]:
        """Fetchers walk slices in threads; this generator, in the stream's own thread, hands on
        their pages (`records`) and, each time the completed prefix of slices grows, the end of
        that prefix (`bookmark`): everything created before it has been handed on."""
        start, end = self.sync_window()
        step = max(1, int(float(self.config.get("slice_days", 30)) * DAY))
        scheduler = SliceScheduler(start, end, step, merge_up_to=MERGE_PAGES * self.page_size)
        channel = Channel(size=2 * self.concurrency)
        for _ in range(self.concurrency):
            threading.Thread(target=self._fetch, args=(scheduler, channel), daemon=True).start()
        running = self.concurrency
        try:
            while running:
                kind, piece, payload = self._tap.wait_for(channel.queue)
                if kind == "records":
                    yield kind, payload
                elif kind == "done":
                    bookmark = scheduler.complete(piece)
                    previous = self.stream_state.get("replication_key_value")
                    if not previous or to_unix(previous) < bookmark:
                        yield "bookmark", bookmark
                elif kind == "error":
                    raise payload
                else:
                    running -= 1
        finally:
            channel.closed.set()

    def get_records(self, context: Context | None) -> Iterable[dict]:
        """Records go to the SDK's writer; the bookmark moves once they are written."""
        for kind, payload in self._slice_events():
            if kind == "records":
                self._page_extracted_at = utc_now()  # the page's time serves its records
                yield from payload
            else:
                self._write_bookmark(payload)

    def get_batches(
        self, batch_config: BatchConfig, context: Context | None = None
    ) -> Iterator[tuple[BaseBatchFileEncoding, list[str]]]:
        """Records go to files (`batch_config`): a file is closed and announced (the SDK writes
        its BATCH message) before the STATE whose bookmark covers its records, so that no STATE
        ever confirms a record in a file the loader has not been told of."""
        batch = self._tap.batch_run(batch_config).file(self.name)
        with self.get_record_counter() as counter:
            for kind, payload in self._slice_events():
                if kind == "records":
                    records = [r for r in map(self._batch_record, payload) if r is not None]
                    batch.write(records)
                    counter.increment(len(records))
                    continue
                if batch.count:
                    yield batch_config.encoding, [batch.close()]
                self._write_bookmark(payload)
        if batch.count:  # a window that ends before the bookmark (`end_date`) never moves it
            yield batch_config.encoding, [batch.close()]

    def _batch_record(self, record: dict) -> dict | None:
        """A record as the SDK would write it in a RECORD message (stream maps aside: the SDK
        announces a batch's files under each map's alias, as they are)."""
        row = self.post_process(record)
        if row is not None and self._deselects_properties:
            pop_deselected_record_properties(row, self.schema, self.mask)
        return row

    def _fetch(self, scheduler: SliceScheduler, channel: Channel) -> None:
        """One fetcher: pages through slice after slice until the run's are all emitted."""
        try:
            while piece := self._next_slice(scheduler, channel):
                if not self._fetch_slice(scheduler, piece, channel):
                    return
        except Exception as exc:  # handed to the stream's thread, which raises it
            channel.send(("error", None, exc))
        finally:
            channel.send(("exit", None, None))

    def _next_slice(self, scheduler: SliceScheduler, channel: Channel) -> Slice | None:
        """The oldest waiting slice; else, unless the endpoint's requests already queue for
        the rate limit, the older half of the busiest one; else wait for either."""
        steal_from = STEAL_PAGES * self.page_size
        while not channel.closed.is_set():
            if piece := scheduler.take():
                return piece
            if not self._tap.rate_limiter.saturated(self.path) and (
                piece := scheduler.steal(min_objects=steal_from)
            ):
                return piece
            if scheduler.finished():
                return None
            time.sleep(IDLE_POLL_SECONDS)
        return None

    def _fetch_slice(self, scheduler: SliceScheduler, piece: Slice, channel: Channel) -> bool:
        """Sends the slice's pages, and `done` once it is complete, unless an older slice is
        waiting: then the slice goes back, at a page edge, for the next free fetcher. Returns
        False when the stream has stopped listening."""
        page_size = self.page_size
        page: list[dict] = []
        for record in self.request_records(piece.params):
            piece.seen += 1
            piece.position = record["created"]
            if record["created"] >= piece.gte:  # else stolen while its page was in flight
                page.append(record)
            if piece.seen % page_size:
                continue
            if not piece.judged and self.concurrency > 1:
                self._split_if_dense(scheduler, piece)
            piece.judged = True
            if not channel.send(("records", piece, page)):
                return False
            page = []
            if scheduler.yield_to_older(piece, str(record["id"])):
                return True
        return channel.send(("records", piece, page)) and channel.send(("done", piece, None))

    def _split_if_dense(self, scheduler: SliceScheduler, piece: Slice) -> None:
        """A first page that spans little of its slice means many pages to come: share them,
        but only with fetchers that would otherwise run out of slices, and not while requests
        queue for the rate limit anyway, since every extra slice costs a request (a partial
        last page); and always the slice the bookmark waits on, whose parts the other fetchers
        then take at their next page edge (`yield_to_older`), so that the bookmark moves after
        about one slice's pages, not one slice per fetcher."""
        pages_left = piece.objects_left() / self.page_size
        if scheduler.holds_bookmark(piece):
            idle = self.concurrency
        elif self._tap.rate_limiter.saturated(self.path):
            return
        else:
            idle = self.concurrency - scheduler.waiting()
        parts = min(int(pages_left // 2), idle)
        if parts >= 2 and piece.position is not None:
            scheduler.split(piece, piece.position, parts)

    def _write_bookmark(self, end: int) -> None:
        """Everything created before `end` has been written: move the bookmark and say so."""
        self.stream_state.update(
            replication_key=self.replication_key, replication_key_value=to_rfc3339(end)
        )
        self.state_manager.is_flushed = False
        self._write_state_message()


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")
