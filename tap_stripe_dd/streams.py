"""The six Stripe list endpoints: each names its path, the filters Stripe offers for it, and
the event types that change or delete its objects (changes.py routes events by the type of
their `data.object`: `charge.refund.updated` carries a refund, `charge.dispute.*` a dispute).
Creations are left out: the created scan reads new objects."""

from __future__ import annotations

from tap_stripe_dd.changes import TrackedStream
from tap_stripe_dd.client import StripeStream


class BalanceTransactionsStream(TrackedStream):
    name = "balance_transactions"
    path = "/balance_transactions"
    filters = ("payout", "type", "currency", "source")
    object_name = "balance_transaction"
    changes_unannounced = True  # pending -> available at available_on, with no event


class ChargesStream(TrackedStream):
    name = "charges"
    path = "/charges"
    filters = ("customer", "payment_intent", "transfer_group")
    object_name = "charge"
    event_types = (
        "charge.captured",
        "charge.expired",
        "charge.failed",
        "charge.pending",
        "charge.refunded",
        "charge.succeeded",
        "charge.updated",
    )
    touched_by = (("charge.dispute.created", "charge"),)  # `disputed` turns true, no charge.* event


class CustomersStream(TrackedStream):
    name = "customers"
    path = "/customers"
    filters = ("email",)
    local_filters = ("currency",)
    object_name = "customer"
    event_types = ("customer.updated", "customer.deleted")
    deletable = True


class DisputesStream(TrackedStream):
    name = "disputes"
    path = "/disputes"
    filters = ("charge", "payment_intent")
    object_name = "dispute"
    event_types = (
        "charge.dispute.closed",
        "charge.dispute.funds_reinstated",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.updated",
    )


class PayoutsStream(TrackedStream):
    name = "payouts"
    path = "/payouts"
    filters = ("status", "arrival_date", "destination")
    object_name = "payout"
    event_types = (
        "payout.canceled",
        "payout.failed",
        "payout.paid",
        "payout.reconciliation_completed",
        "payout.updated",
    )


class RefundsStream(TrackedStream):
    name = "refunds"
    path = "/refunds"
    filters = ("charge", "payment_intent")
    object_name = "refund"
    event_types = ("charge.refund.updated", "refund.failed", "refund.updated")


STREAM_TYPES: tuple[type[StripeStream], ...] = (
    BalanceTransactionsStream,
    ChargesStream,
    CustomersStream,
    DisputesStream,
    PayoutsStream,
    RefundsStream,
)
