"""The six resources' list endpoints: parameters checked as Stripe checks them, key ranges
found by bisection, filters on the objects as they are now, Stripe's list envelope."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

from tap_stripe_dd.emulator.dataset import HIGHEST, INFINITY, LOWEST, Key
from tap_stripe_dd.emulator.protocol import StripeError, integer, no_such

if TYPE_CHECKING:
    from tap_stripe_dd.emulator.state import State

RANGE_PARAM = re.compile(r"(\w+)(?:\[(gt|gte|lt|lte)\])?")
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
            elif name in FIELD_FILTERS.get(resource, ()):
                query.fields[name] = value
            elif name in SPECIAL_FILTERS.get(resource, ()):
                query.payout = value
            else:
                raise StripeError(
                    400, f"Received unknown parameter: {name}", "parameter_unknown", name
                )
        query.low, query.high = query.ranges.pop("created", (LOWEST, HIGHEST))
        return query


def page(state: State, resource: str, query: ListQuery, now: float) -> tuple[list[int], bool]:
    """The indexes of one page of objects, in the order listed, and whether there are more."""
    dataset = state.dataset
    low, high = query.low, min(query.high, (int(now), INFINITY))  # nothing created after now
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
        span = payout_span(state, query.payout)
        if span:
            low = max(low, (dataset.timeline.created(span[0]), span[0] - 1))
            high = min(high, (dataset.timeline.created(span[-1]), span[-1] + 1))
        else:
            high = LOWEST
    indexes: Iterable[int] = dataset.scan(resource, low, high, descending=not backwards, now=now)
    if span is not None:  # objects added later are in no payout
        indexes = (index for index in indexes if index in span)
    if resource == "customers" and state.deleted:
        indexes = (index for index in indexes if index not in state.deleted)
    tests = predicates(query)
    if tests:
        indexes = (
            index for index in indexes if all(test(state.field(resource, index)) for test in tests)
        )
    chosen = list(islice(indexes, query.limit + 1))
    has_more = len(chosen) > query.limit
    del chosen[query.limit :]
    if backwards:
        chosen.reverse()
    return chosen, has_more


def payout_span(state: State, payout_id: str) -> range:
    index = state.dataset.index_of("payouts", payout_id)
    if index is None:
        raise no_such("payouts", payout_id, "payout")
    return state.dataset.payout_span(index)


def predicates(query: ListQuery) -> list[Callable[[Callable[[str], Any]], bool]]:
    """Tests of an object's fields (given a getter) for the filters that are not a key range;
    these make a listing scan."""
    tests: list[Callable[[Callable[[str], Any]], bool]] = [
        lambda get, name=name, value=value: get(name) == value
        for name, value in query.fields.items()
    ]
    for name, (low, high) in query.ranges.items():
        tests.append(lambda get, name=name, low=low, high=high: low < (get(name), 0) < high)
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
