"""The `created` slices of one stream's run: handed out oldest first, split when dense, and the
bookmark they allow.

Slices are half-open `[gte, lt)` ranges of Unix seconds that never overlap and always cover the
run's window. The bookmark is the start of the oldest slice not yet emitted in full: everything
created before it has been written, whatever order concurrent fetchers finish in.
"""

from __future__ import annotations

import heapq
import threading
from dataclasses import dataclass, field


@dataclass(eq=False)
class Slice:
    gte: int
    lt: int
    #: The request parameters while the slice is fetched: a split narrows `gte` in place, and a
    #: slice handed back half-read carries its cursor (`after`) to the next fetcher.
    params: dict[str, int | str] = field(init=False)
    #: Whether its density has been judged (on its first full page) already.
    judged: bool = False

    def __post_init__(self) -> None:
        self.params = {"gte": self.gte, "lt": self.lt}


class SliceScheduler:
    def __init__(self, start: int, end: int, step: int) -> None:
        self.end = end
        self._pending: list[tuple[int, int, Slice]] = []
        self._open: set[Slice] = set()
        self._lock = threading.Lock()
        self._count = 0
        for gte in range(start, end, step):
            self._push(Slice(gte, min(gte + step, end)))

    def _push(self, piece: Slice) -> None:
        self._count += 1
        heapq.heappush(self._pending, (piece.gte, self._count, piece))

    def take(self) -> Slice | None:
        """The oldest slice nobody fetches yet, so that the bookmark can move early."""
        with self._lock:
            if not self._pending:
                return None
            piece = heapq.heappop(self._pending)[2]
            self._open.add(piece)
            return piece

    def waiting(self) -> int:
        """Slices no fetcher has taken yet."""
        with self._lock:
            return len(self._pending)

    def holds_bookmark(self, piece: Slice) -> bool:
        """Whether `piece` is the oldest slice not yet emitted: the bookmark waits on it."""
        with self._lock:
            starts = [p.gte for p in self._open] + [entry[0] for entry in self._pending[:1]]
            return piece.gte <= min(starts)

    def yield_to_older(self, piece: Slice, cursor: str) -> bool:
        """Hands `piece` back, to be resumed after `cursor`, when an older slice waits: the
        bookmark waits on the oldest one, so every fetcher should help there first. Resuming
        from the cursor costs no request."""
        with self._lock:
            if not self._pending or self._pending[0][0] >= piece.gte:
                return False
            piece.params["after"] = cursor
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
            piece.gte = piece.params["gte"] = oldest
            step = max(1, -(-(oldest - gte) // parts))
            for start in range(gte, oldest, step):
                self._push(Slice(start, min(start + step, oldest)))

    def complete(self, piece: Slice) -> int:
        """Marks `piece` emitted and returns the bookmark it allows."""
        with self._lock:
            self._open.discard(piece)
            starts = [p.gte for p in self._open] + [entry[0] for entry in self._pending[:1]]
            return min(starts, default=self.end)
