"""The `created` slices of one stream's run: handed out oldest first, sized to the data, and the
bookmark they allow.

Slices are half-open `[gte, lt)` ranges of Unix seconds that never overlap and always cover the
run's window. The bookmark is the start of the oldest slice not yet emitted in full: everything
created before it has been written, whatever order concurrent fetchers finish in.

A walk begins with the window's newest page (`head`), which says how dense history is at its
end; where history begins is found with a few first pages (`probe`), so that empty years cost
a handful of requests. Every slice costs one request more than its objects need (its last,
partial page), so slices are cut, when taken, as wide as the density allows; a fetcher with
nothing left to take steals the older half of the biggest slice still being read, so that one
long slice never serialises a run's tail.
"""

from __future__ import annotations

import heapq
import math
import threading
from dataclasses import dataclass


@dataclass(eq=False)
class Slice:
    #: A split or a steal narrows `gte` in place while the slice is fetched.
    gte: int
    lt: int
    #: Whether its density has been judged (on its first full page) already.
    judged: bool = False
    #: A part of a split: taken as it is, never cut or merged.
    exact: bool = False
    #: Objects read so far, and the id and `created` of the last one: where the cursor stands
    #: (a slice handed back half-read carries it to the next fetcher).
    seen: int = 0
    after: str | None = None
    position: int | None = None
    #: The `created` of the first object read: the density is that of `[position, newest]`.
    newest: int | None = None
    #: Its last page has been read: nothing is left to steal, though the walk's thread has yet
    #: to hand it on (`complete`).
    drained: bool = False
    #: Where history begins may lie inside it (it is cut from what `probe` left unknown): its
    #: first page's density says nothing of what lies below, so it is not split on it.
    floor: bool = False
    #: The part stolen from it last (`steal`): until that has read objects, nothing more is
    #: stolen from this one. An empty part says the density read above the cursor (a burst of
    #: objects, say) is not what lies below: else each steal would halve an empty range.
    stolen: Slice | None = None

    def stealable(self) -> bool:
        return self.stolen is None or self.stolen.seen > 0

    def read(self, count: int, last_id: str, last_created: int, first_created: int) -> None:
        if self.newest is None:
            self.newest = first_created
        self.seen += count
        self.after, self.position = last_id, last_created

    @property
    def fresh(self) -> bool:
        return self.seen == 0

    def objects_left(self) -> float:
        """Estimated from the density read so far: objects between its start and the cursor."""
        if self.drained or self.position is None or self.position <= self.gte:
            return 0.0
        newest = self.lt if self.newest is None else self.newest + 1
        return (self.position - self.gte) * self.seen / max(1, newest - self.position)


