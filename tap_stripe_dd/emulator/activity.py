"""Background activity: about `rate` objects created or changed per emulated hour, across the
six resources in Stripe-like proportions (mostly new charges, then refunds, customer edits,
payouts, disputes, a few deletions).

An `hour` action on the heap plans its hour (how many acts, at which seconds) from a Rng keyed
by the hour, and schedules the next hour: the history depends on the seed and the emulated
times alone, not on how the clock was moved. Each act picks its targets among the most recent
objects that exist at its time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tap_stripe_dd.emulator.disputes import create_dispute
from tap_stripe_dd.emulator.keys import Rng, WeightedTable
from tap_stripe_dd.emulator.lifecycles import (
    HOUR,
    create_charge,
    create_customer,
    create_payout,
    create_refund,
    delete_customer,
)
from tap_stripe_dd.emulator.objects import CURRENCIES, email, full_name, metadata, phone, price
from tap_stripe_dd.emulator.state import action

if TYPE_CHECKING:
    from tap_stripe_dd.emulator.state import State

RECENT = 2_000  # acts pick among this many of the newest objects
TRIES = 8  # picks before an act that finds no fitting object gives up
Act = Callable[["State", int, Rng], None]


def recent(state: State, resource: str, t: int, rng: Rng) -> int | None:
    """One of the newest RECENT objects of `resource` that exist at `t` (not deleted)."""
    dataset = state.dataset
    born = state.born_by(t)
    added = dataset.total(resource) - dataset.count
    total = born + added
    for _ in range(TRIES):
        if not total:
            return None
        position = rng.between(max(0, total - RECENT), total - 1)
        index = position if position < born else dataset.count + position - born
        if resource != "customers" or index not in state.deleted:
            return index
    return None


def new_charge(outcome: str) -> Act:
    def act(state: State, t: int, rng: Rng) -> None:
        customer = recent(state, "customers", t, rng) if rng.chance(85) else None
        currency = CURRENCIES.draw(rng)
        customer_id = None if customer is None else state.dataset.id("customers", customer)
        create_charge(state, t, price(rng, currency), currency, customer_id, outcome)

    return act


def new_customer(state: State, t: int, rng: Rng) -> None:
    first, last = full_name(rng)
    fields = {"email": email(first, last, rng), "name": f"{first} {last}"}
    create_customer(state, t, fields | ({"phone": phone(rng)} if rng.chance(40) else {}))


def edit_customer(state: State, t: int, rng: Rng) -> None:
    index = recent(state, "customers", t, rng)
    if index is not None:
        first, last = full_name(rng)
        changes = rng.pick(({"email": email(first, last, rng)}, {"phone": phone(rng)},
                            {"metadata": metadata(rng)}, {"name": f"{first} {last}"}))  # fmt: skip
        state.change(t, "customers", index, changes, ["customer.updated"])


def remove_customer(state: State, t: int, rng: Rng) -> None:
    index = recent(state, "customers", t, rng)
    if index is not None:
        delete_customer(state, t, index)


def edit_charge(state: State, t: int, rng: Rng) -> None:
    index = recent(state, "charges", t, rng)
    if index is not None:
        changes = {"metadata": {**state.get("charges", index)["metadata"], **metadata(rng)}}
        state.change(t, "charges", index, changes, ["charge.updated"])


def paid_charge(state: State, t: int, rng: Rng, undisputed: bool) -> int | None:
    for _ in range(TRIES):
        index = recent(state, "charges", t, rng)
        if index is None:
            return None
        charge = state.field("charges", index)
        left = charge("amount") - charge("amount_refunded")
        if charge("captured") and left > 0 and not (undisputed and charge("disputed")):
            return index
    return None


def refund(state: State, t: int, rng: Rng) -> None:
    index = paid_charge(state, t, rng, undisputed=False)
    if index is not None:
        charge = state.get("charges", index)
        left = charge["amount"] - charge["amount_refunded"]
        amount = left if rng.chance(70) else rng.between(1, left)
        reason = rng.pick((None, "requested_by_customer", "duplicate", "fraudulent"))
        create_refund(state, t, index, amount, reason, None)


def dispute(state: State, t: int, rng: Rng) -> None:
    index = paid_charge(state, t, rng, undisputed=True)
    if index is not None:
        create_dispute(state, t, index, warning=rng.chance(15))


def payout(state: State, t: int, rng: Rng) -> None:
    create_payout(state, t, rng.between(1_000, 2_000_000), "usd", rng.chance(80), None)


ACTS = WeightedTable(
    {
        new_charge("succeeded"): 48,
        new_charge("failed"): 5,
        new_charge("uncaptured"): 3,
        new_customer: 9,
        edit_customer: 10,
        remove_customer: 1,
        edit_charge: 5,
        refund: 12,
        dispute: 2,
        payout: 5,
    }
)


@action
def hour(state: State, t: int, rate: int) -> None:
    """Plans the acts of the hour starting at `t`, and the next hour."""
    rng = state.rng("activity", t)
    count = rng.between(rate // 2, rate + rate // 2) if rate > 1 else rng.below(rate + 2) // 2
    for when in sorted(t + rng.below(HOUR) for _ in range(count)):
        state.schedule(when, "act", rng.below(1 << 62))
    state.schedule(t + HOUR, "hour", rate)


@action
def act(state: State, t: int, seed: int) -> None:
    rng = Rng(seed)
    ACTS.draw(rng)(state, t, rng)
