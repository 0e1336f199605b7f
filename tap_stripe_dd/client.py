"""The one Stripe base stream: URL, auth, headers, params, one list page at a time and Stripe's
list contract, state, retries and error translation. The fetch loop is `fetching.py`'s; a
concrete stream only names its endpoint and its filters."""

from __future__ import annotations

import calendar
import operator
import socket
import threading
import time
import typing as t
from collections.abc import Generator, Iterable, Iterator
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from functools import cached_property
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

import msgspec
import requests
from singer_sdk import RESTStream, StreamSchema
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from singer_sdk.helpers._batch import SDKBatchMessage
from singer_sdk.helpers._catalog import pop_deselected_record_properties
from singer_sdk.helpers._util import utc_now
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.mapper import RemoveRecordTransform, SameRecordTransform
from singer_sdk.schema.source import SchemaDirectory

from tap_stripe_dd.accounts import Account, AccountEndpoint, AccountWalks
from tap_stripe_dd.errors import UserError
from tap_stripe_dd.fetching import Page, PageRequest, Walk
from tap_stripe_dd.records import (
    DAY,
    Plan,
    apply_plan,
    datetime_plan,
    listed_objects,
    to_rfc3339,
)

if t.TYPE_CHECKING:
    from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchConfig
    from singer_sdk.helpers.types import Context

    from tap_stripe_dd.ratelimit import RateLimiter

DEFAULT_API_URL = "https://api.stripe.com"
STRIPE_VERSION = "2024-06-20"
#: Stripe opened in 2011: with neither bookmark nor start_date, history starts here.
STRIPE_EPOCH = calendar.timegm((2011, 1, 1, 0, 0, 0))
MAX_RETRY_WAIT = 60.0


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


def mask_secret(text: str, secret: str | None) -> str:
    """Stripe echoes keys as `sk_test_****abcd`; never let more than the last four through."""
    if secret and len(secret) > 4:
        text = text.replace(secret, "****" + secret[-4:])
    return text


def masked_url(url: str) -> str:
    """The URL with any user name and password inside it replaced by ****."""
    parsed = urlparse(url)
    if "@" not in parsed.netloc:
        return url
    return parsed._replace(netloc="****@" + parsed.netloc.rpartition("@")[2]).geturl()


def retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.replace(".", "", 1).isdigit() else None


def page_problem(body: dict, request: PageRequest) -> str | None:
    """What makes `body` no list page of `request`, if anything: a page may not be read on
    without `has_more`, nor hold objects outside the range asked for, older ones before newer
    ones, or the cursor's own object."""
    data, has_more = body.get("data"), body.get("has_more")
    if not isinstance(data, list):
        return "`data` is not a list"
    if type(has_more) is not bool:
        return "`has_more` is missing or not true/false"
    if has_more and not data:
        return "`has_more` is true on a page without objects"
    if len(data) > request.limit:
        return f"more objects than the {request.limit} asked for"
    try:
        created = [item["created"] for item in data]
        newest = request.lt - 1 if request.before is None else min(request.lt - 1, request.before)
        if created and not (newest >= created[0] and created[-1] >= request.gte):
            return f"objects created outside [{request.gte}, {request.lt}) were listed"
        if not all(map(operator.ge, created, created[1:])):
            return "objects are not listed newest first"
        for item in data:
            if item["created"] != request.before:
                break
            if item["id"] == request.after:
                return f"the page after {request.after} lists {request.after} again"
    except (TypeError, KeyError):
        return "an object without an id or an integer `created`"
    return None


