"""A stream's run: every account's `created` window walked (fetching.py, accounts.py), the
records handed on (RECORD messages, or batch files announced first), and each bookmark moved
only after the records it covers. `client.py` is what talks to Stripe; this is what a run does
with what it reads."""

from __future__ import annotations

import threading
import time
import typing as t
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from functools import cached_property

from singer_sdk.helpers._batch import SDKBatchMessage
from singer_sdk.helpers._catalog import pop_deselected_record_properties
from singer_sdk.helpers._util import utc_now
from singer_sdk.mapper import RemoveRecordTransform, SameRecordTransform

from tap_stripe_dd.accounts import Account, AccountEndpoint, AccountWalks, After
from tap_stripe_dd.client import STRIPE_EPOCH, StripeStream, to_unix
from tap_stripe_dd.errors import UserError
from tap_stripe_dd.fetching import AskedAhead, Page, PageRequest, Walk
from tap_stripe_dd.records import DAY, Plan, apply_plan, datetime_plan, to_rfc3339

if t.TYPE_CHECKING:
    from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchConfig
    from singer_sdk.helpers.types import Context


def oldest_first(start: int) -> bool:
    """Whether a window's first probe is its oldest step (`SliceScheduler`): not for one that
    starts at Stripe's opening (no `start_date`), where an account's history hardly begins."""
    return start > STRIPE_EPOCH


class BookmarkedStream(StripeStream):
    """A Stripe list endpoint, synced incrementally on `created` in resumable slices.

    Stripe lists newest first and cannot sort ascending, so the SDK's own bookmark (which only
    moves with sorted records) cannot make a run resumable. Instead the run's window, from the
    bookmark minus `lookback_seconds` (or `start_date`, or 2011) up to the moment the run started
    (or `end_date`), is cut into half-open `created` slices `[gte, lt)` of `slice_days`, walked
    oldest first. Records never move the bookmark; a slice that has been emitted in full does, to
    its end, followed by a STATE message. A run that dies resumes at the first incomplete slice,
    and objects on a slice edge belong to exactly one slice. Each account's window is walked by
    a `fetching.Walk` of its own, whose fetcher threads read slices side by side, never leaving
    a gap.
    """

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
        """No property deselected, no stream map but the SDK's pass-through, unflattened, to
        the tap's own writer (the SDK's test helpers may bring theirs), and no dry run's
        record limit: then a page goes out as the SDK would write its records, in one write,
        without the SDK's per-record loop, walk over deselected properties and message object
        (on large Stripe objects, a sixth of the tap's time, and with many accounts, a tenth)."""
        maps = self.stream_maps
        return (
            hasattr(self._tap.message_writer, "write_records")
            and self.ABORT_AT_RECORD_COUNT is None
            and not self._deselects_properties
            and len(maps) == 1
            and type(maps[0]) is SameRecordTransform
            and not maps[0].flattening_enabled
        )

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

    #: An account's state keys, which a one-account state (before `account_ids`) hands on to
    #: the platform's partition.
    carried_state: t.ClassVar[tuple[str, ...]] = ("replication_key", "replication_key_value")

    def account_state(self, account: Account) -> dict:
        """The state an account's bookmark lives in: its partition with `account_ids`, else
        the stream's own."""
        if not self._tap.directory.partitioned:
            return self.stream_state
        cache = self.__dict__.setdefault("_account_states", {})
        state = cache.get(account.id)
        if state is None:
            state = cache[account.id] = self.get_context_state({"account_id": account.id})
            if not account.connected:  # the platform's goes on from a one-account state
                for key in self.carried_state:
                    if key in self.stream_state and key not in state:
                        state[key] = self.stream_state[key]
        return state

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
        start, bookmark = self._window_start(state)
        if bookmark is not None and bookmark > now:
            msg = (
                f"the state's bookmark for stream '{self.name}' "
                f"({state['replication_key_value']}) is in the future; fix or remove the "
                "state before syncing"
            )
            raise UserError(msg)
        return start, max(start, end)

    def _window_start(self, state: dict) -> tuple[int, int | None]:
        """Where a state's window starts, which Stripe's clock does not decide, and its
        bookmark (Unix seconds), if any."""
        start = (
            to_unix(self.config["start_date"]) if self.config.get("start_date") else STRIPE_EPOCH
        )
        bookmark = state.get("replication_key_value")
        if not bookmark:
            return start, None
        try:
            bookmark_ts = to_unix(str(bookmark))
        except ValueError:
            msg = f"the state's bookmark for '{self.name}' ({bookmark!r}) is not a date-time"
            raise UserError(msg) from None
        lookback = int(self.config.get("lookback_seconds", 600))
        return max(start, bookmark_ts - lookback), bookmark_ts

    def ask_ahead(self) -> None:
        """A one-account run asks for its window's first pages while the run's clock (its
        end) is read: a round trip or two less before the window is sliced. The newest page
        is asked for without an upper bound but `end_date` (what it lists from the end on is
        dropped, `Walk`). A first run (no bookmark) over more than two slices' steps (by this
        machine's clock, which decides only this) probes its oldest step next (`oldest_first`):
        that is asked for too. A later run's window is the bookmark's few minutes, read by its
        head."""
        directory = self._tap.directory
        if directory.partitioned:
            return
        try:
            start, bookmark = self._window_start(self.stream_state)
            start = self._scan_start(self.stream_state, start)
        except (UserError, ValueError):  # said when the window is set (`sync_window`)
            return
        end_date = self.config.get("end_date")
        end = to_unix(end_date) if end_date else None
        head = self._ask(PageRequest(start, end, self.page_size))
        oldest = None
        step = self.slice_seconds
        if bookmark is None and oldest_first(start) and (end or time.time()) - start > 2 * step:
            oldest = (start + step, self._ask(PageRequest(start, start + step, self.page_size)))
        self._asked_ahead = AskedAhead(start, head, oldest)

    def _scan_start(self, state: dict, start: int) -> int:
        """Where a state's scan starts, its window starting at `start` (see changes.py)."""
        return start

    def _ask(self, request: PageRequest) -> Future[Page]:
        """`request`'s page, from a thread of its own: its failure is the request's own."""
        page: Future[Page] = Future()

        def fetch() -> None:
            try:
                page.set_result(self.fetch_page(request, self._tap.directory.home))
            except Exception as exc:  # raised where the walk reads it
                page.set_exception(exc)

        threading.Thread(target=fetch, daemon=True).start()
        return page

    @property
    def concurrency(self) -> int:
        return int(self.config.get("max_concurrency") or self._tap.default_concurrency)

    @property
    def page_size(self) -> int:
        return int(self.config.get("page_size", 100))

    @property
    def slice_seconds(self) -> int:
        return int(float(self.config.get("slice_days", 30)) * DAY)

    #: `ask_ahead`'s pages, for the first walk.
    _asked_ahead: AskedAhead | None = None

    def _walk(self, endpoint: AccountEndpoint, start: int, end: int, concurrency: int) -> Walk:
        ahead, self._asked_ahead = self._asked_ahead, None
        return Walk(
            endpoint,
            start,
            end,
            slice_seconds=self.slice_seconds,
            page_size=self.page_size,
            concurrency=concurrency,
            wait=self._tap.wait_for,
            ahead=ahead,
            oldest_first=oldest_first(start),
        )

    #: What runs for an account once its window is read (the change feed's sweep, changes.py).
    after_scan: After | None = None

    def _walk_events(self) -> Iterator[tuple[str, Account, t.Any]]:
        """The pages (`records`, each record with its `account_id`) of every account, each
        bookmark an account's walk allows that is past its state's, and what `after_scan`
        yields for an account once its window is read."""
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
            after=self.after_scan,
        )
        progress = self._tap.progress
        progress.count_slices(self.name, walks.slices_left)
        for kind, account, payload in walks.run():
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
        """Records go out a page at a time (`_records_go_out_as_they_are`), else through the
        SDK's loop; the bookmark moves once they are written."""
        bookmarks = Bookmarks(self)
        pages = self._records_go_out_as_they_are
        with self.get_record_counter() as counter:
            for kind, account, payload in self._walk_events():
                if kind != "records":
                    self._write_progress(kind, account, payload, bookmarks)
                elif pages:
                    rows = [row for row in map(self.post_process, payload) if row is not None]
                    self._tap.message_writer.write_records(self.name, rows, utc_now())
                    self.state_manager.is_flushed = False
                    counter.increment(len(rows))
                else:
                    yield from payload
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
                if not bookmarks.due():
                    bookmarks.add(kind, account, payload)
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
        self, kind: str, account: Account, payload: t.Any, bookmarks: Bookmarks
    ) -> None:
        """After the records it covers: an account's `bookmark` (everything it created before
        `payload` has been written) or its change feed `state` (its cursors, changes.py),
        sent when due (`Bookmarks`)."""
        bookmarks.add(kind, account, payload)
        if bookmarks.due():
            bookmarks.write()


