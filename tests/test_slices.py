"""Slice bookkeeping and the rate limiter, on their own: the invariants concurrency rests on."""

from __future__ import annotations

import itertools
import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from tap_stripe_dd.ratelimit import RateLimiter
from tap_stripe_dd.slices import Slice, SliceScheduler


@settings(max_examples=300, deadline=None)
@given(
    start=st.integers(0, 1_000),
    length=st.integers(1, 5_000),
    step=st.integers(1, 800),
    merge_up_to=st.integers(0, 50),
    script=st.lists(st.tuples(st.integers(0, 9), st.floats(0, 1), st.integers(1, 6)), max_size=60),
)
def test_slices_cover_the_window_once_and_the_bookmark_never_passes_unfinished_work(
    start, length, step, merge_up_to, script
):
    """Fetchers take, read, split, hand back, steal and complete slices in any order."""
    end = start + length
    scheduler = SliceScheduler(start, end, step, merge_up_to=merge_up_to)
    open_slices, emitted, bookmark = [], [], start

    def pick(where: float) -> Slice:
        return open_slices[int(where * len(open_slices)) % len(open_slices)]

    for choice, where, parts in script:
        if choice < 3 and (piece := scheduler.take()):
            open_slices.append(piece)
        elif choice == 3 and open_slices:
            piece = pick(where)  # a page read: the cursor moves back into the slice
            top = piece.lt - 1 if piece.position is None else piece.position
            position = piece.gte + int(where * (top - piece.gte))
            piece.read(parts, f"ch_{parts}", position, position if piece.newest is None else top)
        elif choice == 4 and open_slices:
            piece = pick(where)
            oldest = piece.gte + int(where * (piece.lt - piece.gte))
            scheduler.split(piece, oldest, parts)
        elif choice == 5 and open_slices:
            piece = pick(where)
            if scheduler.yield_to_older(piece):
                open_slices.remove(piece)
                older = scheduler.take()
                assert older is not None and older.gte < piece.gte, "handed back for nothing"
                open_slices.append(older)
        elif choice == 6 and (stolen := scheduler.steal(min_objects=parts)):
            assert not any(p.gte < stolen.lt and stolen.gte < p.lt for p in open_slices)
            open_slices.append(stolen)
        elif open_slices:
            piece = open_slices.pop(int(where * len(open_slices)) % len(open_slices))
            emitted.append((piece.gte, piece.lt))
            new = scheduler.complete(piece)
            assert new >= bookmark, "the bookmark moved back"
            bookmark = new
            unfinished = [p.gte for p in open_slices]
            assert all(bookmark <= gte for gte in unfinished)
    while piece := scheduler.take():
        open_slices.append(piece)
    for piece in open_slices:
        emitted.append((piece.gte, piece.lt))
        bookmark = scheduler.complete(piece)
    assert bookmark == end and scheduler.finished()
    covered = sorted(emitted)
    assert covered[0][0] == start and covered[-1][1] == end
    for (_, lt), (gte, _) in itertools.pairwise(covered):
        assert lt == gte, "a gap or an overlap between slices"


def test_sparse_slices_merge_once_the_density_is_known_and_a_busy_one_is_stolen_from():
    scheduler = SliceScheduler(0, 1_000, 100, merge_up_to=50)
    first = scheduler.take()
    assert first and (first.gte, first.lt) == (0, 100), "nothing known yet: no merge"
    first.seen, first.position = 10, 0
    scheduler.complete(first)  # 10 objects in 100 s: five 100-second slices hold 50
    merged = scheduler.take()
    assert merged and (merged.gte, merged.lt) == (100, 500)
    merged.seen, merged.position = 20, 300  # 20 objects in its newest 200 s: 20 more to go
    assert scheduler.steal(min_objects=25) is None, "too little left to be worth a request"
    stolen = scheduler.steal(min_objects=10)
    assert stolen and (stolen.gte, stolen.lt) == (100, 200)
    assert (merged.gte, merged.lt) == (200, 500), "the victim keeps the newer half"
    merged.drained = True  # its last page is in: the walk's thread has yet to complete it
    assert scheduler.steal(min_objects=1) is None, "nothing is left in it to steal"


def test_a_slice_is_stolen_from_again_only_once_its_stolen_part_has_read_objects():
    """A burst of objects at the top of a long, empty window (new objects above a scan from the
    oldest pending one) looks dense all the way down: a stolen part that reads nothing leaves
    the slice to be read on alone, not halved request by request; one that reads objects
    proves the density, and the slice is shared further."""
    for found in (0, 100):
        scheduler = SliceScheduler(0, 10**6, 10**6)
        victim = scheduler.take()
        assert victim
        victim.read(100, "txn_100", 999_990, 999_999)  # 100 objects in its newest 10 s
        stolen = scheduler.steal(min_objects=400)
        assert stolen and (stolen.gte, stolen.lt) == (0, 499_995)
        assert scheduler.steal(min_objects=400) is None, "its stolen part has not read yet"
        if found:
            stolen.read(found, "txn_1", 400_000, 499_000)
        stolen.drained = not found
        assert bool(scheduler.steal(min_objects=400)) == bool(found)