class StripeAPIError(FatalAPIError):
    """A response the run cannot get past: shown as one line, never with the key or the body."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StripeStream(RESTStream[str | None]):
    """A Stripe list endpoint, synced incrementally on `created` in resumable slices.

    Stripe lists newest first and cannot sort ascending, so the SDK's own bookmark (which only
    moves with sorted records) cannot make a run resumable. Instead the run's window, from the
    bookmark minus `lookback_seconds` (or `start_date`, or 2011) up to the moment the run started
    (or `end_date`), is cut into half-open `created` slices `[gte, lt)` of `slice_days`, walked
    oldest first. Records never move the bookmark; a slice that has been emitted in full does, to
    its end, followed by a STATE message. A run that dies resumes at the first incomplete slice,
    and objects on a slice edge belong to exactly one slice. The stream is the `Endpoint` of a
    `fetching.Walk`, whose fetcher threads read slices side by side, never leaving a gap.
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

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        #: Whether the API has answered this stream once: a refused connection is then retried.
        self.answered = threading.Event()

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
        return headers

    @property
    def timeout(self) -> float:  # type: ignore[override]
        return float(self.config.get("request_timeout", 60))

    @property
    def requests_session(self) -> requests.Session:
        """One session per fetcher thread: connections are reused, never shared across threads."""
        local = self._tap.thread_local
        if not hasattr(local, "session"):
            session = local.session = requests.Session()
            # The environment's proxies (and NO_PROXY) for the API, once: else requests scans
            # the environment three times a request (measured: a tenth of a fetcher's CPU),
            # and a ~/.netrc entry would replace the key.
            session.proxies = requests.utils.get_environ_proxies(self.url_base)
            session.trust_env = False
        return local.session

    def request_decorator(self, func: t.Callable, bucket: str | None = None) -> t.Callable:
        """Every attempt, retries included, first waits for the account's rate limiter (the
        call's second argument), in the per-endpoint `bucket` (default: this stream's list
        endpoint)."""
        progress = self._tap.progress
        bucket = bucket or self.path

        def limited(
            prepared: requests.PreparedRequest,
            limiter: RateLimiter,
            request: PageRequest | None = None,
        ) -> t.Any:
            limiter.acquire(bucket)
            progress.requested(self.name)
            try:
                result = func(prepared, limiter, request)
            except requests.ConnectionError as exc:
                if deterministic(exc, answered=self.answered.is_set()):
                    raise StripeAPIError(network_error_message(exc, retried=False)) from None
                raise
            self.answered.set()
            return result

        return super().request_decorator(limited)

    @cached_property
    def _filter_config(self) -> dict[str, t.Any]:
        return dict(self.config.get("filters", {}).get(self.name, {}))

    def fetch_page(self, request: PageRequest, account: Account) -> Page:
        """One list page of one account, retried as the settings say (see `Endpoint` in
        fetching.py, and `AccountEndpoint`)."""
        body = self.get_json(self.get_url(None), self.page_params(request), account, request)
        return Page(body["data"], body["has_more"])

    def get_json(
        self, url: str, params: dict, account: Account, request: PageRequest | None = None
    ) -> dict:
        """The decoded body of a GET, as `account` (`Stripe-Account` for a connected one); of
        the page `request` asks for, if given."""
        headers = self.http_headers
        if account.connected:
            headers["Stripe-Account"] = account.id
        prepared = self.build_prepared_request(
            method="GET", url=url, params=params, headers=headers
        )
        return self._get_with_retries(prepared, account.limiter, request)

    @cached_property
    def _get_with_retries(self) -> t.Callable[..., dict]:
        return self.request_decorator(self._get_once)

    def _get_once(
        self, prepared: requests.PreparedRequest, limiter: RateLimiter, request: PageRequest | None
    ) -> dict:
        """A list page (`request`) that breaks Stripe's list contract is retried like a 5xx,
        and then fails: taken as it is, it would end a slice early or never end it. An object
        the run cannot place (no id, no integer `created`) stops it at once, named
        (`listed_objects`)."""
        try:
            response = self._request(prepared, None)
        except RetriableAPIError as exc:
            # After a 429 every request of the account to the endpoint waits, not only this one.
            if exc.response is not None and exc.response.status_code == 429:
                limiter.pause(self.path, self._retry_after(exc.response) or 1.0)
            raise
        body = self.body(response)
        if request is None:
            return body
        if isinstance(data := body.get("data"), list):
            listed_objects(self.name, data)
        if problem := page_problem(body, request):
            msg = f"GET {self.path}: Stripe sent a list page that breaks its contract: {problem}"
            raise RetriableAPIError(msg, response)
        return body

    # Other endpoints for the change feed (changes.py): events, an object by id, the clock.

    def get(self, path: str, params: dict, bucket: str) -> requests.Response:
        """`GET /v1<path>` as the key's own account (or `account_id`'s), with this stream's
        headers, retries and error translation, rate limited in that account's per-endpoint
        `bucket` (Stripe counts `/charges/{id}` as `/charges`)."""
        headers = self.http_headers
        if account := self.config.get("account_id"):
            headers["Stripe-Account"] = str(account)
        prepared = self.build_prepared_request(
            method="GET", url=self.url_base + path, params=params, headers=headers
        )
        decorated = self._decorated_gets.get(bucket)
        if decorated is None:
            decorated = self._decorated_gets.setdefault(
                bucket,
                self.request_decorator(lambda prepared, *_: self._request(prepared, None), bucket),
            )
        return decorated(prepared, self._tap.directory.platform_limiter)

    @cached_property
    def _decorated_gets(self) -> dict[str, t.Callable]:
        return {}

    def stripe_clock(self) -> int:
        """The run's now: the `Date` header of the run's first response (a `limit=1` list of
        events, which also proves that the key may read them), read once for all streams.
        Never this machine's clock: one that runs ahead would move bookmarks past objects
        Stripe has not created yet, one that runs behind would re-read and then miss."""
        tap = self._tap
        with tap.clock_lock:
            if tap.stripe_now is None:
                response = self.get("/events", {"limit": 1}, "/events")
                try:
                    date = parsedate_to_datetime(response.headers["Date"])
                    tap.stripe_now = int(date.timestamp())
                except (KeyError, TypeError, ValueError):
                    msg = "GET /events: Stripe's answer has no valid Date header (Stripe's clock)"
                    raise StripeAPIError(msg) from None
            return tap.stripe_now

    def page_params(self, request: PageRequest) -> dict:
        params: dict[str, t.Any] = {
            "limit": request.limit,
            "created[gte]": request.gte,
            "created[lt]": request.lt,
        }
        for name in self.filters:
            value = self._filter_config.get(name)
            if isinstance(value, dict):
                params.update({f"{name}[{op}]": bound for op, bound in value.items()})
            elif value is not None:
                params[name] = value
        if request.after:
            params["starting_after"] = request.after
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

    def validate_response(self, response: requests.Response) -> None:
        status = response.status_code
        should_retry = response.headers.get("Stripe-Should-Retry")
        if status < 400:
            try:
                body = self.body(response)
            except (msgspec.DecodeError, ValueError) as exc:
                msg = f"{self.path}: Stripe sent a body that is not JSON (status {status})"
                raise RetriableAPIError(msg, response) from exc
            if not isinstance(body, dict):
                msg = f"{self.path}: Stripe sent JSON that is not a list page"
                raise RetriableAPIError(msg, response)
            return
        message = self.response_error_message(response)
        if should_retry == "false":
            raise StripeAPIError(message, status)
        if status in (409, 429) or status >= 500 or should_retry == "true":
            raise RetriableAPIError(message, response)
        raise StripeAPIError(message, status)

    def response_error_message(self, response: requests.Response) -> str:
        """Stripe's error type, code and message only: the body and headers may carry secrets."""
        status = response.status_code
        request = response.request
        path = urlparse(request.path_url).path.removeprefix("/v1") if request else self.path
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
        elif status == 403 and path == "/events" and error.get("code") != "account_invalid":
            problem = (
                "the API key lacks a permission: it may not read events, from which changes "
                "and deletions are synced (a restricted key needs Events read, rak_event_read)"
            )
        elif status == 403:
            problem = "the API key lacks a permission this stream needs (restricted key?)"
        else:
            problem = f"HTTP {status}"
        return f"GET {path}: {problem}: {stripe_says}".rstrip(": ")

    # Retries: exponential backoff with jitter, but Stripe's Retry-After wins when it is given.

    def backoff_handler(self, details: t.Mapping[str, t.Any]) -> None:
        """A handled retry is counted for the progress line, not logged as an ERROR (backoff
        logs it once at INFO, and the final failure at ERROR)."""
        self._tap.progress.backoff_handler(self.name, details)

    def backoff_max_tries(self) -> int:
        return int(self.config.get("max_retries", 8)) + 1

    @property
    def _first_wait(self) -> float:
        return int(self.config.get("retry_initial_wait_ms", 1000)) / 1000

    @cached_property
    def longest_wait(self) -> float:
        """The longest the tap waits before a retry: its backoff's last wait, at most
        `MAX_RETRY_WAIT`, and at least a second, so that a `Retry-After` is honoured as far."""
        last = self._first_wait * 2 ** max(0, self.backoff_max_tries() - 2)
        return max(1.0, min(MAX_RETRY_WAIT, last))

    def _retry_after(self, response: requests.Response) -> float | None:
        """Stripe's `Retry-After`, capped (and said so) as the backoff is: one large value
        must not freeze an endpoint for an hour."""
        asked = retry_after_seconds(response)
        if asked is not None and asked > self.longest_wait:
            self.logger.warning(
                "GET %s: Stripe asked to retry after %g s; the tap waits %g s, its longest wait",
                self.path,
                asked,
                self.longest_wait,
            )
            return self.longest_wait
        return asked

    def backoff_wait_generator(self) -> Generator[float, t.Any, None]:
        first_wait = self._first_wait
        exc = yield 0.0  # backoff primes the generator, then sends each failure in
        attempt = 0
        while True:
            response = getattr(exc, "response", None)
            retry_after = retry_after_seconds(response) if response is not None else None
            wait = min(self.longest_wait, retry_after or first_wait * 2**attempt)
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

    # Slices, accounts and state.

    def _increment_stream_state(
        self, latest_record: dict, *, context: Context | None = None
    ) -> None:
        """Records never move the bookmark: completed slices do (see the class docstring)."""

    @property
    def partitions(self) -> list[dict] | None:
        """None: the SDK would walk partitions one after another, and the tap walks accounts
        side by side (`AccountWalks`); each account's state is still an SDK partition,
        `bookmarks.<stream>.partitions[]` with context `{"account_id": …}`."""
        return None

    def account_state(self, account: Account) -> dict:
        """The state an account's bookmark lives in: its partition with `account_ids`, else
        the stream's own."""
        if not self._tap.directory.partitioned:
            return self.stream_state
        cache = self.__dict__.setdefault("_account_states", {})
        state = cache.get(account.id)
        if state is None:
            state = cache[account.id] = self.get_context_state({"account_id": account.id})
            mark = self.stream_state.get("replication_key_value")
            if mark and not account.connected and "replication_key_value" not in state:
                # A one-account state (before `account_ids`): the platform's bookmark goes on.
                state.update(replication_key=self.replication_key, replication_key_value=mark)
        return state

    @cached_property
    def feed_account(self) -> Account | None:
        """The account the change feed (changes.py, stream-level state) sweeps: the key's own
        or `account_id`'s; with `account_ids`, the platform if this run reads it. Connected
        accounts listed in `account_ids` are not swept (the tap says so once per run)."""
        directory = self._tap.directory
        for account in directory.accounts:
            if not account.connected or not directory.partitioned:
                return account
        return None

    def account_window(self, account: Account) -> tuple[int, int]:
        """The `created` range this run covers for one account."""
        return self.sync_window(self.account_state(account))

    def sync_window(self, state: dict | None = None) -> tuple[int, int]:
        """The `created` range this run covers for a state (default: the stream's, and every
        partition's bookmark is checked): `[start, end)` in Unix seconds."""
        if state is None:
            for partition in self.stream_state.get("partitions", []):
                self.sync_window(partition)
            state = self.stream_state
        now = self.stripe_clock()
        end = min(now, to_unix(self.config["end_date"])) if self.config.get("end_date") else now
        start = (
            to_unix(self.config["start_date"]) if self.config.get("start_date") else STRIPE_EPOCH
        )
        bookmark = state.get("replication_key_value")
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

    def _walk(self, endpoint: AccountEndpoint, start: int, end: int, concurrency: int) -> Walk:
        return Walk(
            endpoint,
            start,
            end,
            slice_seconds=int(float(self.config.get("slice_days", 30)) * DAY),
            page_size=self.page_size,
            concurrency=concurrency,
        )

    def _walk_events(self) -> Iterator[tuple[str, Account, t.Any]]:
        """The pages (`records`, each record with its `account_id`) of every account, and
        each bookmark an account's walk allows that is past its state's."""
        directory = self._tap.directory
        windows = [(account, *self.account_window(account)) for account in directory.accounts]
        walks = AccountWalks(
            self,
            windows,
            in_flight=int(self.config.get("account_concurrency", 10)),
            directory=directory,
            walk=self._walk,
            wait=self._tap.wait_for,
            concurrency=self.concurrency,
        )
        progress = self._tap.progress
        for kind, account, payload in walks.run():
            progress.slices_left(self.name, walks.slices_left())
            if kind == "records":
                progress.fetched(self.name, len(payload))
                for record in payload:
                    record["account_id"] = account.id
            elif kind == "bookmark":
                previous = self.account_state(account).get("replication_key_value")
                if previous and to_unix(previous) >= payload:
                    continue
            yield kind, account, payload

    def get_records(self, context: Context | None) -> Iterable[dict]:
        """Records go to the SDK's writer; the bookmark moves once they are written."""
        bookmarks = Bookmarks(self)
        for kind, account, payload in self._walk_events():
            if kind == "records":
                self._page_extracted_at = utc_now()  # the page's time serves its records
                yield from payload
            else:
                self._write_progress(kind, account, payload, bookmarks)
        bookmarks.write()

    def get_batches(
        self, batch_config: BatchConfig, context: Context | None = None
    ) -> Iterator[tuple[BaseBatchFileEncoding, list[str]]]:
        """Records go to files (`batch_config`): a file is closed and announced (the SDK writes
        its BATCH message) before the STATE whose bookmarks cover its records, so that no STATE
        ever confirms a record in a file the loader has not been told of."""
        batch = self._batches = self._tap.batch_run(batch_config).stream(self._batch_outputs)
        bookmarks = Bookmarks(self)
        with self.get_record_counter() as counter:
            for kind, account, payload in self._walk_events():
                if kind == "records":
                    records = [r for r in map(self._batch_record, payload) if r is not None]
                    batch.write(records)
                    counter.increment(len(records))
                    continue
                if kind == "bookmark" and not bookmarks.due():
                    bookmarks.add(account, payload)
                    continue
                if batch.count:
                    yield batch_config.encoding, batch.close()
                self._write_progress(kind, account, payload, bookmarks)
        if batch.count:  # a window that ends before the bookmark (`end_date`) never moves it
            yield batch_config.encoding, batch.close()
        bookmarks.write()

    @cached_property
    def _batch_outputs(self) -> list[tuple[str, t.Callable[[dict], dict | None] | None]]:
        """The streams a batch goes out as, each with its map's transform, as the SDK writes
        RECORD messages: a stream map may hash, drop or add properties, flatten, copy the
        stream under another name; `__NULL__` sends nothing. None: records as they are."""
        return [
            (
                stream_map.stream_alias,
                None
                if type(stream_map) is SameRecordTransform and not stream_map.flattening_enabled
                else stream_map.transform,
            )
            for stream_map in self.stream_maps
            if not isinstance(stream_map, RemoveRecordTransform)
        ]

    def _generate_batch_messages(
        self, encoding: BaseBatchFileEncoding, manifest: list[str]
    ) -> Iterator[SDKBatchMessage]:
        """Each file announced as the stream its records go out as (the SDK would announce
        every file under every alias)."""
        aliases: dict[str, list[str]] = {}
        for url in manifest:
            aliases.setdefault(self._batches.alias_of(url), []).append(url)
        for alias, urls in aliases.items():
            yield SDKBatchMessage(stream=alias, encoding=encoding, manifest=urls)

    def _batch_record(self, record: dict) -> dict | None:
        """A record as the SDK would write it in a RECORD message, before its stream maps."""
        row = self.post_process(record)
        if row is not None and self._deselects_properties:
            pop_deselected_record_properties(row, self.schema, self.mask)
        return row

    def _write_progress(
        self, kind: str, account: Account | None, payload: t.Any, bookmarks: Bookmarks
    ) -> None:
        """After the records it covers: an account's `bookmark` (everything it created before
        `payload` has been written), sent when due (`Bookmarks`), or the change feed's `state`
        (its cursors, changes.py), sent at once with the bookmarks pending; say so."""
        if kind == "bookmark" and account is not None:
            bookmarks.add(account, payload)
            if bookmarks.due():
                bookmarks.write()
        else:
            self.stream_state.update(payload)
            bookmarks.write(force=True)


