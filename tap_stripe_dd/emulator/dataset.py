"""One data set (the platform's, or a connected account's): ids, order, links, added objects.

Objects are listed newest first by the key (created, index). Object i of the generated range
has key (timeline.created(i), i), which grows with i, so a key range is an index range found by
bisection. Objects added later (`add_objects`) live in a small sorted list merged in.

Objects are built on demand and cached; `prewarm` instead renders every generated object's JSON
up front (in worker processes if there are many), so that serving a page only joins bytes.
"""

from __future__ import annotations

import bisect
import ctypes
import functools
import heapq
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat

from tap_stripe_dd.emulator.keys import IdCodec, Rng, hash64, mix64
from tap_stripe_dd.emulator.links import Links
from tap_stripe_dd.emulator.objects import (
    LINK_WINDOW,
    RESOURCES,
    SOURCE_KINDS,
    Entry,
    Shared,
    charge_profile_number,
)
from tap_stripe_dd.emulator.timeline import Timeline
from tap_stripe_dd.emulator.vocabulary import BUSINESSES

Key = tuple[int, int]  # (created, index); the list endpoint shows the largest first
INFINITY = 1 << 62
LOWEST: Key = (-INFINITY, 0)
HIGHEST: Key = (INFINITY, 0)
PARTNER_SALT = 0x9A27
WIN_SALT = 0x3B1D
WINS = 25  # percent of chargebacks that the merchant wins
DECIDED_AFTER = 30 * 86_400  # how long after a dispute its reinstatement comes, about
DECIDED_FROM = 7 * 86_400  # and at least: evidence comes first
REFUND_WINDOW = 5_000  # objects between a generated charge and its refunds, at most about
RENDER_CHUNK = 1_000  # objects of one resource rendered before the next resource's turn
PARTNERS_CACHED = 8_192  # a render chunk's indexes for each resource, and then some
PARALLEL_FROM = 10_000  # objects per resource from which worker processes pay for their start
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
Settings = tuple[int, str | None, int, int, int]  # seed, account, count, start, end


class Added:
    """Objects added to one resource after start (by add_objects, writes and activity), in key
    order; appending is the common case, as they are mostly created at the clock's now."""

    def __init__(self) -> None:
        self.keys: list[Key] = []
        self.created: dict[int, int] = {}  # index -> created
        self.visible_at: dict[int, float] = {}  # index -> emulated Unix time
        self.lock = threading.Lock()

    def add(self, new: range, created: int, visible_at: float) -> None:
        with self.lock:
            for index in new:
                self.created[index] = created
                self.visible_at[index] = visible_at
                if not self.keys or self.keys[-1] < (created, index):
                    self.keys.append((created, index))
                else:
                    bisect.insort(self.keys, (created, index))

    def between(self, low: Key, high: Key, now: float, descending: bool) -> Iterator[Key]:
        """The visible keys with low < key < high, lazily: a page needs only its first few.
        (Keys are appended, or in rare cases inserted, while this runs: an insert can shift a
        key by one place under a running listing, as a write can race a list on Stripe.)"""
        with self.lock:
            keys = self.keys
            first, stop = bisect.bisect_right(keys, low), bisect.bisect_left(keys, high)
        positions = range(stop - 1, first - 1, -1) if descending else range(first, stop)
        visible_at = self.visible_at
        return (key for key in map(keys.__getitem__, positions) if visible_at[key[1]] <= now)

    def any_between(self, low: Key, high: Key) -> bool:
        with self.lock:
            return bisect.bisect_right(self.keys, low) < bisect.bisect_left(self.keys, high)


