"""The one Stripe base stream: what talks to Stripe (URL, auth, headers, params, one list page
at a time and Stripe's list contract, retries, rate limits, error translation). A run's loop
is `bookmarks.py`'s, its fetching `fetching.py`'s; a concrete stream only names its endpoint
and its filters."""

from __future__ import annotations

import calendar
import math
import operator
import socket
import threading
import typing as t
from collections.abc import Generator, Iterator
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
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.schema.source import SchemaDirectory

from tap_stripe_dd.accounts import Account
from tap_stripe_dd.fetching import Page, PageRequest
from tap_stripe_dd.records import listed_objects

if t.TYPE_CHECKING:
    from tap_stripe_dd.ratelimit import RateLimiter

DEFAULT_API_URL = "https://api.stripe.com"
STRIPE_VERSION = "2024-06-20"
#: Stripe opened in 2011: with neither bookmark nor start_date, history starts here.
STRIPE_EPOCH = calendar.timegm((2011, 1, 1, 0, 0, 0))
MAX_RETRY_WAIT = 60.0
#: requests reads a body 10 KiB at a time, each piece a trip through urllib3 and a GIL hand-off
#: between fetcher threads, and a list page is 40-250 KB: read bodies in pieces of 1 MiB
#: (a read stops at the Content-Length). 12% of a run's time with the rate limiter lifted.
requests.models.CONTENT_CHUNK_SIZE = 1 << 20


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
        top = None if request.lt is None else request.lt - 1
        newest = min((b for b in (top, request.before) if b is not None), default=math.inf)
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
    """A Stripe endpoint as the tap talks to it: one list page of one account at a time (with
    Stripe's list contract checked), an object by id, Stripe's clock, with the settings'
    retries, rate limits and errors translated to one line. What a run does with the pages is
    `bookmarks.py`'s."""

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
    def _LOG_REQUEST_METRICS(self) -> bool:  # type: ignore[override]
        """The SDK's timing of each request, a log record each: wanted with `log_metrics` only
        (progress.py counts requests without it)."""
        return self._tap.progress.log_metrics

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
        """The decoded body of a GET, as `account`; of the page `request` asks for, if given."""
        prepared = self.build_prepared_request(
            method="GET", url=url, params=params, headers=self.headers_as(account)
        )
        return self._get_with_retries(prepared, account.limiter, request)

    def headers_as(self, account: Account) -> dict:
        """This stream's headers, and `Stripe-Account` for a connected account."""
        headers = self.http_headers
        if account.connected:
            headers["Stripe-Account"] = account.id
        return headers

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

    def get(
        self, path: str, params: dict, bucket: str, account: Account | None = None
    ) -> requests.Response:
        """`GET /v1<path>` as `account` (default: the key's own, or `account_id`'s), with this
        stream's headers, retries and error translation, rate limited in that account's
        per-endpoint `bucket` (Stripe counts `/charges/{id}` as `/charges`)."""
        account = account or self._tap.directory.home
        prepared = self.build_prepared_request(
            method="GET", url=self.url_base + path, params=params, headers=self.headers_as(account)
        )
        decorated = self._decorated_gets.get(bucket)
        if decorated is None:
            decorated = self._decorated_gets.setdefault(
                bucket,
                self.request_decorator(lambda prepared, *_: self._request(prepared, None), bucket),
            )
        return decorated(prepared, account.limiter)

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
        params: dict[str, t.Any] = {"limit": request.limit, "created[gte]": request.gte}
        if request.lt is not None:
            params["created[lt]"] = request.lt
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
