"""How objects change, as Stripe's do: each operation changes every object it touches and
records the events Stripe records; what happens later by itself is scheduled on the heap.

- Balance transactions: `pending` -> `available` at `available_on` (no event, as on Stripe).
- Payouts: `pending` -> `in_transit` (payout.updated) -> `paid` (payout.paid) or, for some,
  `failed` with `failure_code` (payout.failed, and a `payout_failure` balance transaction) at
  `arrival_date`; `pending` ones can be canceled (payout.canceled, `payout_cancel`).
- Refunds: `pending` -> `succeeded` (refund.updated, charge.refund.updated) or `failed`
  (refund.failed, a `refund_failure` balance transaction, the charge's amount_refunded back).
  A charge's amount_refunded and refunded always follow from its refunds (refund_totals).
- Disputes: see disputes.py.

Each random choice comes from a Rng keyed by the object, so the same seed gives the same
lifecycle. A scheduled step first checks the object is still where the step expects it (a
payout canceled in between does not arrive).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from tap_stripe_dd.emulator.objects import (
    AUTHORIZED,
    DECLINED,
    midnight,
    refund_totals,
    stripe_fee,
    transaction_fields,
)
from tap_stripe_dd.emulator.state import action
from tap_stripe_dd.emulator.versions import Obj
from tap_stripe_dd.emulator.vocabulary import DECLINES, PAYOUT_FAILURES

if TYPE_CHECKING:
    from tap_stripe_dd.emulator.state import State

HOUR, DAY = 3_600, 86_400


def next_id(state: State, resource: str) -> str:
    return state.dataset.id(resource, state.dataset.total(resource))


# Balance transactions -----------------------------------------------------------------------


def add_transaction(
    state: State,
    t: int,
    kind: str,
    source: str,
    amount: int,
    currency: str,
    fee: int = 0,
    available_on: int | None = None,
    category: str | None = None,
) -> int:
    """A balance transaction of `kind` for `source`; `pending` until `available_on`."""
    fields = transaction_fields(kind, source, amount, currency, t, fee, available_on, category)
    index = state.create(t, "balance_transactions", fields, ())
    if fields["available_on"] > t:
        state.schedule(fields["available_on"], "make_available", index)
    return index


@action
def make_available(state: State, t: int, index: int) -> None:
    if state.get("balance_transactions", index)["status"] == "pending":
        state.change(t, "balance_transactions", index, {"status": "available"}, ())


# Customers ----------------------------------------------------------------------------------

BLANK_CUSTOMER = {
    "balance": 0,
    "default_source": None,
    "delinquent": False,
    "description": None,
    "discount": None,
    "email": None,
    "metadata": {},
    "name": None,
    "phone": None,
    "shipping": None,
}


def create_customer(state: State, t: int, fields: Obj, request: str | None = None) -> int:
    return state.create(t, "customers", {**BLANK_CUSTOMER, **fields}, ["customer.created"], request)


def delete_customer(state: State, t: int, index: int, request: str | None = None) -> None:
    obj = state.get("customers", index)
    state.deleted[index] = t
    state.emit(t, "customer.deleted", "customers", obj, None, request)


# Charges ------------------------------------------------------------------------------------


def create_charge(
    state: State,
    t: int,
    amount: int,
    currency: str,
    customer: str | None,
    outcome: str = "succeeded",
    extra: Obj | None = None,
    request: str | None = None,
) -> int:
    """A charge that `succeeded` (captured, with its balance transaction), is `uncaptured`
    (captured later, by activity) or `failed` (declined)."""
    failed = outcome == "failed"
    decline = DECLINES[0]
    captured = outcome == "succeeded"
    transaction = None
    if captured:
        fee = stripe_fee(amount, currency)
        index = add_transaction(
            state, t, "charge", next_id(state, "charges"), amount, currency, fee, midnight(t, 2)
        )
        transaction = state.dataset.id("balance_transactions", index)

    def fields(base: Obj) -> Obj:
        return {
            "amount": amount,
            "amount_captured": amount if captured else 0,
            "amount_refunded": 0,
            "balance_transaction": transaction,
            "captured": captured,
            "currency": currency,
            "customer": customer,
            "disputed": False,
            "failure_code": decline[0] if failed else None,
            "failure_message": decline[1] if failed else None,
            "fraud_details": {},
            "outcome": DECLINED[decline] if failed else AUTHORIZED,
            "paid": not failed,
            "payment_intent": state.dataset.foreign_id("pi", state.dataset.total("charges")),
            "payment_method_details": {
                **base["payment_method_details"],
                "card": {
                    **base["payment_method_details"]["card"],
                    "amount_authorized": None if failed else amount,
                },
            },
            "refunded": False,
            "status": "failed" if failed else "succeeded",
            **(extra or {}),
        }

    kinds = ["charge.failed" if failed else "charge.succeeded"]
    index = state.create(t, "charges", fields, kinds, request)
    if outcome == "uncaptured":
        state.schedule(t + state.rng("capture", index).between(HOUR, 6 * HOUR), "capture", index)
    return index


@action
def capture(state: State, t: int, index: int) -> None:
    charge = state.get("charges", index)
    if charge["captured"] or charge["amount_refunded"]:
        return
    amount, currency = charge["amount"], charge["currency"]
    transaction = add_transaction(
        state, t, "charge", charge["id"], amount, currency, stripe_fee(amount, currency),
        midnight(t, 2),
    )  # fmt: skip
    changes = {
        "amount_captured": amount,
        "balance_transaction": state.dataset.id("balance_transactions", transaction),
        "captured": True,
    }
    state.change(t, "charges", index, changes, ["charge.captured"])


# Refunds ------------------------------------------------------------------------------------


def create_refund(
    state: State, t: int, charge_index: int, amount: int, reason: str | None, request: str | None
) -> int:
    """A refund (`pending`), its balance transaction, the charge's amount_refunded."""
    charge = state.get("charges", charge_index)
    currency = charge["currency"]
    refund_id = next_id(state, "refunds")
    transaction = add_transaction(state, t, "refund", refund_id, -amount, currency)
    fields = {
        "amount": amount,
        "balance_transaction": state.dataset.id("balance_transactions", transaction),
        "charge": charge["id"],
        "created": t,
        "currency": currency,
        "customer": charge.get("customer"),
        "metadata": {},
        "payment_intent": charge.get("payment_intent"),
        "payment_method": charge.get("payment_method"),
        "reason": reason,
        "receipt_number": None,
        "status": "pending",
    }
    index = state.create(t, "refunds", fields, ["refund.created"], request)
    state.change(
        t, "charges", charge_index, refunded(state, charge_index), ["charge.refunded"], request
    )
    schedule_refund(state, t, index, None)
    return index


