"""When each object of a data set was created: a pure, non-decreasing function of its index.

Because `created` never decreases with the index, the objects in any `created` range (and the
position of any cursor) are found by bisection instead of a scan, so a data set of a million
objects per endpoint needs no memory. All resources of a data set share one timeline, so that
object i of each resource (a charge and its balance transaction, say) share their second.
"""

from __future__ import annotations

import functools

from tap_stripe_dd.emulator.keys import mix64

CHUNK = 1000  # one burst per this many objects
BURST_MIN, BURST_MAX = 30, 150  # objects created in the same second, e.g. by a batch job
BURST_SALT = 0xB0B5


class Timeline:
    """Spreads `count` objects over [start, end] with jitter, plus a same-second burst per chunk."""

    def __init__(self, key: int, count: int, start: int, end: int) -> None:
        self._key = key
        self.count = count
        self.start = start
        self.end = end
        self._scale = max(count, 1) << 32
        self._span = end - start + 1
        self._chunk = max(1, min(count, CHUNK))
        self._search = functools.lru_cache(maxsize=1_024)(self._bisect)  # a sync's slice bounds

    def created(self, index: int) -> int:
        chunk, offset = divmod(index, self._chunk)
        burst_start, burst_size = self._burst(chunk)
        if burst_start <= offset < burst_start + burst_size:
            index = chunk * self._chunk + burst_start
        return self._spread(index)

    def _spread(self, index: int) -> int:
        """Evenly spread but jittered: index plus a hash fraction, scaled onto the range."""
        position = (index << 32) + (mix64(self._key ^ index) >> 32)
        return self.start + position * self._span // self._scale

    def _burst(self, chunk: int) -> tuple[int, int]:
        """Offset and size of the chunk's burst (which may run past the last object)."""
        bits = mix64(self._key ^ BURST_SALT ^ (chunk << 40))
        size = min(BURST_MIN + bits % (BURST_MAX - BURST_MIN + 1), max(1, self._chunk // 2))
        return (bits >> 16) % (self._chunk - size + 1), size

    def first_index_from(self, key: tuple[int, int]) -> int:
        """The first index whose (created, index) is at least `key`: cursors' bisection."""
        created, index = key
        if (
            0 <= index < self.count
            and created <= self.created(index)
            and (index == 0 or self.created(index - 1) <= created)
        ):
            return index  # a cursor's key, or the one just after it: no search
        return self._search(key)

    def _bisect(self, key: tuple[int, int]) -> int:
        low, high = 0, self.count
        while low < high:
            middle = (low + high) // 2
            if (self.created(middle), middle) < key:
                low = middle + 1
            else:
                high = middle
        return low
