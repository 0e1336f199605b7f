"""One living account: its generated ("born") objects, what has changed since, its events.

Born objects stay lazy (built from their index when asked for, see dataset.py). Every change
puts the object's new state in an overlay (resource -> index -> object); an object is never
mutated, only replaced, so an event can keep the object it carries without copying it.

Changes that happen by themselves (lifecycles, background activity) are actions on a heap,
keyed by (emulated time, sequence). `catch_up(now)` runs every action due by `now` in that
order before any request is answered, so the history is the same however the clock got
there (by itself, or in one `advance` of a month): same seed, same history.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import heapq
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tap_stripe_dd.emulator.dataset import Dataset
from tap_stripe_dd.emulator.events import Event, EventLog
from tap_stripe_dd.emulator.keys import Rng, base62, hash64, mix64
from tap_stripe_dd.emulator.objects import RESOURCES
from tap_stripe_dd.emulator.versions import SUBLIST_LIMIT, Obj, canonical, render, sublist

TEMPLATES = 256  # born objects that new objects start from
PREFIXES = {spec.prefix: name for name, spec in RESOURCES.items()}
compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
Action = Callable[..., None]
ACTIONS: dict[str, Action] = {}  # name -> what it does; filled by lifecycles.py and activity.py


def action(function: Action) -> Action:
    """Registers a function that the heap can run as `state.schedule(t, name, ...)`."""
    ACTIONS[function.__name__] = function
    return function


@contextlib.contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Actions make many small objects without cycles: the cycle collector would scan the
    growing account again and again (two thirds of a month of activity's catch-up) for none."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class State:
    def __init__(self, dataset: Dataset, version: str) -> None:
        self.dataset = dataset
        self.version = version
        self.overlay: dict[str, dict[int, Obj]] = {name: {} for name in RESOURCES}
        self._rendered: dict[tuple[str, int], bytes] = {}  # overlay objects' canonical JSON
        self.deleted: dict[int, int] = {}  # customer index -> when
        self.refunds: dict[int, list[int]] = {}  # charge -> refunds made since start, oldest first
        self.log = EventLog(hash64("events", dataset.key), version, self.born_object)
        self.lock = threading.RLock()
        self._heap: list[tuple[int, int, str, tuple[Any, ...]]] = []
        self._sequence = 0
        self.processed = -(1 << 62)  # every action due by this time has run
        self._writes = 0
        self._templates: dict[tuple[str, int], Obj] = {}
        self._born: tuple[int, int] | None = None  # (time, born objects created by then)

    # Reading ---------------------------------------------------------------------------------

    def get(self, resource: str, index: int) -> Obj:
        """The object as it is now (a dict never to be changed in place)."""
        obj = self.overlay[resource].get(index)
        if obj is None:
            (body,) = self.dataset.json(resource, [index])
            obj = json.loads(body)
        return obj

    def born_object(self, resource: str, index: int) -> tuple[Obj, list[Obj]]:
        """A born object as generated, with (a charge) its born refunds, newest first."""
        refunds = self.dataset.refund_links.of(index) if resource == "charges" else ()
        bodies = self.dataset.json(resource, [index]) + self.dataset.json("refunds", refunds[::-1])
        obj, *born_refunds = map(json.loads, bodies)
        return obj, born_refunds

    def find(self, object_id: str) -> tuple[str, int] | None:
        resource = PREFIXES.get(object_id.partition("_")[0])
        if resource is None:
            return None
        index = self.dataset.index_of(resource, object_id)
        return None if index is None else (resource, index)

    def field(self, resource: str, index: int) -> Callable[[str], Any]:
        """A getter of the object's fields as they are now, cheap for unchanged objects."""
        obj = self.overlay[resource].get(index)
        return self.dataset.entry(resource, index).get if obj is None else obj.get

    def refund_indexes(self, charge: int) -> list[int]:
        """A charge's refunds, newest first (as listed: activity that ran before the clock's
        start made some of them among the born ones)."""
        born, made = self.dataset.refund_links.of(charge), self.refunds.get(charge)
        if not made:
            return born[::-1]
        return sorted((*born, *made), key=functools.partial(self.dataset.key_of, "refunds"))[::-1]

    def refunds_of(self, charge_id: str) -> list[Obj]:
        """A charge's refunds as they are now, newest first."""
        found = self.find(charge_id)
        indexes = self.refund_indexes(found[1]) if found and found[0] == "charges" else ()
        return [self.get("refunds", index) for index in indexes]

    def born_by(self, t: int) -> int:
        """How many born objects (of each resource: they share a timeline) exist at `t`. Acts
        ask in time order, so a cursor that only moves forward answers without a search."""
        if self._born is None or t < self._born[0]:
            count = self.dataset.timeline.first_index_from((t + 1, -1))
            self._born = (t, count)
            return count
        count = self._born[1]
        created, total = self.dataset.timeline.created, self.dataset.count
        while count < total and created(count) <= t:
            count += 1
        self._born = (t, count)
        return count

    def json(self, resource: str, indexes: Sequence[int], version: str) -> list[bytes]:
        """Objects as a list or retrieve without expansions renders them in `version`."""
        overlay = self.overlay[resource]
        if canonical(version) and not any(index in overlay for index in indexes):
            return self.dataset.json(resource, list(indexes))
        if canonical(version):
            return [self.canonical_json(resource, index) for index in indexes]
        return [self.old_json(resource, index, version) for index in indexes]

    def old_json(self, resource: str, index: int, version: str) -> bytes:
        """An object in a version before the cut-off. An unchanged charge without 3-D Secure
        differs from its canonical bytes only by its `refunds` list at the end (where render()
        puts it too): spliced from its refunds' bytes, so that an unversioned walk of born
        charges stays about as fast as a pinned one."""
        if resource == "charges" and index not in self.overlay[resource]:
            body = self.dataset.json(resource, [index])[0]
            if b'"three_d_secure":{' not in body:
                refunds = self.refund_indexes(index)
                envelope = compact(sublist(self.refunds_url(index), [], len(refunds))).encode()
                items = b",".join(self.json("refunds", refunds[:SUBLIST_LIMIT], version))
                listed = envelope.replace(b'"data":[]', b'"data":[' + items + b"]", 1)
                return b"".join((body[:-1], b',"refunds":', listed, b"}"))
        return compact(self.render(resource, index, version)).encode()

    def refunds_url(self, charge: int) -> str:
        return f"/v1/charges/{self.dataset.id('charges', charge)}/refunds"

    def canonical_json(self, resource: str, index: int) -> bytes:
        obj = self.overlay[resource].get(index)
        if obj is None:
            return self.dataset.json(resource, [index])[0]
        body = self._rendered.get((resource, index))
        if body is None:
            body = self._rendered[resource, index] = compact(obj).encode()
        return body

    def prewarm(self) -> None:
        """Renders every changed object's canonical JSON now (see Dataset.prewarm)."""
        for resource, overlay in self.overlay.items():
            for index in list(overlay):
                self.canonical_json(resource, index)

    def render(self, resource: str, index: int, version: str) -> Obj:
        return render(resource, self.get(resource, index), version, self.refunds_of)

    # Changing --------------------------------------------------------------------------------

    def put(self, resource: str, index: int, obj: Obj) -> None:
        self.overlay[resource][index] = obj
        self._rendered.pop((resource, index), None)

    def emit(
        self, t: int, kind: str, resource: str, obj: Obj, previous: Obj | None, request: str | None
    ) -> None:
        refunds = self.refunds_of(obj["id"]) if resource == "charges" else ()
        self.log.record(Event(0, t, kind, resource, obj, previous, request, refunds))

    def emit_born(self, t: int, kind: str, resource: str, index: int) -> None:
        """An unchanged born object's creation event: the object is read when it is served."""
        self.log.record(Event(0, t, kind, resource, None, None, None, born=index))

    def create(
        self,
        t: int,
        resource: str,
        fields: Obj | Callable[[Obj], Obj],
        kinds: Sequence[str],
        request: str | None = None,
    ) -> int:
        """A new object of `resource`: the generator's object for the next index, with `fields`
        (or what `fields(that object)` gives) over it, listed from `t` on; records events."""
        (index,) = self.dataset.add(resource, 1, t, visible_at=t)
        base = self.template(resource, index)
        obj = {**base, **(fields(base) if callable(fields) else fields), "created": t}
        self.put(resource, index, obj)
        if resource == "refunds" and (charge := self.find(obj.get("charge") or "")):
            self.refunds.setdefault(charge[1], []).append(index)
        for kind in kinds:
            self.emit(t, kind, resource, obj, None, request)
        return index

    def change(
        self,
        t: int,
        resource: str,
        index: int,
        changes: Obj,
        kinds: Sequence[str],
        request: str | None = None,
    ) -> Obj:
        """Replaces fields of an object and records events `kinds` with previous_attributes."""
        old = self.get(resource, index)
        new = {**old, **changes}
        previous = {
            name: old.get(name) for name, value in changes.items() if old.get(name) != value
        }
        self.put(resource, index, new)
        for kind in kinds:
            self.emit(t, kind, resource, new, previous, request)
        return new

    def template(self, resource: str, index: int) -> Obj:
        """What a new object starts from: one of a few born objects (parsed once; their nested
        parts are shared, which is safe as objects are never mutated), with the new id. Building
        the generator's object for the new index would cost ten times more, and a new object
        overrides its links and states anyway."""
        count = self.dataset.count
        if not count:
            return self.get(resource, index)
        born = mix64(self.dataset.key ^ index) % min(count, TEMPLATES)
        template = self._templates.get((resource, born))
        if template is None:
            template = self._templates[resource, born] = self.get(resource, born)
        return {**template, "id": self.dataset.id(resource, index)}

    def write_request(self) -> str:
        """A deterministic request id for a write, which its events carry as `request.id`."""
        self._writes += 1
        return "req_" + base62(hash64(self.dataset.key, "write", self._writes) % 62**14, 14)

    def rng(self, *parts: object) -> Rng:
        return Rng(hash64(self.dataset.key, *parts))

    # Time ------------------------------------------------------------------------------------

    def schedule(self, t: int, name: str, *args: Any) -> None:
        self._sequence += 1
        heapq.heappush(self._heap, (t, self._sequence, name, args))

    def catch_up(self, now: float) -> None:
        """Runs every action due by `now`, in time order; cheap when none is."""
        target = int(now)
        if target <= self.processed:
            return
        with self.lock, no_cycle_collection():
            heap = self._heap
            while heap and heap[0][0] <= target:
                t, _, name, args = heapq.heappop(heap)
                ACTIONS[name](self, t, *args)
            self.processed = max(self.processed, target)