def refunded(state: State, charge: int) -> Obj:
    """The charge's amount_refunded and refunded, from its refunds as they are now."""
    refunds = map(functools.partial(state.field, "refunds"), state.refund_indexes(charge))
    amount = state.field("charges", charge)("amount")
    return refund_totals(amount, ((field("amount"), field("status")) for field in refunds))


def schedule_refund(
    state: State, t: int, index: int, outcome: str | None, adds: bool = True
) -> None:
    """Settles the refund soon; `adds=False` (a born refund) adds no balance transaction, so
    that a data set of N objects per endpoint keeps N."""
    rng = state.rng("refund", index)
    fails = rng.chance(5) if outcome is None else outcome == "failed"
    state.schedule(t + rng.between(60, 2 * HOUR), "settle_refund", index, fails, adds)


@action
def settle_refund(state: State, t: int, index: int, fails: bool, adds: bool) -> None:
    refund = state.get("refunds", index)
    if refund["status"] != "pending":
        return
    changes: Obj = {"status": "failed" if fails else "succeeded"}
    if fails:
        changes["failure_reason"] = "expired_or_canceled_card"
        if adds:  # the field is absent without one (it is never null on Stripe)
            changes["failure_balance_transaction"] = refund_failure(state, t, refund)
    kinds = ["refund.failed", "refund.updated"] if fails else ["refund.updated"]
    refund = state.change(t, "refunds", index, changes, kinds)
    if fails and (found := state.find(refund["charge"] or "")):
        state.change(t, *found, refunded(state, found[1]), ["charge.updated"])
    state.emit(t, "charge.refund.updated", "refunds", refund, {"status": "pending"}, None)


