"""Stripe's API semantics, free of HTTP plumbing: auth, routing, list parameters, errors."""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice

from tap_stripe_dd.emulator.dataset import HIGHEST, INFINITY, LOWEST, Dataset, Key
from tap_stripe_dd.emulator.keys import base62
from tap_stripe_dd.emulator.objects import RESOURCES, Entry

KEY_SHAPE = re.compile(r"(?:sk|rk)_(?:test|live)_[0-9A-Za-z_]{10,}")
KEY_PREFIX = re.compile(r"(?:sk|rk|pk)_(?:test|live)_")
ACCOUNT_SHAPE = re.compile(r"acct_[0-9A-Za-z]{1,64}")
INTEGER = re.compile(r"-?[0-9]{1,18}")
RANGE_PARAM = re.compile(r"(\w+)(?:\[(gt|gte|lt|lte)\])?")
PAGING = frozenset({"limit", "starting_after", "ending_before"})
# Equality filters each list endpoint documents, and range filters (besides `created`).
FIELD_FILTERS = {
    "balance_transactions": ("currency", "source", "type"),
    "charges": ("customer", "payment_intent", "transfer_group"),
    "customers": ("email", "test_clock"),
    "disputes": ("charge", "payment_intent"),
    "payouts": ("destination", "status"),
    "refunds": ("charge", "payment_intent"),
}
RANGE_FILTERS = {"payouts": ("created", "arrival_date")}
SPECIAL_FILTERS = {"balance_transactions": ("payout",)}
NO_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization "
    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
    "https://stripe.com/docs/api#authentication for details, or we can help at "
    "https://support.stripe.com/."
)
SERVER_ERROR = (
    "An unknown error occurred while processing your request. Please try again, or contact "
    "us at https://support.stripe.com/ if the problem persists."
)
RATE_LIMITED = (
    "Request rate limit exceeded. You can learn more about rate limits here "
    "https://stripe.com/docs/rate-limits."
)
request_ids = itertools.count(1)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: list[tuple[str, str]]
    headers: dict[str, str]  # canonical names, e.g. "Stripe-Account"

    @property
    def account(self) -> str | None:
        return self.headers.get("Stripe-Account")


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class StripeError(Exception):
    """An error response in Stripe's shape: {"error": {"type", "code", "message", "param"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        error: dict[str, str] = {"type": kind, "message": message}
        if code:
            error |= {"code": code, "doc_url": f"https://stripe.com/docs/error-codes/{code}"}
        if param:
            error["param"] = param
        self.body = {"error": error}

    def response(self) -> Response:
        return Response(self.status, json.dumps(self.body, indent=2).encode(), self.headers)


def mask(key: str) -> str:
    """How Stripe shows a key in errors: the prefix and at most the last four characters."""
    prefix = KEY_PREFIX.match(key)
    head = prefix.group() if prefix else ""
    tail = key[-4:] if len(key) - len(head) >= 12 else ""
    return f"{head}****{tail}"


def api_key(headers: dict[str, str]) -> str | None:
    """The key from `Authorization: Bearer KEY` or Basic auth (key as user), "" if unreadable."""
    value = headers.get("Authorization")
    if value is None:
        return None
    scheme, _, credential = value.strip().partition(" ")
    if scheme.lower() == "bearer":
        return credential.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credential, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return ""
    return ""


def invalid_key(key: str) -> StripeError:
    return StripeError(401, f"Invalid API Key provided: {mask(key)}")


def no_permission(key: str, account: str | None, resource: str) -> StripeError:
    return StripeError(
        403,
        f"The provided key '{mask(key)}' does not have the required permissions for this "
        f"endpoint on account '{account or 'acct_platform'}'. Having the "
        f"'rak_{RESOURCES[resource].object}_read' permission would allow this request to continue.",
        code="insufficient_permissions",
    )


def no_such(resource: str, object_id: str, param: str | None) -> StripeError:
    return StripeError(
        404, f"No such {RESOURCES[resource].object}: '{object_id}'", "resource_missing", param
    )


def unrecognized(request: Request) -> StripeError:
    return StripeError(
        404,
        f"Unrecognized request URL ({request.method}: {request.path}). Please see "
        "https://stripe.com/docs or we can help at https://support.stripe.com/.",
    )


def rate_limited(retry_after: int | None, should_retry: bool | None) -> StripeError:
    return StripeError(
        429, RATE_LIMITED, "rate_limit", headers=retry_headers(retry_after, should_retry)
    )


def server_error(status: int, retry_after: int | None, should_retry: bool | None) -> StripeError:
    return StripeError(
        status, SERVER_ERROR, kind="api_error", headers=retry_headers(retry_after, should_retry)
    )


def retry_headers(retry_after: int | None, should_retry: bool | None) -> dict[str, str]:
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    if should_retry is not None:
        headers["Stripe-Should-Retry"] = "true" if should_retry else "false"
    return headers


def integer(name: str, value: str) -> int:
    if not INTEGER.fullmatch(value):
        raise StripeError(400, f"Invalid integer: {value}", "parameter_invalid_integer", name)
    return int(value)


def bounds(name: str, value: str) -> tuple[Key, Key]:
    """The (created, index) keys strictly around the objects `name[op]=value` selects."""
    op = RANGE_PARAM.fullmatch(name).group(2)  # type: ignore[union-attr]
    number = integer(name, value)
    if op == "gt":
        return (number, INFINITY), HIGHEST
    if op == "gte":
        return (number, -1), HIGHEST
    if op == "lt":
        return LOWEST, (number, -1)
    if op == "lte":
        return LOWEST, (number, INFINITY)
    return (number, -1), (number, INFINITY)


@dataclass
class ListQuery:
    """A list request's parameters, checked as Stripe checks them."""

    limit: int = 10
    low: Key = LOWEST
    high: Key = HIGHEST
    cursor: tuple[str, str] | None = None  # (parameter, object id)
    fields: dict[str, str] = field(default_factory=dict)
    ranges: dict[str, tuple[Key, Key]] = field(default_factory=dict)  # other than created
    payout: str | None = None

    @classmethod
    def parse(cls, resource: str, params: Iterable[tuple[str, str]]) -> ListQuery:
        query = cls()
        ranges = RANGE_FILTERS.get(resource, ("created",))
        for name, value in params:
            match = RANGE_PARAM.fullmatch(name)
            base = match.group(1) if match else name
            if value == "":
                raise StripeError(
                    400,
                    f"You passed an empty string for '{name}'. We assume empty values are an "
                    f"attempt to unset a parameter; however '{name}' cannot be unset. You should "
                    f"remove '{name}' from your request or supply a non-empty value.",
                    "parameter_invalid_empty",
                    name,
                )
            if name == "limit":
                query.limit = integer(name, value)
                if not 1 <= query.limit <= 100:
                    raise StripeError(
                        400, "Limit must be between 1 and 100.", "parameter_invalid_integer", name
                    )
            elif name in ("starting_after", "ending_before"):
                if query.cursor and query.cursor[0] != name:
                    raise StripeError(
                        400,
                        "You may only specify one of these parameters: ending_before, "
                        "starting_after.",
                        "parameter_invalid",
                        name,
                    )
                query.cursor = (name, value)
            elif base in ranges:
                low, high = bounds(name, value)
                old_low, old_high = query.ranges.get(base, (LOWEST, HIGHEST))
                query.ranges[base] = (max(low, old_low), min(high, old_high))
            elif name in FIELD_FILTERS[resource]:
                query.fields[name] = value
            elif name in SPECIAL_FILTERS.get(resource, ()):
                query.payout = value
            else:
                raise StripeError(
                    400, f"Received unknown parameter: {name}", "parameter_unknown", name
                )
        query.low, query.high = query.ranges.pop("created", (LOWEST, HIGHEST))
        return query


