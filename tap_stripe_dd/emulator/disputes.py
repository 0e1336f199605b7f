"""Disputes' lifecycle, as Stripe's: `needs_response` (funds withdrawn:
charge.dispute.funds_withdrawn) or `warning_needs_response` (an inquiry) -> `under_review` /
`warning_under_review` when evidence is submitted (charge.dispute.updated) -> `won` (funds
reinstated: charge.dispute.funds_reinstated) / `lost` / `warning_closed` (charge.dispute.closed);
without evidence, `lost` at `evidence_details.due_by`.

A chargeback's balance transactions (`adjustment`s, see objects.dispute_adjustment) are in its
`balance_transactions`: its withdrawal from creation on, its reinstatement once won. A generated
won dispute that born.py puts back to `needs_response` is won again when its generated
reinstatement was created, and gets that one, so that no transaction is listed twice."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tap_stripe_dd.emulator.lifecycles import DAY, HOUR, add_transaction, next_id
from tap_stripe_dd.emulator.objects import DISPUTE_STATUSES, dispute_adjustment, midnight, values
from tap_stripe_dd.emulator.state import action
from tap_stripe_dd.emulator.versions import Obj

if TYPE_CHECKING:
    from tap_stripe_dd.emulator.state import State

CLOSED = frozenset({"won", "lost", "warning_closed", "charge_refunded"})
OPEN_TO_REVIEW = {
    "needs_response": "under_review",
    "warning_needs_response": "warning_under_review",
}


def create_dispute(state: State, t: int, charge_index: int, warning: bool) -> int:
    """A dispute of a charge: funds withdrawn unless it is an inquiry (`warning_*`)."""
    charge = state.get("charges", charge_index)
    rng = state.rng("dispute", charge_index, t)
    amount, currency = charge["amount"], charge["currency"]
    withdrawn = [] if warning else [adjust(state, t, next_id(state, "disputes"), charge, False)]
    due_by = midnight(t, rng.between(7, 21)) - 1

    def fields(base: Obj) -> Obj:
        return {
            "amount": amount,
            "balance_transactions": withdrawn,
            "charge": charge["id"],
            "created": t,
            "currency": currency,
            "evidence_details": {
                **base["evidence_details"],
                "due_by": due_by,
                "has_evidence": False,
                "past_due": False,
                "submission_count": 0,
            },
            "is_charge_refundable": warning,
            "metadata": {},
            "payment_intent": charge.get("payment_intent"),
            "reason": rng.pick(values("dispute", "reason")),
            "status": "warning_needs_response" if warning else "needs_response",
        }

    kinds = ["charge.dispute.created"] + ([] if warning else ["charge.dispute.funds_withdrawn"])
    index = state.create(t, "disputes", fields, kinds)
    state.change(t, "charges", charge_index, {"disputed": True}, ())
    plan_dispute(state, t, index, due_by, None)
    return index


def adjust(state: State, t: int, source: str, disputed: Obj, reinstated: bool) -> Obj:
    """A new balance transaction withdrawing (or reinstating) dispute `source`'s funds; the
    amount and currency are `disputed`'s: the dispute's, or its charge's before it exists."""
    amount, fee, category = dispute_adjustment(disputed["amount"], reinstated)
    index = add_transaction(
        state, t, "adjustment", source, amount, disputed["currency"], fee, category=category
    )
    return state.get("balance_transactions", index)


def plan_dispute(
    state: State,
    t: int,
    index: int,
    due_by: int,
    outcome: str | None,
    decided: int | None = None,
    after: int | None = None,
) -> None:
    """Evidence before the deadline for three in four, then a decision weeks later: at
    `decided` if given (a born dispute's generated reinstatement's time), else not before
    `after` if given (a born dispute won after the data set's end adds its reinstatement then,
    not before the clock's start)."""
    rng = state.rng("dispute-plan", index)
    outcome = outcome or ("won" if rng.chance(45) else "lost")
    if decided is None:
        if outcome == "lost" and rng.chance(33):  # no response: lost at the deadline
            state.schedule(due_by + 1, "decide_dispute", index, "lost")
            return
        responded = rng.between(t + HOUR, max(t + HOUR, due_by - HOUR))
        decided = responded + rng.between(5, 40) * DAY
        if after is not None and decided <= after:
            decided = after + rng.between(HOUR, 30 * DAY)
    else:
        latest = max(t, min(due_by, decided) - HOUR)
        responded = rng.between(min(t + HOUR, latest), latest)
    state.schedule(responded, "submit_evidence", index)
    state.schedule(decided, "decide_dispute", index, outcome)


def submit(state: State, t: int, index: int, evidence: Obj, request: str | None) -> Obj:
    dispute = state.get("disputes", index)
    details = dispute["evidence_details"]
    changes = {
        "evidence": {**dispute["evidence"], **evidence},
        "evidence_details": {
            **details,
            "has_evidence": True,
            "submission_count": details["submission_count"] + 1,
        },
        "status": OPEN_TO_REVIEW.get(dispute["status"], dispute["status"]),
    }
    return state.change(t, "disputes", index, changes, ["charge.dispute.updated"], request)


@action
def submit_evidence(state: State, t: int, index: int) -> None:
    if state.get("disputes", index)["status"] in OPEN_TO_REVIEW:
        text = {"uncategorized_text": "Signed delivery receipt attached."}
        submit(state, t, index, text, None)


@action
def decide_dispute(state: State, t: int, index: int, outcome: str) -> None:
    dispute = state.get("disputes", index)
    if dispute["status"] in CLOSED:
        return
    close(state, t, index, outcome, None)


def close(state: State, t: int, index: int, outcome: str, request: str | None) -> Obj:
    dispute = state.get("disputes", index)
    warning = dispute["status"].startswith("warning")
    status = "warning_closed" if warning else outcome
    changes: Obj = {"status": status, "is_charge_refundable": False}
    if dispute["status"] in OPEN_TO_REVIEW:
        changes["evidence_details"] = {**dispute["evidence_details"], "past_due": t > dispute[
            "evidence_details"]["due_by"]}  # fmt: skip
    kinds = ["charge.dispute.closed"]
    if status == "won" and dispute["balance_transactions"]:
        generated = state.dataset.reversal(index)
        back = (
            adjust(state, t, dispute["id"], dispute, True)
            if generated is None
            else state.get("balance_transactions", generated)
        )
        changes["balance_transactions"] = [*dispute["balance_transactions"], back]
        kinds.append("charge.dispute.funds_reinstated")
    return state.change(t, "disputes", index, changes, kinds, request)


assert set(CLOSED) | set(OPEN_TO_REVIEW) <= DISPUTE_STATUSES