def refund_failure(state: State, t: int, refund: Obj) -> str:
    index = add_transaction(
        state, t, "refund_failure", refund["id"], refund["amount"], refund["currency"]
    )
    return state.dataset.id("balance_transactions", index)


# Payouts ------------------------------------------------------------------------------------


def create_payout(
    state: State, t: int, amount: int, currency: str, automatic: bool, request: str | None
) -> int:
    payout_id = next_id(state, "payouts")
    transaction = add_transaction(state, t, "payout", payout_id, -amount, currency)
    arrival = midnight(t, 2)
    fields = {
        "amount": amount,
        "arrival_date": arrival,
        "automatic": automatic,
        "balance_transaction": state.dataset.id("balance_transactions", transaction),
        "created": t,
        "currency": currency,
        "description": "STRIPE PAYOUT" if automatic else None,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "metadata": {},
        "reconciliation_status": "in_progress" if automatic else "not_applicable",
        "statement_descriptor": None,
        "status": "pending",
        "trace_id": {"status": "pending", "value": None},
    }
    index = state.create(t, "payouts", fields, ["payout.created"], request)
    plan_payout(state, t, index, arrival, None)
    return index


def plan_payout(
    state: State, t: int, index: int, arrival: int, failure: int | None, adds: bool = True
) -> None:
    """In transit within hours, then paid (or failed, -1 meaning not) at `arrival`; `adds` as
    in schedule_refund."""
    rng = state.rng("payout", index)
    failure = (
        (rng.below(len(PAYOUT_FAILURES)) if rng.chance(5) else -1) if failure is None else failure
    )
    sent = min(t + rng.between(6 * HOUR, DAY), arrival - HOUR)
    state.schedule(max(t + 60, sent), "send_payout", index)
    state.schedule(arrival, "arrive", index, failure, adds)


@action
def send_payout(state: State, t: int, index: int) -> None:
    if state.get("payouts", index)["status"] == "pending":
        state.change(t, "payouts", index, {"status": "in_transit"}, ["payout.updated"])


@action
def arrive(state: State, t: int, index: int, failure: int, adds: bool) -> None:
    payout = state.get("payouts", index)
    if payout["status"] not in ("pending", "in_transit"):
        return
    if failure < 0:
        changes: Obj = {
            "status": "paid",
            "trace_id": {"status": "supported", "value": str(state.rng("trace", index).digits(15))},
        }
        if payout["automatic"]:
            changes["reconciliation_status"] = "completed"
        state.change(t, "payouts", index, changes, ["payout.paid", "payout.updated"])
        return
    code, message = PAYOUT_FAILURES[failure]
    back = None
    if adds:
        index_back = add_transaction(
            state, t, "payout_failure", payout["id"], payout["amount"], payout["currency"]
        )
        back = state.dataset.id("balance_transactions", index_back)
    changes = {
        "status": "failed",
        "failure_code": code,
        "failure_message": message,
        "failure_balance_transaction": back,
    }
    state.change(t, "payouts", index, changes, ["payout.failed", "payout.updated"])


def cancel_payout(state: State, t: int, index: int, request: str | None) -> Obj:
    payout = state.get("payouts", index)
    back = add_transaction(
        state, t, "payout_cancel", payout["id"], payout["amount"], payout["currency"]
    )
    changes = {
        "status": "canceled",
        "failure_balance_transaction": state.dataset.id("balance_transactions", back),
    }
    return state.change(
        t, "payouts", index, changes, ["payout.canceled", "payout.updated"], request
    )
