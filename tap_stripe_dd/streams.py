"""The six Stripe list endpoints: each names its path and the filters Stripe offers for it."""

from __future__ import annotations

from tap_stripe_dd.client import StripeStream


class BalanceTransactionsStream(StripeStream):
    name = "balance_transactions"
    path = "/balance_transactions"
    filters = ("payout", "type", "currency", "source")


class ChargesStream(StripeStream):
    name = "charges"
    path = "/charges"
    filters = ("customer", "payment_intent", "transfer_group")


class CustomersStream(StripeStream):
    name = "customers"
    path = "/customers"
    filters = ("email",)
    local_filters = ("currency",)


class DisputesStream(StripeStream):
    name = "disputes"
    path = "/disputes"
    filters = ("charge", "payment_intent")


class PayoutsStream(StripeStream):
    name = "payouts"
    path = "/payouts"
    filters = ("status", "arrival_date", "destination")


class RefundsStream(StripeStream):
    name = "refunds"
    path = "/refunds"
    filters = ("charge", "payment_intent")


STREAM_TYPES: tuple[type[StripeStream], ...] = (
    BalanceTransactionsStream,
    ChargesStream,
    CustomersStream,
    DisputesStream,
    PayoutsStream,
    RefundsStream,
)
