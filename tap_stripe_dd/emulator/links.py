"""Which generated refunds and disputes belong to which generated charge, found both ways cheaply.

Indexes are cut into groups of GROUP. All refunds (or disputes) of group h belong to charges of
one earlier group, h - shift(h) with shift drawn from 1..min(span, h) by a hash (group 0's to
its own charges, not after them), so each is younger than its charge, by up to about `window`
objects. Charge group g's children are those of the groups g..g+span whose shift lands on g:
`span` hashes once per group (cached), instead of a scan. In that pairing each child picks one
of the group's captured charges; a charge's refunds share part or all of its amount, and their
statuses are drawn here too, so that a charge knows its refunds (amount_refunded, refunded, its
`refunds` sub-list) and disputes without building them, and a child its charge.
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tap_stripe_dd.emulator.keys import MASK64, Rng, hash64
from tap_stripe_dd.emulator.objects import REFUND_STATUS, price, settled

if TYPE_CHECKING:
    from tap_stripe_dd.emulator.dataset import Dataset

GROUP = 64
GOLDEN = 0x9E3779B97F4A7C15  # a multiplicative hash's odd constant
PLANS_CACHED = 1_024  # groups' plans kept: more than a span, as objects are built in order
FULL_REFUNDS = 70  # percent of refunded charges refunded in full


@dataclass(frozen=True)
class Child:
    """A generated refund or dispute: its charge (None if no captured charge is older), and a
    refund's amount and status."""

    charge: int | None
    amount: int
    status: str


class Links:
    """The generated children (refunds or disputes) of generated charges."""

    def __init__(self, dataset: Dataset, kind: str, window: int) -> None:
        self._dataset = dataset
        self._kind = kind
        self._salt = hash64(dataset.key, "links", kind)
        self._span = max(1, window // GROUP)
        self._groups = -(-dataset.count // GROUP)
        self._plan = functools.lru_cache(maxsize=PLANS_CACHED)(self._make_plan)

    def child(self, index: int) -> Child:
        """What refund (or dispute) `index` belongs to: imported ones (Dataset.add) to no
        charge, so that importing changes no charge."""
        if index >= self._dataset.count:
            return self._orphan(index)
        return self._plan(self._parent_group(index // GROUP))[0][index]

    def of(self, charge: int) -> list[int]:
        """Generated charge `charge`'s children, oldest first (none for added charges)."""
        if charge >= self._dataset.count:
            return []
        return self._plan(charge // GROUP)[1].get(charge, [])

    def _parent_group(self, group: int) -> int:
        if not group:
            return 0
        spread = ((self._salt ^ group) * GOLDEN & MASK64) >> 32  # cheaper than mix64; enough
        return group - 1 - spread % min(self._span, group)

    def _make_plan(self, group: int) -> tuple[dict[int, Child], dict[int, list[int]]]:
        dataset = self._dataset
        count, first = dataset.count, group * GROUP
        captured = [
            i for i in range(first, min(first + GROUP, count)) if dataset.partner(i) == "charges"
        ]
        children = [
            index
            for child_group in range(group, min(group + self._span + 1, self._groups))
            if self._parent_group(child_group) == group
            for index in range(child_group * GROUP, min(child_group * GROUP + GROUP, count))
        ]
        of: dict[int, list[int]] = {}
        plan: dict[int, Child] = {}
        rng = Rng(self._salt ^ group)
        for index in children:  # a charge not younger than its child
            older = captured[: bisect.bisect_right(captured, index)]
            if older:
                of.setdefault(rng.pick(older), []).append(index)
            else:
                plan[index] = self._orphan(index)
        if self._kind == "refunds":
            for charge, refunds in of.items():
                plan |= self._refunds(charge, refunds)
        else:
            plan |= {index: Child(charge, 0, "") for charge, kids in of.items() for index in kids}
        return plan, of

    def _orphan(self, index: int) -> Child:
        rng = Rng(self._salt ^ index ^ 1 << 63)
        return Child(None, price(rng, "usd"), self._status(index, rng))

    def _status(self, index: int, rng: Rng) -> str:
        dataset = self._dataset
        created = dataset.created(self._kind, index)
        return settled(REFUND_STATUS.draw(rng), created, dataset.end)

    def _refunds(self, charge: int, refunds: list[int]) -> dict[int, Child]:
        """A charge's refunds: all or part of its amount, split among them."""
        amount = self._dataset.charge_amount(charge)
        rng = Rng(self._salt ^ charge ^ 1 << 62)
        left = (
            amount if rng.chance(FULL_REFUNDS) else rng.between(min(len(refunds), amount), amount)
        )
        plan = {}
        for position, index in enumerate(refunds):
            after = len(refunds) - position - 1  # refunds still to come get at least 1 each
            part = left if not after else rng.between(1, max(1, (left - after) // 2))
            left -= part
            plan[index] = Child(charge, max(1, part), self._status(index, rng))
        return plan
