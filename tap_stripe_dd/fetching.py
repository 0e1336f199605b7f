"""The fetch loop of one walk: fetcher threads page through `created` slices side by side, and
the walk's own thread hands on their records and the bookmark that the completed prefix allows.

A walk knows nothing of HTTP or of Singer. It is driven through a narrow interface:

- an `Endpoint` fetches one page of a slice (`fetch_page`) and says whether its requests queue
  for the rate limit (`saturated`), so that the walk does not add requests that would only wait;
- `Walk.run()` yields `("records", page)` for every page read, and `("bookmark", end)` each time
  everything created before `end` has been handed on.

A stream of one account is one walk; another account, or another feed that lists newest first
with `created` filters (Stripe's events), is another walk over its own `Endpoint`, with its own
bookmark and its own rate-limit scope.
"""

from __future__ import annotations

import queue
import threading
import time
import typing as t
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass

from tap_stripe_dd.slices import Slice, SliceScheduler

# Sparse slices are merged up to this many pages: each slice costs one partial page, so this
# keeps that overhead near 4%, while a kill still re-reads little (see SliceScheduler).
MERGE_PAGES = 25
# A fetcher with nothing to take splits another's slice when that has this many pages left.
STEAL_PAGES = 4
# The slice the bookmark waits on is shared in parts of at least this many pages while the
# endpoint's requests queue for the rate limit (else of two).
SATURATED_PART_PAGES = 8
IDLE_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class PageRequest:
    """One page of the objects created in `[gte, lt)`, newest first, `limit` of them at most;
    after the object `after` (created at `before`) when the slice has been read that far.
    `lt` None: no upper bound (a window's head asked for before its end is known)."""

    gte: int
    lt: int | None
    limit: int
    after: str | None = None
    before: int | None = None


class Page(t.NamedTuple):
    records: list[dict]
    has_more: bool


@dataclass
class AskedAhead:
    """The first pages of a walk from `start`, asked for before it began (while the run's
    clock, its end, was read): the window's newest (`head`, without an upper bound) and, for a
    long window, the first page of its oldest step (`oldest`: its end, and the page). A failure
    is the request's own, raised where the walk reads it."""

    start: int
    head: Future[Page] | None
    oldest: tuple[int, Future[Page]] | None = None


class Endpoint(t.Protocol):
    """What a walk needs of the API: one page at a time, and whether requests queue."""

    def fetch_page(self, request: PageRequest) -> Page: ...

    def saturated(self) -> bool: ...


class Channel:
    """Fetchers to the walk's thread: bounded, so memory stays flat, and closed by the reader
    when it stops, so that no fetcher waits forever on a reader that has gone. A full channel's
    senders sleep until the reader takes an item or closes it: hundreds of them cost nothing."""

    def __init__(self, size: int) -> None:
        self.queue: queue.Queue[tuple[str, t.Any, t.Any]] = queue.Queue(maxsize=size)
        self.closed = threading.Event()

    def send(self, item: tuple[str, t.Any, t.Any]) -> bool:
        """Whether `item` was queued (False: the reader has gone). As `Queue.put` does, by the
        hooks `queue` offers for that, but also woken by `close`."""
        channel = self.queue
        with channel.not_full:
            while channel._qsize() >= channel.maxsize and not self.closed.is_set():
                channel.not_full.wait()
            if self.closed.is_set():
                return False
            channel._put(item)
            channel.unfinished_tasks += 1
            channel.not_empty.notify()
            return True

    def close(self) -> None:
        """The reader stops: every sender returns."""
        with self.queue.not_full:
            self.closed.set()
            self.queue.not_full.notify_all()


