"""The change feed: what happens to objects after their first load (refunds, disputes won,
payouts paid, customers renamed or deleted), read from Stripe's events, so that after every
sync each table equals what its list endpoint returns at the pinned `Stripe-Version`.

A run of a stream (`TrackedStream`) is, for each account it reads, its created scan
(client.py, fetching.py, accounts.py), then that account's change sweep (`ChangeFeed`), run as
the account's last turn, side by side with other accounts' scans and sweeps:

- **Clock.** The run's now is Stripe's (`StripeStream.stripe_clock`: the `Date` header of the
  run's first response), so a machine clock that is off moves no cursor past Stripe's time.
- **Sweep.** `/v1/events` filtered by the stream's event types (streams.py, at most 20) and
  `created` in `[swept_to - events_lookback_seconds, now)`: the overlap catches events the
  eventually consistent feed lists late. The events are paged by the same `Walk` as the
  created scan (one scheduler), in the `/events` rate-limit bucket. Each is routed by the type
  of its `data.object` (`charge.refund.updated` carries a refund) and collapsed to one change
  per object. An event's payload is in the account's API version at the event's time and lacks
  expansions, so it is never written: a changed object is re-read by id at the pinned version
  (`GET /v1/<resource>/{id}`, fetchers side by side, in the list endpoint's rate-limit bucket,
  as Stripe counts them) and goes out through the stream's record path, as the created scan's
  rows do. Objects created in this run's created window are not re-read (the scan read them
  after every event before now), nor objects outside `[start_date, end_date)`.
- **Deletions** (customers) come from their `*.deleted` event (or a re-read answering
  `deleted`): a row of the fields a deletion sets (`id`, `object`, `created`, `deleted = true`,
  `_sdc_deleted_at` = the event's time), which the loader upserts without nulling the row's
  last known values; with the loader's `hard_delete` the row goes instead.
- **Balance transactions** change without events (`pending` -> `available`): their created scan
  starts at the oldest one still pending (`pending_from`), so a run re-reads what is still
  pending and what came after it, a few days of history at 100 a request, never all of it.
  Re-reading the pending ones by id would cost a request each, a hundred times more.

State, per stream and account: the entry the SDK keeps for the stream, or with `account_ids`
for a partition (`bookmarks.<stream>.partitions[] = {context: {account_id}, ...}`; the
platform's takes a one-account entry's cursors over) holds the created bookmark
(`replication_key_value`) and `changes_swept_to`: every event of that account created before
it is in the warehouse. It moves only after the sweep's rows (and batch files) have gone out, so a
run killed at any point sweeps again from the same place. A first run records its start there
before it loads anything, so changes to what it loads are swept by the next run, however it
ends, and reads no events itself: its scan reads every object after every event before its
start. An old created-only entry takes its created bookmark (the previous run's start).

The 30-day rule: Stripe keeps events 30 days. When a stream's sweep would start before the
oldest event kept (less an hour's margin for the run itself: a paused schedule, a failed first
sync, an old state restored), what changed in between cannot be read: `events_gap: resync`
(default) re-reads the stream from `start_date`, sweeping the events still kept (for
deletions), and says so in one line; `fail` stops with one line. A resync killed midway is
resumed as a first run would be, its sweep cursor already inside the 30 days. Objects deleted
before the oldest event kept are the rows the completed resync did not list: resyncs.py.
"""

from __future__ import annotations

import queue
import typing as t
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

from singer_sdk import StreamSchema
from singer_sdk.schema.source import SchemaDirectory

from tap_stripe_dd.bookmarks import BookmarkedStream
from tap_stripe_dd.client import STRIPE_EPOCH, StripeStream, page_problem, schemas_dir, to_unix
from tap_stripe_dd.errors import UserError
from tap_stripe_dd.fetching import Page, PageRequest, Walk
from tap_stripe_dd.records import DAY, to_rfc3339
from tap_stripe_dd.resyncs import RESYNC, began

if t.TYPE_CHECKING:
    from tap_stripe_dd.accounts import Account

RETENTION = 30 * DAY  # Stripe keeps events this long
GAP_MARGIN = 3_600  # a sweep starts at least this far inside the retention
SWEPT = "changes_swept_to"
PENDING = "pending_from"
DELETED_AT = "_sdc_deleted_at"
DELETION_COLUMNS = {
    "deleted": {"type": ["boolean", "null"]},
    DELETED_AT: {"type": ["string", "null"], "format": "date-time"},
}