def test_a_fetcher_hands_its_slice_back_only_for_an_older_one_and_keeps_its_cursor():
    scheduler = SliceScheduler(0, 300, 100)
    first, second = scheduler.take(), scheduler.take()
    assert first and second
    second.read(25, "ch_2", 150, 199)
    assert not scheduler.yield_to_older(second), "only newer slices wait"
    scheduler.split(first, 80, 2)  # the bookmark's slice turned out dense: two parts wait
    assert scheduler.yield_to_older(second)
    taken = [scheduler.take() for _ in range(3)]
    assert [(p.gte, p.lt, p.after, p.position) for p in taken] == [
        (0, 40, None, None),
        (40, 80, None, None),
        (100, 200, "ch_2", 150),
    ]
    assert scheduler.complete(second) == 0, "the bookmark waits on the older parts"


def test_rate_limiter_holds_an_endpoint_and_the_account_to_their_rates():
    limiter = RateLimiter(per_endpoint=30, per_account=50)
    stamps: dict[str, list[float]] = {"/a": [], "/b": []}

    def hammer(endpoint: str) -> None:
        for _ in range(25):
            limiter.acquire(endpoint)
            stamps[endpoint].append(time.monotonic())

    threads = [threading.Thread(target=hammer, args=(e,)) for e in ("/a", "/a", "/b", "/b")]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    # 100 requests evenly paced at (a little under) 50/s take about two seconds.
    assert elapsed >= (100 - 1) / 50
    for endpoint_stamps in stamps.values():
        in_any_second = max(
            sum(1 for s in endpoint_stamps if t0 <= s < t0 + 1) for t0 in endpoint_stamps
        )
        assert in_any_second <= 30  # never more than the rate in any one-second window


def test_the_endpoint_granted_fewest_goes_first_so_streams_finish_together():
    """Two streams share the account's 50/s; /a starts 0.3 s (about 15 requests) earlier. Taking
    turns as they come, /a would finish about 0.3 s before /b; the endpoint granted fewest
    going first, /b catches up and both finish within a few requests of each other."""
    limiter = RateLimiter(per_endpoint=1000, per_account=50)
    finished: dict[str, float] = {}

    def stream(endpoint: str, delay: float) -> None:
        time.sleep(delay)
        fetchers = [threading.Thread(target=fetch, args=(endpoint,)) for _ in range(2)]
        for fetcher in fetchers:
            fetcher.start()
        for fetcher in fetchers:
            fetcher.join()
        finished[endpoint] = time.monotonic()

    def fetch(endpoint: str) -> None:
        for _ in range(15):
            limiter.acquire(endpoint)

    streams = [threading.Thread(target=stream, args=a) for a in (("/a", 0), ("/b", 0.3))]
    for thread in streams:
        thread.start()
    for thread in streams:
        thread.join()
    assert limiter.granted == {"/a": 30, "/b": 30}
    assert abs(finished["/a"] - finished["/b"]) < 0.15


def test_a_429_pauses_the_whole_endpoint():
    limiter = RateLimiter(per_endpoint=1000, per_account=1000)
    limiter.pause("/a", 0.3)
    began = time.monotonic()
    limiter.acquire("/a")
    assert time.monotonic() - began >= 0.25
    began = time.monotonic()
    limiter.acquire("/b")
    assert time.monotonic() - began < 0.1


def test_slices_are_cut_when_taken_so_memory_does_not_depend_on_the_step():
    """Issue #12: `slice_days` 0.0001 built millions of slices up front (3.5 GB, no output)."""
    scheduler = SliceScheduler(0, 10**6, 1, merge_up_to=100)
    assert scheduler.waiting() == 1
    first = scheduler.take()
    assert first and (first.gte, first.lt) == (0, 1) and scheduler.waiting() == 1


def read_top(piece: Slice, created: list[int], limit: int = 100) -> bool:
    """Reads the first page of `piece` from `created` (sorted): whether there are more."""
    inside = [c for c in created if piece.gte <= c < piece.lt][::-1]
    if inside:
        page = inside[:limit]
        piece.read(len(page), f"ob_{page[-1]}", page[-1], page[0])
    return len(inside) > limit


@settings(max_examples=200, deadline=None)
@given(
    oldest=st.integers(0, 2**30),
    count=st.integers(101, 3_000),
    step=st.integers(1, 10**6),
    oldest_first=st.booleans(),
)
def test_probes_find_where_history_begins_in_few_requests_and_leave_no_gap(
    oldest, count, step, oldest_first
):
    """History from 2011 while objects exist only lately: a handful of first pages find where
    they begin (O(log) of the window), with the oldest step probed first or not, and every
    object stays in exactly one waiting or open slice."""
    end = 2**30 + 10**6
    created = sorted(oldest + (end - 1 - oldest) * i // (count - 1) for i in range(count))
    scheduler = SliceScheduler(0, end, step, merge_up_to=2_500, oldest_first=oldest_first)
    head = scheduler.head()
    assert head and read_top(head, created)
    scheduler.found_top(head)
    probes = 0
    while bounds := scheduler.probe():
        probes += 1
        piece = Slice(*bounds)
        scheduler.probed(piece, complete=not read_top(piece, created))
        assert scheduler.bookmark() <= oldest, "the bookmark passed objects never read"
    assert probes <= 2 * (end // max(step, 1)).bit_length() + 2
    covered = [(p.gte, p.lt) for *_, p in scheduler._pending] + [
        (p.gte, p.lt) for p in scheduler._open
    ]
    for c in created:
        assert sum(gte <= c < lt for gte, lt in covered) == 1, f"object at {c} in no slice or two"