class SliceScheduler:
    def __init__(
        self, start: int, end: int, step: int, merge_up_to: int = 0, oldest_first: bool = True
    ) -> None:
        """`step`: the grid slices are cut on; `merge_up_to`: cut as many grid steps at once as
        hold fewer objects than this (by the density known so far); 0 never merges. Slices are
        cut from the waiting ranges only when taken, so memory does not depend on `step`.
        `oldest_first`: whether history may well begin in the window's oldest step (`probe`)."""
        self.start, self.end, self.step = start, end, max(1, step)
        self.merge_up_to = merge_up_to
        self.oldest_first = oldest_first
        self._pending: list[tuple[int, int, Slice]] = []
        self._open: set[Slice] = set()
        self._lock = threading.Lock()
        self._count = 0
        #: The next cut is the first slice, one grid step wide so that the first bookmark comes
        #: early: where history may begin at the window's start.
        self._first_cut = oldest_first
        # Objects and seconds the density is estimated from: the completed slices', and the
        # head's first page (`found_top`).
        self._objects = 0
        self._seconds = 0
        #: Where history may begin, not yet known: `[gte, lt)` of this placeholder (see `probe`).
        self._unknown: Slice | None = None
        self._probing = False
        self._probes = 0
        self._gallop = 1  # merged widths below the newest known objects, for the next probe
        self._bisecting = False
        if end > start:
            self._push(Slice(start, end))

    def _push(self, piece: Slice) -> None:
        self._count += 1
        heapq.heappush(self._pending, (piece.gte, self._count, piece))

    def _bookmark(self) -> int:
        starts = [p.gte for p in self._open] + [entry[0] for entry in self._pending[:1]]
        return min(starts, default=self.end)

    def bookmark(self) -> int:
        """Everything created before it has been emitted, or is known not to exist."""
        with self._lock:
            return self._bookmark()

    def _grid(self, when: int) -> int:
        """The grid edge at or before `when`."""
        return self.start + (when - self.start) // self.step * self.step

    def _merged_width(self) -> int:
        """As many grid steps as together hold fewer than `merge_up_to` objects, by the density
        known so far (one without a density)."""
        if not (self.merge_up_to and self._seconds):
            return self.step
        expected = self.step * self._objects / self._seconds
        if not expected:
            return max(self.step, self.end - self.start)
        return self.step * max(1, math.ceil(self.merge_up_to / expected) - 1)

    def take(self) -> Slice | None:
        """The oldest slice nobody fetches yet, so that the bookmark can move early: a waiting
        range that nobody has read yet is cut (or merged with its fresh neighbours) to the
        width `_merged_width` allows."""
        with self._lock:
            if not self._pending:
                return None
            piece = heapq.heappop(self._pending)[2]
            if piece.fresh and not piece.exact:
                width = self.step if self._first_cut else self._merged_width()
                self._first_cut = False
                cut = min(piece.lt, self._grid(piece.gte) + width)
                if cut <= piece.gte:
                    cut = min(piece.lt, piece.gte + width)
                if piece.lt - cut > width // 2:  # else a sliver would cost a request more
                    self._push(Slice(cut, piece.lt, floor=piece.floor))
                    piece.lt = cut
                while (
                    self._pending
                    and (neighbour := self._pending[0][2]).fresh
                    and not neighbour.exact
                    and neighbour.gte == piece.lt
                    and neighbour.lt - piece.gte <= width
                ):
                    piece.lt = heapq.heappop(self._pending)[2].lt
            self._open.add(piece)
            return piece

    def head(self) -> Slice | None:
        """The whole window as one slice, read from its newest object down, if nothing has
        been taken yet: its first page says where history ends and how dense it is there."""
        with self._lock:
            if len(self._pending) != 1 or self._open or not self._pending[0][2].fresh:
                return None
            piece = heapq.heappop(self._pending)[2]
            self._open.add(piece)
            return piece

    def found_top(self, head: Slice) -> bool:
        """The head's first page says how dense history is at its end. Unless the window is
        one grid step, the head keeps about a merged slice's worth below its cursor and goes
        back to wait (with its cursor), and where history begins below that is found by
        `probe` before it is sliced. Returns whether the head went back."""
        with self._lock:
            assert head.position is not None and head.newest is not None
            self._objects += head.seen
            self._seconds += max(1, head.newest - head.position)
            # At most a merged slice's worth, and never the oldest step: the first bookmark
            # comes after the oldest step is read, not after the head.
            below = max(self.start + self.step, self._grid(head.position - self._merged_width()))
            keep = min(self._grid(head.position), below)
            if keep <= head.gte:
                return False
            self._unknown = Slice(head.gte, keep)
            self._open.add(self._unknown)  # the bookmark waits on it
            self._open.discard(head)
            head.gte = keep
            self._push(head)
            return True

    def probe(self) -> tuple[int, int] | None:
        """`[gte, lt)` to read the first page of (see `probed`), while where history begins is
        not known and no other probe is in flight. First the oldest grid step (`oldest_first`):
        a window that starts where history does needs no more. Then down from the newest known
        objects, one merged slice's width, then two, four...: each step that holds objects is
        sliced at once, so that fetchers have work while the search goes on. Once a step is empty,
        halves of what is still unknown, until that is narrow enough to be read as one
        slice (`_release`: an empty slice costs no more than a probe)."""
        with self._lock:
            unknown = self._unknown
            if unknown is None or self._probing:
                return None
            width = self._merged_width()
            oldest = self.oldest_first and not self._probes
            if not oldest and unknown.lt - unknown.gte <= 4 * width:
                self._release(unknown.gte, unknown.lt)
                return None
            if not self._probes:  # the first bookmark's slice is the probe's: cuts are merged
                self._first_cut = False
            if oldest:
                below = min(unknown.lt, unknown.gte + self.step)
            else:
                below = self._grid(unknown.lt - self._gallop * width)
                if self._bisecting or not unknown.gte < below < unknown.lt:
                    self._bisecting = True
                    below = self._grid((unknown.gte + unknown.lt) // 2)
                    if not unknown.gte < below < unknown.lt:
                        below = (unknown.gte + unknown.lt) // 2
            self._probing = True
            self._probes += 1
            return unknown.gte, below

    def probed(self, piece: Slice, complete: bool) -> None:
        """The first page of `piece`, a `probe`'s range, has been read (`complete`: it was
        the only one). Without objects, history begins above it. Else it becomes a slice of
        its own, its older edge where its objects reach on the grid, to be read on from its
        cursor unless `complete`; and the range between it and the known objects is sliced."""
        with self._lock:
            self._probing = False
            unknown = self._unknown
            assert unknown is not None and unknown.gte == piece.gte and piece.lt <= unknown.lt
            searched = self._probes - self.oldest_first  # probes down from the known objects
            if not piece.seen:
                unknown.gte = piece.lt
                self._bisecting = searched > 0
                if unknown.gte >= unknown.lt:
                    self._open.discard(unknown)
                    self._unknown = None
                return
            if piece.lt < unknown.lt:
                self._push(Slice(piece.lt, unknown.lt))
            if not searched:  # history begins in the oldest step: slice all of it
                unknown.lt = piece.gte
            else:
                self._gallop *= 2
                assert piece.position is not None
                piece.gte = unknown.lt = max(piece.gte, self._grid(piece.position))
            if unknown.lt <= unknown.gte:
                self._open.discard(unknown)
                self._unknown = None
            if complete:
                self._open.add(piece)  # until the walk has handed on its objects
            else:
                self._push(piece)

    def _release(self, gte: int, lt: int) -> None:
        assert self._unknown is not None
        self._open.discard(self._unknown)
        self._unknown = None
        if lt > gte:
            self._push(Slice(gte, lt, floor=True))

    def steal(self, min_objects: float) -> Slice | None:
        """For a fetcher with nothing left to take: the older half of what remains of the
        slice with the most objects left, if that is at least `min_objects`. Its fetcher keeps
        the newer half (dropping what a request already in flight returns from the stolen one)."""
        with self._lock:
            victims = (piece for piece in self._open if piece.stealable())
            victim = max(victims, key=Slice.objects_left, default=None)
            if victim is None or victim.position is None:
                return None
            mid = (victim.gte + victim.position) // 2
            if victim.objects_left() < min_objects or mid <= victim.gte:
                return None
            stolen = victim.stolen = Slice(victim.gte, mid)
            victim.gte = mid
            self._open.add(stolen)
            return stolen

    def finished(self) -> bool:
        """Every slice taken and emitted."""
        with self._lock:
            return not self._pending and not self._open

    def waiting(self) -> int:
        """Slices no fetcher has taken yet."""
        with self._lock:
            return len(self._pending)

    def left(self) -> int:
        """Slices not yet emitted: waiting (a waiting range counts once) or being read."""
        with self._lock:
            return len(self._pending) + len(self._open)

    def holds_bookmark(self, piece: Slice) -> bool:
        """Whether `piece` is the oldest slice not yet emitted: the bookmark waits on it."""
        with self._lock:
            return piece.gte <= self._bookmark()

    def yield_to_older(self, piece: Slice) -> bool:
        """Hands `piece` back, to be resumed at its cursor, when an older slice waits: the
        bookmark waits on the oldest one, so every fetcher should help there first. Resuming
        from the cursor costs no request."""
        with self._lock:
            if not self._pending or self._pending[0][0] >= piece.gte:
                return False
            self._open.discard(piece)
            self._push(piece)
            return True

    def split(self, piece: Slice, oldest: int, parts: int) -> None:
        """The first page of `piece` reached only back to `oldest`: the fetcher keeps
        `[oldest, lt)` (its cursor stays valid there) and `[gte, oldest)` becomes `parts`
        new slices for other fetchers."""
        with self._lock:
            gte = piece.gte
            if oldest <= gte:
                return
            piece.gte = oldest
            step = max(1, -(-(oldest - gte) // parts))
            for start in range(gte, oldest, step):
                self._push(Slice(start, min(start + step, oldest), exact=True))

    def complete(self, piece: Slice) -> int:
        """Marks `piece` emitted and returns the bookmark it allows."""
        with self._lock:
            self._open.discard(piece)
            self._objects += piece.seen
            self._seconds += piece.lt - piece.gte
            return self._bookmark()
