"""The six Stripe list endpoints: each names its path, the filters Stripe offers for it, and
the event types that change or delete its objects (changes.py routes events by the type of
their `data.object`: `charge.refund.updated` carries a refund, `charge.dispute.*` a dispute).
Creations are left out: the created scan reads new objects."""

from __future__ import annotations

import typing as t

import msgspec
import requests
from singer_sdk.exceptions import RetriableAPIError

from tap_stripe_dd.accounts import Account
from tap_stripe_dd.changes import TrackedStream
from tap_stripe_dd.client import StripeStream
from tap_stripe_dd.fetching import PageRequest
from tap_stripe_dd.ratelimit import RateLimiter


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


class AccountsLookup(StripeStream):
    """Not a Singer stream: the platform's id (`GET /v1/account`) and its connected accounts
    (`GET /v1/accounts`, paged), with the streams' retries, rate limit and errors."""

    name = "accounts"
    path = "/accounts"
    schema: t.ClassVar[dict] = {"type": "object", "properties": {"id": {"type": "string"}}}

    def platform_id(self, limiter: RateLimiter) -> str:
        body = self.get_json(f"{self.url_base}/account", {}, Account("", False, limiter))
        return str(body["id"])

    def connected_ids(self, limiter: RateLimiter) -> list[str]:
        ids: list[str] = []
        request = PageRequest(0, self.stripe_clock() + 1, 100)
        while True:
            page = self.fetch_page(request, Account("", False, limiter))
            ids += (str(account["id"]) for account in page.records)
            if not page.has_more or not page.records:
                return ids
            request = PageRequest(request.gte, request.lt, request.limit, ids[-1])

    def validate_response(self, response: requests.Response) -> None:
        """`/v1/account` answers with an object, not a list."""
        path = str(response.request.path_url).split("?")[0]
        if response.status_code < 400 and path.endswith("/v1/account"):
            try:
                account = self.body(response)
            except (msgspec.DecodeError, ValueError):
                account = None
            if not isinstance(account, dict) or not isinstance(account.get("id"), str):
                msg = "GET /account: Stripe sent a body that is not an account"
                raise RetriableAPIError(msg, response)
            return
        super().validate_response(response)