class TrackedSchema(StreamSchema):
    """The stream's schema file, plus the columns a deletion sets for a deletable stream."""

    def get_stream_schema(self, stream: StripeStream, stream_class: type[StripeStream]) -> dict:
        schema = super().get_stream_schema(stream, stream_class)
        if not getattr(stream_class, "deletable", False):
            return schema
        return {**schema, "properties": {**schema["properties"], **DELETION_COLUMNS}}


@dataclass
class Change:
    """The latest event of one object in a sweep."""

    created: int | None  # the object's, when the event carries it
    at: int  # the event's
    deleted: bool
    filtered: dict  # the fields the stream's local filters read (unchanged by versions)


class TrackedStream(BookmarkedStream):
    """A list endpoint kept current: its created scan, then its change sweep."""

    schema = TrackedSchema(SchemaDirectory(schemas_dir()))

    #: `data.object.object` of the stream's events.
    object_name: t.ClassVar[str]
    #: The event types that change or delete this stream's objects (creations are scanned).
    event_types: t.ClassVar[tuple[str, ...]] = ()
    #: Events of another object that change one of this stream's too, unannounced: the type,
    #: and the field of its `data.object` that holds the id (a new dispute marks its charge).
    touched_by: t.ClassVar[tuple[tuple[str, str], ...]] = ()
    #: Whether objects can be deleted (their rows are then flagged).
    deletable: t.ClassVar[bool] = False
    #: Whether objects change with no event (`status` pending until `available_on`).
    changes_unannounced: t.ClassVar[bool] = False

    carried_state = (*BookmarkedStream.carried_state, SWEPT, PENDING, RESYNC)

    def sync_window(self, state: dict | None = None) -> tuple[int, int]:
        """Before anything is written (state None: the run's check), each account's sweep is
        planned: a gap past the 30 days is resolved or stops the run now."""
        if state is None:
            self.stripe_clock()  # first: the run's first request proves the key may read events
            for account in self._tap.directory.accounts:
                self._plan_sweep(account)
        return super().sync_window(state)

    def account_window(self, account: Account) -> tuple[int, int]:
        """An account's scan starts again at its oldest pending object too. (Its sweep is
        planned here too, for a stream synced on its own, as the SDK's test helpers do.)"""
        self._plan_sweep(account)
        start, end = super().account_window(account)
        state = self.account_state(account)
        if pending := self._pending(state):
            self._state_time(PENDING, pending, account)  # a time, and not in the future
        start = self._scan_start(state, start)
        return start, max(start, end)

    def _pending(self, state: dict) -> str | None:
        return state.get(PENDING) if self.changes_unannounced else None

    def _scan_start(self, state: dict, start: int) -> int:
        """Also its oldest pending object's `created` (`changes_unannounced`)."""
        pending = self._pending(state)
        return min(start, to_unix(str(pending))) if pending else start

    def _whose(self, account: Account) -> str:
        """The stream, and the account with `account_ids`, as messages name them."""
        if self._tap.directory.partitioned:
            return f"'{self.name}' of {account.id}"
        return f"'{self.name}'"

    def _state_time(self, key: str, value: object, account: Account) -> int:
        try:
            moment = to_unix(str(value))
        except ValueError:
            msg = f"the state's {key} for {self._whose(account)} ({value!r}) is not a date-time"
            raise UserError(msg) from None
        if moment > self.stripe_clock():
            msg = (
                f"the state's {key} for stream {self._whose(account)} ({value}) is in the "
                "future (on Stripe's clock); fix or remove the state before syncing"
            )
            raise UserError(msg)
        return moment

    def _plan_sweep(self, account: Account) -> None:
        """Where this run's sweep of an account starts, decided once (idempotent): the state's
        cursor, a created-only state's bookmark, or now; past the 30 days, the `events_gap`
        rule."""
        if not self.event_types:
            return
        entry = self.account_state(account)
        if entry.get(RESYNC, {}).get("listed"):  # confirmed, so its rows are marked
            del entry[RESYNC]
        now = self.stripe_clock()
        known = entry.get(SWEPT) or entry.get("replication_key_value")
        if not known:
            self._first_runs.add(account.id)
        swept = self._state_time(SWEPT, known, account) if known else now
        oldest = now - RETENTION + GAP_MARGIN + self.events_lookback
        if swept < oldest:
            since = f"changes to {self._whose(account)} were last swept at {to_rfc3339(swept)}"
            if self.config.get("events_gap", "resync") == "fail":
                msg = (
                    f"{since}, and Stripe keeps events for 30 days only: what changed since "
                    "cannot be read (events_gap is fail; with resync the stream is re-read "
                    "from start_date)"
                )
                raise UserError(msg)
            unseen = ""
            if self.deletable:
                entry[RESYNC] = began(account.id)
                unseen = (
                    "; rows it no longer lists (objects deleted before "
                    f"{to_rfc3339(oldest - self.events_lookback)}) are marked deleted once it "
                    "is complete, by this project's loaders (resyncs.py)"
                )
            self.logger.warning(
                "%s, and Stripe keeps events for 30 days only: re-reading %s from "
                "start_date (events_gap: resync)%s",
                since,
                self._whose(account),
                unseen,
            )
            entry.pop("replication_key_value", None)
            swept = oldest
        entry[SWEPT] = to_rfc3339(swept)

    @property
    def events_lookback(self) -> int:
        return int(self.config.get("events_lookback_seconds", 600))

    def _walk_events(self) -> Iterator[tuple[str, Account, t.Any]]:
        """Each account's created scan, then its sweep (`after_scan`, in the account's last
        turn); the oldest pending object of each scan is noted as its pages go by."""
        self._pending_seen: dict[str, int] = {}
        for kind, account, payload in super()._walk_events():
            if kind == "records" and self.changes_unannounced:
                for record in payload:
                    if record.get("status") == "pending":
                        seen = self._pending_seen.get(account.id, record["created"])
                        self._pending_seen[account.id] = min(seen, record["created"])
            yield kind, account, payload

    @cached_property
    def _first_runs(self) -> set[str]:
        """The accounts this stream reads for the first time (no cursor, no bookmark): their
        scan reads every object after every event before the run's start, so their sweep has
        nothing to read (the next run's starts there)."""
        return set()

    def after_scan(  # type: ignore[override]
        self, account: Account, scan_from: int, scan_to: int
    ) -> Iterator[tuple[str, t.Any]]:
        """An account's sweep, once its scan of `[scan_from, scan_to)` is read (and noted)."""
        pending_from = self._pending_seen.get(account.id, scan_to)
        first = account.id in self._first_runs
        return ChangeFeed(self, account, scan_from, min(pending_from, scan_to), first).sweep()


