"""The `created` slices of one stream's run: handed out oldest first, sized to the data, and the
bookmark they allow.

Slices are half-open `[gte, lt)` ranges of Unix seconds that never overlap and always cover the
run's window. The bookmark is the start of the oldest slice not yet emitted in full: everything
created before it has been written, whatever order concurrent fetchers finish in.

Every slice costs one request more than its objects need (its last, partial page), so sparse
slices are merged once the density is known; a fetcher with nothing left to take steals the
older half of the biggest slice still being read, so that one long slice never serialises a
run's tail.
"""

from __future__ import annotations

import heapq
import threading
from dataclasses import dataclass


@dataclass(eq=False)
class Slice:
    #: A split or a steal narrows `gte` in place while the slice is fetched.
    gte: int
    lt: int
    #: Whether its density has been judged (on its first full page) already.
    judged: bool = False
    #: Objects read so far, and the id and `created` of the last one: where the cursor stands
    #: (a slice handed back half-read carries it to the next fetcher).
    seen: int = 0
    after: str | None = None
    position: int | None = None

    def read(self, count: int, last_id: str, last_created: int) -> None:
        self.seen += count
        self.after, self.position = last_id, last_created

    @property
    def fresh(self) -> bool:
        return self.seen == 0

    def objects_left(self) -> float:
        """Estimated from the density read so far: objects between its start and the cursor."""
        if self.position is None or self.position <= self.gte:
            return 0.0
        return (self.position - self.gte) * self.seen / max(1, self.lt - self.position)


class SliceScheduler:
    def __init__(self, start: int, end: int, step: int, merge_up_to: int = 0) -> None:
        """`merge_up_to`: merge adjacent fresh slices while they hold fewer objects than this
        (estimated from the slices completed so far); 0 never merges."""
        self.end = end
        self.merge_up_to = merge_up_to
        self._pending: list[tuple[int, int, Slice]] = []
        self._open: set[Slice] = set()
        self._lock = threading.Lock()
        self._count = 0
        self._objects = 0  # objects and seconds of the completed slices: the density so far
        self._seconds = 0
        for gte in range(start, end, step):
            self._push(Slice(gte, min(gte + step, end)))

    def _push(self, piece: Slice) -> None:
        self._count += 1
        heapq.heappush(self._pending, (piece.gte, self._count, piece))

    def _bookmark(self) -> int:
        starts = [p.gte for p in self._open] + [entry[0] for entry in self._pending[:1]]
        return min(starts, default=self.end)

    def take(self) -> Slice | None:
        """The oldest slice nobody fetches yet, so that the bookmark can move early; merged
        with its fresh neighbours while together they stay sparse."""
        with self._lock:
            if not self._pending:
                return None
            piece = heapq.heappop(self._pending)[2]
            while piece.fresh and self._pending and self._mergeable(piece, self._pending[0][2]):
                piece.lt = heapq.heappop(self._pending)[2].lt
            self._open.add(piece)
            return piece

    def _mergeable(self, piece: Slice, neighbour: Slice) -> bool:
        if not (neighbour.fresh and neighbour.gte == piece.lt and self._seconds):
            return False
        expected = (neighbour.lt - piece.gte) * self._objects / self._seconds
        return expected < self.merge_up_to

    def steal(self, min_objects: float) -> Slice | None:
        """For a fetcher with nothing left to take: the older half of what remains of the
        slice with the most objects left, if that is at least `min_objects`. Its fetcher keeps
        the newer half (dropping what a request already in flight returns from the stolen one)."""
        with self._lock:
            victim = max(self._open, key=Slice.objects_left, default=None)
            if victim is None or victim.position is None:
                return None
            mid = (victim.gte + victim.position) // 2
            if victim.objects_left() < min_objects or mid <= victim.gte:
                return None
            stolen = Slice(victim.gte, mid)
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
                self._push(Slice(start, min(start + step, oldest)))

    def complete(self, piece: Slice) -> int:
        """Marks `piece` emitted and returns the bookmark it allows."""
        with self._lock:
            self._open.discard(piece)
            self._objects += piece.seen
            self._seconds += piece.lt - piece.gte
            return self._bookmark()
