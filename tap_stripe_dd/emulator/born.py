"""The generated objects' part in a living account's history.

The generator builds each object as it ends up (a payout `paid`, a dispute `won`). Objects
young enough that their lifecycle had not finished 30 days before the clock's start are
instead put back at the start of it (a payout `pending`, a dispute `needs_response` with its
funds withdrawn) and their steps are scheduled from their `created`, so that the steps before
`now` run (and record their events) as the account starts, and the later ones as the clock
passes. A won dispute is decided again when its generated reinstatement was created, and
embeds that one, so no balance transaction is listed twice; one that wins after the data
set's end adds its reinstatement after the clock's start, so a data set of N objects starts
with N. Objects created in the last 30 days also record their creation events, so the events
feed has the month Stripe keeps (a refund's with its charge's charge.refunded, a chargeback's
with charge.dispute.funds_withdrawn). Balance transactions `pending` at the end of the data
become `available` at their `available_on` (without an event, as on Stripe), also when the data
set ended long before the clock's start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tap_stripe_dd.emulator.disputes import CLOSED, plan_dispute
from tap_stripe_dd.emulator.events import RETENTION
from tap_stripe_dd.emulator.lifecycles import plan_payout, refunded, schedule_refund
from tap_stripe_dd.emulator.objects import DISPUTE_LIFE, RESOURCES
from tap_stripe_dd.emulator.state import action
from tap_stripe_dd.emulator.versions import Obj
from tap_stripe_dd.emulator.vocabulary import PAYOUT_FAILURES

if TYPE_CHECKING:
    from tap_stripe_dd.emulator.state import State

CHARGE_EVENTS = {"succeeded": "charge.succeeded", "failed": "charge.failed"}
CREATED_EVENTS = {
    "customers": "customer.created",
    "refunds": "refund.created",
    "disputes": "charge.dispute.created",
    "payouts": "payout.created",
}
FAILURES = [code for code, _ in PAYOUT_FAILURES]
LIFECYCLES = frozenset({"balance_transactions", "disputes", "payouts", "refunds"})
# How far back a born object may still be moving: a pending balance transaction is at most 2
# days old (available_on), a dispute 60 days; others' events reach back 30 days.
WINDOWS = {"balance_transactions": 3 * 86_400, "disputes": DISPUTE_LIFE}


def adopt(state: State, now: int) -> None:
    """Schedules the recent born objects' creation events and unfinished lifecycles."""
    dataset = state.dataset
    for resource in RESOURCES:
        window = WINDOWS.get(resource, RETENTION)
        young_at = now
        if resource == "balance_transactions":
            # Pending at a data set's end long before the clock's start: available since
            # (that records no event and adds no object, unlike the other lifecycles).
            young_at = min(now, dataset.end)
        first = dataset.timeline.first_index_from((young_at - window, -1))
        for index in range(first, dataset.count):
            if resource in LIFECYCLES:
                restart(state, resource, index, state.get(resource, index), now)
            created = dataset.timeline.created(index)
            if created > now - RETENTION and resource != "balance_transactions":
                state.schedule(created, "born", resource, index)


def restart(state: State, resource: str, index: int, obj: Obj, now: int) -> None:
    created, status = obj["created"], obj.get("status")
    if resource == "balance_transactions" and status == "pending":
        state.schedule(obj["available_on"], "make_available", index)
    elif resource == "payouts" and status != "canceled" and obj["arrival_date"] > created:
        failure = FAILURES.index(obj["failure_code"]) if status == "failed" else -1
        state.put(resource, index, {
            **obj,
            "status": "pending",
            "failure_code": None,
            "failure_message": None,
            "reconciliation_status": "in_progress" if obj["automatic"] else "not_applicable",
            "trace_id": {"status": "pending", "value": None},
        })  # fmt: skip
        plan_payout(state, created, index, obj["arrival_date"], failure, adds=False)
    elif resource == "refunds" and status in ("succeeded", "pending", "failed"):
        state.put(resource, index, {**obj, "status": "pending"})
        outcome = "failed" if status == "failed" else "succeeded"
        if outcome == "failed" and (charge := state.find(obj["charge"] or "")):
            # pending, it counts in its charge's amount_refunded until it fails
            state.put(*charge, {**state.get(*charge), **refunded(state, charge[1])})
        schedule_refund(state, created, index, outcome, adds=False)
    elif resource == "disputes" and status != "charge_refunded":
        warning = status.startswith("warning")
        due_by = obj["evidence_details"]["due_by"]
        withdrawn, *reinstated = obj["balance_transactions"] or [None]
        state.put(resource, index, {
            **obj,
            "balance_transactions": [withdrawn] if withdrawn else [],
            "status": "warning_needs_response" if warning else "needs_response",
            "evidence_details": {
                **obj["evidence_details"], "has_evidence": False, "past_due": False,
                "submission_count": 0,
            },
            "is_charge_refundable": warning,
        })  # fmt: skip
        if status == "needs_response":
            state.schedule(due_by + 1, "decide_dispute", index, "lost")
        elif reinstated:  # won when its generated reinstatement was created, with it
            plan_dispute(state, created, index, due_by, "won", reinstated[0]["created"])
        elif status == "under_review" and state.dataset.wins(index):
            after = max(now, state.dataset.end)
            plan_dispute(state, created, index, due_by, "won", after=after)
        else:  # an inquiry's decision closes it whatever the outcome
            plan_dispute(state, created, index, due_by, "won" if warning else "lost")


@action
def born(state: State, t: int, resource: str, index: int) -> None:
    obj = state.overlay[resource].get(index)
    if resource == "charges":
        status = state.field(resource, index)("status")
        kind = CHARGE_EVENTS.get(status, "charge.pending")
    else:
        kind = CREATED_EVENTS[resource]
    kinds = [kind]
    if resource == "disputes" and state.field(resource, index)("balance_transactions"):
        kinds.append("charge.dispute.funds_withdrawn")  # a chargeback's, as a new one records
    for kind in kinds:
        if obj is None:
            state.emit_born(t, kind, resource, index)
        else:
            state.emit(t, kind, resource, obj, None, None)
    charge = (
        state.find(state.field(resource, index)("charge") or "") if resource == "refunds" else None
    )
    if charge:
        state.emit(t, "charge.refunded", "charges", state.get(*charge), None, None)


assert "needs_response" not in CLOSED