class Walk:
    """The objects created in `[start, end)` of one endpoint, read by `concurrency` fetchers.

    Slices (`slices.py`) are taken oldest first, sparse ones merged and dense ones shared: a
    dense slice is split on its first page, an idle fetcher steals the older half of the
    busiest one, and a fetcher hands its slice back at a page edge when an older one waits,
    so that the bookmark moves early and never leaves a gap.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        start: int,
        end: int,
        *,
        slice_seconds: int,
        page_size: int,
        concurrency: int,
        wait: Callable[[queue.Queue], t.Any] = queue.Queue.get,
        ahead: AskedAhead | None = None,
        oldest_first: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.page_size = page_size
        self.concurrency = concurrency
        self.wait = wait
        self.head: Slice | None = None
        self.ahead = ahead if ahead is not None and ahead.start == start else None
        self.scheduler = SliceScheduler(
            start,
            end,
            max(1, slice_seconds),
            merge_up_to=MERGE_PAGES * page_size,
            oldest_first=oldest_first,
        )

    def run(self) -> Iterator[tuple[str, t.Any]]:
        """Pages (`records`) in the order fetchers read them and, each time the completed
        prefix of slices grows, its end (`bookmark`)."""
        # A page from each fetcher: the reader sets the pace, and each page waiting is ~1 MB of
        # decoded objects (the fetchers hold one each too, and the account's walks another).
        channel = Channel(size=self.concurrency)
        for _ in range(self.concurrency):
            threading.Thread(target=self._fetch, args=(channel,), daemon=True).start()
        running = self.concurrency
        try:
            while running:
                kind, piece, payload = self.wait(channel.queue)
                if kind == "records":
                    yield kind, payload
                elif kind == "done":
                    yield "bookmark", self.scheduler.complete(piece)
                elif kind == "probed":
                    yield "bookmark", self.scheduler.bookmark()
                elif kind == "error":
                    raise payload
                else:
                    running -= 1
        finally:
            channel.close()

    def _fetch(self, channel: Channel) -> None:
        """One fetcher: pages through slice after slice until the walk's are all emitted."""
        try:
            while task := self._next_task(channel):
                if isinstance(task, Slice):
                    if not self._fetch_slice(task, channel):
                        return
                elif not self._probe(*task, channel):
                    return
        except Exception as exc:  # handed to the walk's thread, which raises it
            channel.send(("error", None, exc))
        finally:
            channel.send(("exit", None, None))

    def _next_task(self, channel: Channel) -> Slice | tuple[int, int] | None:
        """The whole window, read from the top, first; then a probe for where history begins
        while that is not known; the oldest waiting slice; else, unless the endpoint's requests
        already queue for the rate limit, the older half of the busiest one; else wait."""
        scheduler = self.scheduler
        steal_from = STEAL_PAGES * self.page_size
        while not channel.closed.is_set():
            if piece := scheduler.head():
                self.head = piece
                return piece
            if bounds := scheduler.probe():
                return bounds
            if piece := scheduler.take():
                return piece
            if not self.endpoint.saturated() and (piece := scheduler.steal(steal_from)):
                return piece
            if scheduler.finished():
                return None
            time.sleep(IDLE_POLL_SECONDS)
        return None

    def _fetch_slice(self, piece: Slice, channel: Channel) -> bool:
        """Sends the slice's pages, and `done` once it is complete, unless an older slice is
        waiting: then the slice goes back, at a page edge, for the next free fetcher. Returns
        False when the walk has stopped listening."""
        while True:
            request = PageRequest(piece.gte, piece.lt, self.page_size, piece.after, piece.position)
            page = self._head_page(request) if piece is self.head else None
            page = page or self.endpoint.fetch_page(request)
            records = page.records
            if records:
                last = records[-1]
                piece.read(len(records), str(last["id"]), last["created"], records[0]["created"])
                if last["created"] < piece.gte:  # stolen from while the page was in flight
                    records = [r for r in records if r["created"] >= piece.gte]
            if not page.has_more:
                piece.drained = True
                return channel.send(("records", piece, records)) and channel.send(
                    ("done", piece, None)
                )
            if piece is self.head and not piece.judged and self.scheduler.found_top(piece):
                # Where history ends, and how dense it is there: the head waits while where
                # it begins is found.
                piece.judged = True
                return channel.send(("records", piece, records))
            if not piece.judged and self.concurrency > 1 and not piece.floor:
                self._split_if_dense(piece)
            piece.judged = True
            if not channel.send(("records", piece, records)):
                return False
            if self.scheduler.yield_to_older(piece):
                return True

    def _head_page(self, request: PageRequest) -> Page | None:
        """The head asked for ahead, once, as the page `request` (the head's first) would be:
        without what it lists from the window's end on. None if there is none, or if all it
        lists lies beyond the end (then the head is asked for again)."""
        ahead = self.ahead
        if ahead is None or ahead.head is None or request.after is not None:
            return None
        page, ahead.head = ahead.head.result(), None  # once: the head reads on by itself
        if not page.records:  # nothing from `gte` on: nothing before the end either
            return page
        if page.records[-1]["created"] >= request.lt:
            return None
        return Page([r for r in page.records if r["created"] < request.lt], page.has_more)

    def _probe(self, gte: int, lt: int, channel: Channel) -> bool:
        """The first page of `[gte, lt)`, where history may begin: without objects, it does
        not; with some, they are handed on, and the range is a slice (see `probed`)."""
        piece = Slice(gte, lt)
        oldest = self.ahead and self.ahead.oldest
        if oldest and oldest[0] == lt and gte == self.ahead.start:
            self.ahead.oldest = None
            page = oldest[1].result()
        else:
            page = self.endpoint.fetch_page(PageRequest(gte, lt, self.page_size))
        records = page.records
        if records:
            last = records[-1]
            piece.read(len(records), str(last["id"]), last["created"], records[0]["created"])
        piece.drained = not page.has_more
        self.scheduler.probed(piece, complete=piece.drained)
        if not records:
            return channel.send(("probed", None, None))
        return channel.send(("records", piece, records)) and (
            page.has_more or channel.send(("done", piece, None))
        )

    def _split_if_dense(self, piece: Slice) -> None:
        """A first page that spans little of its slice means many pages to come: share them,
        but only with fetchers that would otherwise run out of slices, and not while requests
        queue for the rate limit anyway, since every extra slice costs a request (a partial
        last page); and always the slice the bookmark waits on, whose parts the other fetchers
        then take at their next page edge (`yield_to_older`), so that the bookmark moves after
        about one slice's pages, not one slice per fetcher (in parts of `SATURATED_PART_PAGES`
        while requests queue: more parts would not make it faster)."""
        scheduler = self.scheduler
        pages_left = piece.objects_left() / self.page_size
        saturated = self.endpoint.saturated()
        if scheduler.holds_bookmark(piece):
            idle = self.concurrency
        elif saturated:
            return
        else:
            idle = self.concurrency - scheduler.waiting()
        parts = min(int(pages_left // (SATURATED_PART_PAGES if saturated else 2)), idle)
        if parts >= 2 and piece.position is not None:
            scheduler.split(piece, piece.position, parts)