class Api:
    """Answers one request for a data set per account; raises nothing, returns a Response."""

    def __init__(self, dataset: Callable[[str | None], Dataset], key: str | None) -> None:
        self._dataset = dataset
        self._key = key

    def respond(self, request: Request, now: float) -> Response:
        try:
            resource, object_id = self.route(request)
            dataset = self._dataset(request.account)
            if object_id is not None:
                return self.retrieve(dataset, resource, object_id, request)
            return self.list(dataset, resource, ListQuery.parse(resource, request.params), now)
        except StripeError as error:
            return error.response()

    def route(self, request: Request) -> tuple[str, str | None]:
        """Checks the key and account first (as Stripe does), then the path."""
        key = self.check_key(request.headers)
        parts = request.path.split("/")
        if request.method != "GET" or len(parts) not in (3, 4) or parts[:2] != ["", "v1"]:
            raise unrecognized(request)
        if parts[2] not in RESOURCES or (len(parts) == 4 and not parts[3]):
            raise unrecognized(request)
        account = request.account
        if account is not None and not ACCOUNT_SHAPE.fullmatch(account):
            raise StripeError(
                403,
                f"The provided key '{mask(key)}' does not have access to account '{account}' (or "
                "that account does not exist). Application access may have been revoked.",
                "account_invalid",
            )
        if key.startswith("rk_") and "_noperm" in key:
            raise no_permission(key, account, parts[2])
        return parts[2], parts[3] if len(parts) == 4 else None

    def check_key(self, headers: dict[str, str]) -> str:
        key = api_key(headers)
        if key is None:
            raise StripeError(401, NO_KEY)
        if not KEY_SHAPE.fullmatch(key) or (self._key is not None and key != self._key):
            raise invalid_key(key)
        return key

    def retrieve(
        self, dataset: Dataset, resource: str, object_id: str, request: Request
    ) -> Response:
        if request.params:
            name = request.params[0][0]
            raise StripeError(400, f"Received unknown parameter: {name}", "parameter_unknown", name)
        index = dataset.index_of(resource, object_id)
        if index is None:
            raise no_such(resource, object_id, "id")
        return Response(200, dataset.json(resource, [index])[0])

    def list(self, dataset: Dataset, resource: str, query: ListQuery, now: float) -> Response:
        low, high = query.low, query.high
        backwards = query.cursor is not None and query.cursor[0] == "ending_before"
        if query.cursor:
            param, object_id = query.cursor
            index = dataset.index_of(resource, object_id)
            if index is None:
                raise no_such(resource, object_id, param)
            if backwards:
                low = max(low, dataset.key_of(resource, index))
            else:
                high = min(high, dataset.key_of(resource, index))
        span = None
        if query.payout is not None:
            # Balance transactions of a payout are an index range: list it instead of scanning.
            span = self.payout_span(dataset, query.payout)
            if span:
                low = max(low, (dataset.timeline.created(span[0]), span[0] - 1))
                high = min(high, (dataset.timeline.created(span[-1]), span[-1] + 1))
            else:
                high = LOWEST
        indexes = dataset.scan(resource, low, high, descending=not backwards, now=now)
        if span is not None:  # objects added later are in no payout
            indexes = (index for index in indexes if index in span)
        tests = self.tests(query)
        if tests:
            indexes = (
                index
                for index in indexes
                if all(test(dataset.entry(resource, index)) for test in tests)
            )
        page = list(islice(indexes, query.limit + 1))
        has_more = len(page) > query.limit
        del page[query.limit :]
        if backwards:
            page.reverse()
        return Response(200, list_body(resource, dataset.json(resource, page), has_more))

    @staticmethod
    def payout_span(dataset: Dataset, payout_id: str) -> range:
        index = dataset.index_of("payouts", payout_id)
        if index is None:
            raise no_such("payouts", payout_id, "payout")
        return dataset.payout_span(index)

    @staticmethod
    def tests(query: ListQuery) -> list[Callable[[Entry], bool]]:
        """Predicates for the filters that are not a key range; these make a listing scan."""
        tests: list[Callable[[Entry], bool]] = [
            lambda entry, name=name, value=value: entry.get(name) == value
            for name, value in query.fields.items()
        ]
        for name, (low, high) in query.ranges.items():
            tests.append(
                lambda entry, name=name, low=low, high=high: low < (entry.get(name), 0) < high
            )
        return tests


def list_body(resource: str, page: list[bytes], has_more: bool) -> bytes:
    """Stripe's list envelope around objects' JSON, which is never decoded or encoded again.

    One join copies the page once: a join inside a join would hold two page-sized buffers, and
    malloc then hands the memory back and faults it in again, at twenty times the copy's cost.
    """
    data = [b","] * (2 * len(page) - 1) if page else []
    data[::2] = page
    end = f'],"has_more":{"true" if has_more else "false"},"url":"/v1/{resource}"}}'.encode()
    return b"".join([b'{"object":"list","data":[', *data, end])


def request_id() -> str:
    return "req_" + base62(next(request_ids), 14)