class EventsEndpoint:
    """`/v1/events` of one stream's event types, as an account sees them, as a `Walk` pages
    a list endpoint."""

    BUCKET = "/events"

    def __init__(self, stream: TrackedStream, account: Account) -> None:
        self.stream = stream
        self.account = account

    def fetch_page(self, request: PageRequest) -> Page:
        params: dict[str, t.Any] = {
            "limit": request.limit,
            "created[gte]": request.gte,
            "created[lt]": request.lt,
            "types[]": [*self.stream.event_types, *dict(self.stream.touched_by)],
        }
        if request.after:
            params["starting_after"] = request.after
        body = self.stream.body(self.stream.get(self.BUCKET, params, self.BUCKET, self.account))
        if problem := page_problem(body, request):
            msg = f"GET /events: Stripe sent a list page that breaks its contract: {problem}"
            raise UserError(msg)
        return Page(body["data"], body["has_more"])

    def saturated(self) -> bool:
        return self.account.limiter.saturated(self.BUCKET)


class ChangeFeed:
    """One run's sweep of one stream and account, after its created scan of
    `[scan_from, ...)`, whose oldest object still pending was created at `pending_from`."""

    def __init__(
        self,
        stream: TrackedStream,
        account: Account,
        scan_from: int,
        pending_from: int,
        first: bool = False,
    ) -> None:
        self.stream = stream
        self.account = account
        self.scan_from = scan_from
        self.pending_from = pending_from
        self.first = first  # the account's first run: no events to read (`_first_runs`)

    def sweep(self) -> Iterator[tuple[str, t.Any]]:
        """The re-read objects and deletions (`records`), then the cursors (`state`)."""
        stream = self.stream
        if stream.changes_unannounced:
            yield "state", {PENDING: to_rfc3339(self.pending_from)}
        now = stream.stripe_clock()
        note = stream.account_state(self.account).get(RESYNC)
        if note and not note.get("listed"):  # the scan that re-read it all is in
            yield "state", {RESYNC: {**note, "listed": to_rfc3339(now)}}
        if not stream.event_types or self.first:
            return
        swept = to_unix(stream.account_state(self.account)[SWEPT])
        changes = self.changes(swept - stream.events_lookback, now)
        config = stream.config
        low = to_unix(config["start_date"]) if config.get("start_date") else STRIPE_EPOCH
        high = to_unix(config["end_date"]) if config.get("end_date") else now + 1
        deletions = [
            self.deletion(object_id, change.at, change)
            for object_id, change in changes.items()
            if change.deleted and change.created is not None and low <= change.created < high
        ]
        stale = [
            object_id
            for object_id, change in changes.items()
            if not change.deleted
            and (change.created is None or low <= change.created < min(self.scan_from, high))
        ]
        size = stream.page_size
        for first in range(0, len(deletions), size):
            yield "records", deletions[first : first + size]
        yield from self.reread(stale, now, (low, high))
        stream.logger.info(
            "%s: %d changed and %d deleted object(s) since the last sweep, %d re-read",
            stream._whose(self.account),
            len(changes) - len(deletions),
            len(deletions),
            len(stale),
        )
        yield "state", {SWEPT: to_rfc3339(now)}

    def changes(self, gte: int, lt: int) -> dict[str, Change]:
        """The sweep's events, routed by their object's type, one change per object."""
        stream = self.stream
        walk = Walk(
            EventsEndpoint(stream, self.account),
            gte,
            max(gte, lt),
            slice_seconds=RETENTION,
            page_size=stream.page_size,
            concurrency=stream.concurrency,
            wait=stream._tap.wait_for,
        )
        changes: dict[str, Change] = {}
        touched_by = dict(stream.touched_by)
        for kind, events in walk.run():
            if kind != "records":
                continue
            for event in events:
                obj = (event.get("data") or {}).get("object") or {}
                if field := touched_by.get(event["type"]):
                    if isinstance(touched := obj.get(field), str):
                        changes.setdefault(touched, Change(None, event["created"], False, {}))
                    continue
                if obj.get("object") != stream.object_name or "id" not in obj:
                    continue
                deleted = event["type"].endswith(".deleted") or bool(obj.get("deleted"))
                known = changes.get(obj["id"])
                if known is None or (known.at, known.deleted) < (event["created"], deleted):
                    filtered = {name: obj.get(name) for name in stream.local_filters}
                    created = obj.get("created")
                    changes[obj["id"]] = Change(created, event["created"], deleted, filtered)
        return changes

    def deletion(self, object_id: str, at: int, change: Change | None = None) -> dict:
        """The row of a deleted object: only what a deletion sets, and what the local filters
        read (which a deletion does not change)."""
        row = {"id": object_id, "object": self.stream.object_name, "deleted": True, DELETED_AT: at}
        if change is not None:
            row.update(change.filtered, created=change.created)
        return row

    def reread(
        self, ids: list[str], now: int, scope: tuple[int, int]
    ) -> Iterator[tuple[str, list[dict]]]:
        """Each object by id at the pinned version, `concurrency` requests in flight, in pages
        of `page_size` rows, those created in `scope` only (the touched ones are only known
        then); one that answers `deleted` meanwhile is a deletion as of now."""
        stream = self.stream
        if not ids:
            return
        path = stream.path
        answers: queue.Queue[tuple[str, t.Any]] = queue.Queue()

        def fetch(object_id: str) -> None:
            try:
                response = stream.get(f"{path}/{object_id}", {}, path, self.account)
                answers.put(("object", stream.body(response)))
            except Exception as exc:  # handed to the stream's thread, which raises it
                answers.put(("error", exc))

        pool = ThreadPoolExecutor(max_workers=stream.concurrency)
        try:
            for object_id in ids:
                pool.submit(fetch, object_id)
            page: list[dict] = []
            for _ in ids:
                kind, answer = stream._tap.wait_for(answers)
                if kind == "error":
                    raise answer
                if answer.get("deleted"):
                    page.append(self.deletion(answer["id"], now))
                elif scope[0] <= answer.get("created", scope[0]) < scope[1]:
                    page.append(answer)
                if len(page) == stream.page_size:
                    yield "records", page
                    page = []
            if page:
                yield "records", page
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