class Bookmarks:
    """Bookmarks the walks allowed, written to the state (and a STATE message sent) at once
    for one account, at most every `Directory.state_seconds` for many: each STATE holds every
    partition (with 20 accounts, one at each account's change-feed sweep cost a tenth of the
    run's time)."""

    def __init__(self, stream: BookmarkedStream) -> None:
        self.stream = stream
        #: Per account, what goes into its state with the next STATE: its bookmark, its
        #: change feed's cursors. Not before: another stream's STATE holds this one's state
        #: too, and may leave before this one's records (a batch file not yet announced).
        self.pending: dict[str, tuple[Account, dict]] = {}
        self.every = stream._tap.directory.state_seconds
        self.written = time.monotonic()

    def add(self, kind: str, account: Account, payload: t.Any) -> None:
        """A `bookmark` (everything `account` created before `payload` has been handed on)
        or the `state` of its change feed (a dict)."""
        if kind == "bookmark":
            stream = self.stream
            payload = {
                "replication_key": stream.replication_key,
                "replication_key_value": to_rfc3339(payload),
            }
        _, pending = self.pending.get(account.id, (account, {}))
        self.pending[account.id] = (account, pending | payload)

    def due(self) -> bool:
        return time.monotonic() - self.written >= self.every

    def write(self) -> None:
        """What is pending, in a STATE message if anything is."""
        stream = self.stream
        for account, changes in self.pending.values():
            stream.account_state(account).update(changes)
        if self.pending:
            stream.state_manager.is_flushed = False
            stream._write_state_message()
        self.pending.clear()
        self.written = time.monotonic()