class Bookmarks:
    """Bookmarks the walks allowed, written to the state (and a STATE message sent) at once
    for one account, at most every `Directory.state_seconds` for many: each STATE holds every
    partition."""

    def __init__(self, stream: StripeStream) -> None:
        self.stream = stream
        self.pending: dict[str, tuple[Account, int]] = {}
        self.every = stream._tap.directory.state_seconds
        self.written = time.monotonic()

    def add(self, account: Account, end: int) -> None:
        """Everything `account` created before `end` has been handed on."""
        self.pending[account.id] = (account, end)

    def due(self) -> bool:
        return time.monotonic() - self.written >= self.every

    def write(self, *, force: bool = False) -> None:
        """The pending bookmarks, in a STATE message if any (or if `force`: the stream's own
        state changed)."""
        stream = self.stream
        for account, end in self.pending.values():
            stream.account_state(account).update(
                replication_key=stream.replication_key, replication_key_value=to_rfc3339(end)
            )
        if self.pending or force:
            stream.state_manager.is_flushed = False
            stream._write_state_message()
        self.pending.clear()
        self.written = time.monotonic()


def causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def deterministic(exc: requests.ConnectionError, answered: bool) -> bool:
    """A failure that a retry would only repeat: TLS always; a name that does not resolve or
    a refused connection while the host has not answered once in this run."""
    if isinstance(exc, requests.exceptions.SSLError):
        return True
    return not answered and any(
        isinstance(cause, socket.gaierror | ConnectionRefusedError) for cause in causes(exc)
    )


def network_error_message(exc: requests.RequestException, retried: bool = True) -> str:
    """requests' own text is a paragraph of pool internals; say where and what, once."""
    url = urlparse(getattr(exc.request, "url", None) or "")
    chain = list(causes(exc))
    if isinstance(exc, requests.exceptions.SSLError):
        what = "TLS handshake failed: no TLS server there, or its certificate is not valid"
    elif any(isinstance(cause, socket.gaierror) for cause in chain):
        what = "the host name does not resolve (DNS)"
    elif isinstance(exc, requests.Timeout):
        what = "no response in time"
    elif any(isinstance(cause, ConnectionRefusedError) for cause in chain) or "refused" in str(exc):
        what = "connection refused"
    else:
        what = "connection failed"
    if retried:
        what += ", retries exhausted"
    if not url.netloc:  # refused before it was sent; its text may quote a header (the key)
        return f"could not send a request ({type(exc).__name__})"
    return f"could not reach {masked_url(f'{url.scheme}://{url.netloc}')} ({what})"