class Dataset:
    """The objects one Stripe account has: `count` generated per resource, plus added ones."""

    def __init__(
        self, seed: int, account: str | None, count: int, start: int, end: int, cache_size: int
    ) -> None:
        self.settings: Settings = (seed, account, count, start, end)
        self.key = hash64("dataset", seed, account or "")
        self.count = count
        self.start = start
        self.end = end
        self.business = BUSINESSES[self.key % len(BUSINESSES)]
        self.timeline = Timeline(self.key, count, start, end)
        self._salts = {name: hash64(self.key, name) for name in RESOURCES}
        self._codecs: dict[tuple[str, int], IdCodec] = {}
        self._added = {name: Added() for name in RESOURCES}
        self._lock = threading.Lock()
        self._entries = {
            name: functools.lru_cache(maxsize=cache_size)(functools.partial(self._build, name))
            for name in RESOURCES
        }
        self._rendered: dict[str, list[bytes]] = {name: [] for name in RESOURCES}
        self.profile = functools.lru_cache(maxsize=16_384)(self._make_profile)
        # Each object of each resource asks, and links ask for whole groups: worth keeping.
        self.partner = functools.lru_cache(maxsize=PARTNERS_CACHED)(self._partner)
        self.refund_links = Links(self, "refunds", REFUND_WINDOW)
        self.dispute_links = Links(self, "disputes", LINK_WINDOW)
        # Objects in DECIDED_AFTER, on average: a won dispute's reinstatement is that many
        # balance transactions after its withdrawal (see reversal).
        self.reversal_lag = max(1, count * DECIDED_AFTER // max(1, end - start + 1))

    # Ids -------------------------------------------------------------------------------------

    def _codec(self, prefix: str, length: int) -> IdCodec:
        codec = self._codecs.get((prefix, length))
        if codec is None:
            codec = self._codecs[prefix, length] = IdCodec(prefix, self.key, length)
        return codec

    def id(self, resource: str, index: int) -> str:
        spec = RESOURCES[resource]
        return self._codec(spec.prefix, spec.id_length).encode(index)

    def foreign_id(self, prefix: str, number: int, length: int = 24) -> str:
        """Ids of objects this emulator does not serve (payment intents, bank accounts, ...)."""
        return self._codec(prefix, length).encode(number)

    def index_of(self, resource: str, object_id: str) -> int | None:
        """The index of an existing object of this data set, or None."""
        spec = RESOURCES[resource]
        index = self._codec(spec.prefix, spec.id_length).decode(object_id)
        return index if index is not None and index < self.total(resource) else None

    # Objects ---------------------------------------------------------------------------------

    def total(self, resource: str) -> int:
        return self.count + len(self._added[resource].keys)

    def created(self, resource: str, index: int) -> int:
        if index < self.count:
            return self.timeline.created(index)
        return self._added[resource].created[index]

    def entry(self, resource: str, index: int) -> Entry:
        """Object `index`, built now or (among the last `cache_size` of its resource) before."""
        return self._entries[resource](index)

    def json(self, resource: str, indexes: list[int]) -> list[bytes]:
        """Objects as served: their prewarmed bytes if all are prewarmed, else their entries'."""
        rendered = self._rendered[resource]
        if max(indexes, default=-1) < len(rendered):
            return list(map(rendered.__getitem__, indexes))
        return [self.entry(resource, index).json for index in indexes]

    def _build(self, resource: str, index: int) -> Entry:
        rng = Rng(self._salts[resource] ^ index)
        own, shared = RESOURCES[resource].build(self, index, self.created(resource, index), rng)
        return Entry(own, shared)

    def prewarm(self, jobs: int | None = None) -> None:
        """Renders every generated object now, so that serving one is a list lookup.

        `jobs` forked processes render an index range each (default: one per CPU if there are
        many objects and forking is safe); the bytes are the same whichever process renders them.
        """
        jobs = default_jobs(self.count) if jobs is None else jobs
        cuts = [self.count * part // jobs for part in range(jobs + 1)]
        ranges = (repeat(self.settings), cuts[:-1], cuts[1:])
        if jobs == 1:
            parts = list(map(render, *ranges))
        else:
            fork = multiprocessing.get_context("fork")  # no re-import of __main__, as spawn does
            with ProcessPoolExecutor(
                jobs, fork, initializer=die_with, initargs=(os.getpid(),)
            ) as pool:
                parts = list(pool.map(render, *ranges))
        self._rendered = {
            name: [body for part in parts for body in part[name]] for name in RESOURCES
        }

    def _make_profile(self, resource: str, number: int) -> Shared:
        spec = RESOURCES[resource]
        rng = Rng(self._salts[resource] ^ (number + INFINITY))
        return Shared(spec.object, spec.profile(self, number, rng))

    # Links between resources -----------------------------------------------------------------

    def _partner(self, index: int) -> str | None:
        """Whose balance transaction generated balance transaction `index` is: charge, refund,
        payout or dispute `index` (same second; a dispute's is its funds withdrawn, a
        chargeback's), "dispute_reversals" if it reinstates dispute `index - reversal_lag`'s
        funds (see reversal); None for added objects."""
        if index >= self.count:
            return None
        if index >= self.reversal_lag and self.reversal(index - self.reversal_lag) is not None:
            return "dispute_reversals"
        return self._drawn(index)

    def _drawn(self, index: int) -> str:
        if not index:  # a captured charge first: every generated refund and dispute has one
            return "charges"
        return SOURCE_KINDS.values[
            mix64(self.key ^ PARTNER_SALT ^ index) % len(SOURCE_KINDS.values)
        ]

    def wins(self, dispute: int) -> bool:
        """Whether generated dispute `dispute`, if a chargeback, is won (its reinstatement may
        come after the data set's end, see reversal)."""
        return (
            dispute < self.count
            and self._drawn(dispute) == "disputes"
            and mix64(self.key ^ WIN_SALT ^ dispute) % 100 < WINS
        )

    def reversal(self, dispute: int) -> int | None:
        """The balance transaction reinstating generated dispute `dispute`'s funds, if it was won
        by the data set's end: `dispute + reversal_lag`, taken from the kind drawn for that index.

        A dispute whose own index is taken so (by the dispute `reversal_lag` before it) has no
        withdrawal there, so it is not a chargeback and cannot win. Whether an index is taken
        thus depends on the one `reversal_lag` before it, and so on back while those would win
        too: a short walk (each step has about a 1 in 25 chance), not a scan; the earliest of the
        run wins, the next does not (its index is taken), and so on by turns.
        """
        lag, count, created = self.reversal_lag, self.count, self.timeline.created
        run, index = 0, dispute
        while (
            index >= 0
            and index + lag < count
            and self.wins(index)
            and created(index + lag) - created(index) >= DECIDED_FROM
        ):
            run += 1
            index -= lag
        return dispute + lag if run % 2 else None

    def earlier(self, resource: str, index: int, rng: Rng, window: int) -> int | None:
        """An object of `resource` created up to `window` objects before object `index`.

        Generated objects link to generated ones only, so add_objects never changes them.
        """
        if index < self.count:
            return rng.between(max(0, index - window), index)
        total = self.total(resource)
        return rng.between(max(0, total - window), total - 1) if total else None

    def charge_amount(self, index: int) -> int:
        """A generated charge's amount, from its profile alone (the charge is not built)."""
        rng = Rng(self._salts["charges"] ^ index)
        number = charge_profile_number(self.partner(index) == "charges", rng)
        return self.profile("charges", number).fields["amount"]

    def payout_span(self, payout: int) -> range:
        """The balance transactions an automatic payout paid out: those since the previous one."""
        if payout >= self.count or self.partner(payout) != "payouts":
            return range(0)
        first = payout
        while first > 0 and self.partner(first - 1) != "payouts":
            first -= 1
        return range(first, payout + 1)

    def key_of(self, resource: str, index: int) -> Key:
        return self.created(resource, index), index

    # Listing ---------------------------------------------------------------------------------

    def add(self, resource: str, count: int, created: int, visible_at: float) -> list[int]:
        with self._lock:
            first = self.total(resource)
            new = range(first, first + count)
            self._added[resource].add(new, created, visible_at)
        return list(new)

    def scan(
        self, resource: str, low: Key, high: Key, descending: bool, now: float
    ) -> Iterator[int]:
        """Indexes of the listed objects with low < key < high, in key order."""
        timeline = self.timeline
        first = timeline.first_index_from((low[0], low[1] + 1))
        stop = timeline.first_index_from(high)
        generated = range(stop - 1, first - 1, -1) if descending else range(first, stop)
        added = self._added[resource]
        if not added.any_between(low, high):
            return iter(generated)
        merged = heapq.merge(
            ((timeline.created(i), i) for i in generated),
            added.between(low, high, now, descending),
            reverse=descending,
        )
        return (index for _, index in merged)


def default_jobs(count: int) -> int:
    """One process per CPU for many objects, if this process may fork: only a process without
    other threads can, as a thread's lock held at the fork would stay held in the child; and
    only on Linux, where workers can be made to die with this process (see die_with)."""
    if count < PARALLEL_FROM or threading.active_count() > 1 or sys.platform != "linux":
        return 1
    return os.cpu_count() or 1


def die_with(parent: int) -> None:
    """A worker's start: be killed when the parent dies, say by SIGTERM while prewarming. Else
    the worker, blocked on its result pipe (whose read end the forked workers hold too), would
    keep its memory forever."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl
        os._exit(1)


def render(settings: Settings, first: int, stop: int) -> dict[str, list[bytes]]:
    """The JSON of objects first..stop-1 of each resource of the data set `settings` describe.

    A data set of its own builds them a chunk of each resource in turn, and keeps enough of each
    resource built that links (which reach at most LINK_WINDOW objects back) are cache hits.
    """
    dataset = Dataset(*settings, cache_size=LINK_WINDOW + RENDER_CHUNK)
    bodies: dict[str, list[bytes]] = {name: [] for name in RESOURCES}
    for low in range(first, stop, RENDER_CHUNK):
        chunk = range(low, min(low + RENDER_CHUNK, stop))
        for name, rendered in bodies.items():
            rendered += [dataset.entry(name, index).json for index in chunk]
    return bodies
