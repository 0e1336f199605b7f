"""The event log of one account, and `GET /v1/events` over it.

Every change records the events Stripe records for it, each holding the changed object
(immutable: changes replace objects, never mutate them) and its `previous_attributes`; an
event's JSON is rendered in the account's API version when first served, and then kept.
Events are appended in (created, sequence) order, so time ranges are found by bisection.
Only events with `created` in (now - 30 days, now - lag] are served: older ones are gone, as
on Stripe, and newer ones are not yet in the eventually consistent feed.
"""

from __future__ import annotations

import bisect
import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from tap_stripe_dd.emulator.keys import IdCodec, mix64
from tap_stripe_dd.emulator.lists import ListQuery
from tap_stripe_dd.emulator.protocol import StripeError, invalid
from tap_stripe_dd.emulator.versions import Obj, render

RETENTION = 30 * 86_400
MAX_TYPES = 20
FAILED_DELIVERY_PERCENT = 3  # events whose webhook delivery failed (pending_webhooks 1)
compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass
class Event:
    sequence: int
    created: int
    type: str
    resource: str
    object: Obj | None  # None: born object `born`, unchanged, read when first served
    previous: Obj | None
    request: str | None
    refunds: Sequence[Obj] = ()  # a charge's refunds when it happened, for old versions
    born: int = -1
    json: bytes | None = field(default=None, repr=False)

    @property
    def delivered(self) -> bool:
        return mix64(self.sequence) % 100 >= FAILED_DELIVERY_PERCENT


class EventLog:
    def __init__(
        self, key: int, version: str, born: Callable[[str, int], tuple[Obj, Sequence[Obj]]]
    ) -> None:
        self.version = version
        self._born = born
        self._codec = IdCodec("evt", key, 24)
        self._events: list[Event] = []
        self._times: list[int] = []
        self._lock = threading.Lock()

    def record(self, event: Event) -> Event:
        with self._lock:
            event.sequence = len(self._events)
            if self._times and event.created < self._times[-1]:
                raise AssertionError("events are recorded in time order")
            self._events.append(event)
            self._times.append(event.created)
        return event

    def __len__(self) -> int:
        return len(self._events)

    def id(self, event: Event) -> str:
        return self._codec.encode(event.sequence)

    def all(self) -> list[Event]:
        return list(self._events)

    def json(self, event: Event) -> bytes:
        if event.json is None:
            refunds = event.refunds
            obj = event.object
            if obj is None:
                obj, refunds = self._born(event.resource, event.born)
            data: dict[str, Any] = {
                "object": render(event.resource, obj, self.version, lambda _: refunds)
            }
            if event.previous is not None:
                data["previous_attributes"] = event.previous
            event.json = compact(
                {
                    "id": self.id(event),
                    "object": "event",
                    "api_version": self.version,
                    "created": event.created,
                    "data": data,
                    "livemode": False,
                    "pending_webhooks": 0 if event.delivered else 1,
                    "request": {"id": event.request, "idempotency_key": None},
                    "type": event.type,
                }
            ).encode()
        return event.json

    def find(self, event_id: str, low: int, high: int) -> Event | None:
        """The event with this id if it is served in the window (low, high]."""
        sequence = self._codec.decode(event_id)
        if sequence is None or sequence >= len(self._events):
            return None
        event = self._events[sequence]
        return event if low < event.created <= high else None

    def page(
        self, params: Iterable[tuple[str, str]], now: float, lag: float
    ) -> tuple[list[bytes], bool]:
        """One page of `GET /v1/events`: newest first, as Stripe filters and pages it."""
        types: tuple[str, list[str]] | None = None
        delivered = None
        rest = []
        for name, value in params:
            if (
                name == "type"
                or name == "types[]"
                or (name.startswith("types[") and name[6:-1].isdigit())
            ):
                kind = "type" if name == "type" else "types"
                if types is not None and types[0] != kind:
                    raise invalid(
                        "You cannot specify both `type` and `types` at the same time.", name
                    )
                types = (kind, [*(types[1] if types else []), value])
                if kind == "types" and len(types[1]) > MAX_TYPES:
                    raise invalid(f"You may specify at most {MAX_TYPES} event types.", "types")
            elif name == "delivery_success":
                if value not in ("true", "false"):
                    raise invalid(f"Invalid boolean: {value}", name)
                delivered = value == "true"
            else:
                rest.append((name, value))
        query = ListQuery.parse("events", rest)  # limit, cursors, created[...], as everywhere
        limit, cursor = query.limit, query.cursor
        times, events = self._times, self._events
        # Served: now - 30 days < created <= now - lag, and within the query's created range.
        first = max(position(times, query.low), bisect.bisect_right(times, int(now) - RETENTION))
        stop = min(position(times, query.high), bisect.bisect_right(times, int(now - lag)))
        backwards = cursor is not None and cursor[0] == "ending_before"
        if cursor is not None:
            anchor = self._codec.decode(cursor[1])
            if anchor is None or anchor >= len(events):
                raise StripeError(
                    404, f"No such event: '{cursor[1]}'", "resource_missing", cursor[0]
                )
            if backwards:
                first = max(first, anchor + 1)
            else:
                stop = min(stop, anchor)
        indexes = range(first, stop) if backwards else range(stop - 1, first - 1, -1)
        tests = [matcher(types[1])] if types else []
        if delivered is not None:
            tests.append(lambda event: event.delivered == delivered)
        chosen = (events[i] for i in indexes)
        if tests:
            chosen = (event for event in chosen if all(test(event) for test in tests))
        page = list(islice(chosen, limit + 1))
        has_more = len(page) > limit
        del page[limit:]
        if backwards:
            page.reverse()
        return [self.json(event) for event in page], has_more


def position(times: list[int], key: tuple[int, int]) -> int:
    """Where a (created, ...) key of ListQuery falls among the events' times: keys with a
    negative second part sit before their second's events, the others after them."""
    if key[1] < 0:
        return bisect.bisect_left(times, key[0])
    return bisect.bisect_right(times, key[0])


def matcher(names: list[str]) -> Callable[[Event], bool]:
    """`charge.*` matches every type under `charge.`; other names match exactly."""
    exact = {name for name in names if not name.endswith(".*")}
    prefixes = tuple(name[:-1] for name in names if name.endswith(".*"))
    return lambda event: event.type in exact or event.type.startswith(prefixes or ("\0",))
