"""The platform account and its connected accounts (`--accounts N`), as `/v1/account` and
`/v1/accounts` show them. Ids are fixed per seed; each connected account has a data set, an
event log and activity of its own."""

from __future__ import annotations

from collections.abc import Sequence

from tap_stripe_dd.emulator.keys import alphanumeric, hash64, mix64
from tap_stripe_dd.emulator.versions import Obj
from tap_stripe_dd.emulator.vocabulary import BUSINESSES

TYPES = ("standard", "express", "custom")


def account_id(*parts: object) -> str:
    """`acct_1` and 15 characters from two hashes (one has bits for only ten)."""
    return "acct_1" + alphanumeric(hash64(*parts) << 64 | hash64(*parts, "more"), 15)


def platform_id(seed: int) -> str:
    return account_id("platform", seed)


class Accounts:
    """Who may be named in `Stripe-Account`, and what each account looks like."""

    def __init__(self, seed: int, connected: int | Sequence[str], start: int, end: int) -> None:
        self.seed = seed
        self.platform = platform_id(seed)
        if isinstance(connected, int):
            if connected < 0:
                raise ValueError("accounts must not be negative")
            ids = [account_id("connected", seed, n) for n in range(connected)]
        else:
            ids = list(connected)
            if any(not account.startswith("acct_") for account in ids):
                raise ValueError("connected account ids must start with acct_")
        span = max(1, end - start)
        self.created = {
            account: start + mix64(hash64("created", seed, account)) % span for account in ids
        }
        self.platform_created = start - 86_400 * 30
        # Newest first, as Stripe lists them; ties broken by id.
        self.connected = sorted(ids, key=lambda account: (-self.created[account], account))

    def known(self, account: str) -> bool:
        return account == self.platform or account in self.created

    def business(self, account: str) -> str:
        """The account's business name: that of its data set (see Dataset.business)."""
        key = hash64("dataset", self.seed, "" if account == self.platform else account)
        return BUSINESSES[key % len(BUSINESSES)]

    def object(self, account: str) -> Obj:
        platform = account == self.platform
        created = self.platform_created if platform else self.created[account]
        kind = "standard" if platform else TYPES[mix64(hash64(account)) % len(TYPES)]
        name = self.business(account).title()
        return {
            "id": account,
            "object": "account",
            "business_profile": {
                "mcc": "5734",
                "name": name,
                "product_description": None,
                "support_email": f"support@{name.lower().replace(' ', '')}.example",
                "support_phone": None,
                "support_url": None,
                "url": f"https://{name.lower().replace(' ', '')}.example",
            },
            "business_type": "company",
            "capabilities": {"card_payments": "active", "transfers": "active"},
            "charges_enabled": True,
            "country": "US",
            "created": created,
            "default_currency": "usd",
            "details_submitted": True,
            "email": f"owner@{name.lower().replace(' ', '')}.example",
            "metadata": {},
            "payouts_enabled": True,
            "requirements": {
                "current_deadline": None,
                "currently_due": [],
                "disabled_reason": None,
                "errors": [],
                "eventually_due": [],
                "past_due": [],
                "pending_verification": [],
            },
            "settings": {
                "dashboard": {"display_name": name, "timezone": "Etc/UTC"},
                "payouts": {
                    "debit_negative_balances": True,
                    "schedule": {"delay_days": 2, "interval": "daily"},
                    "statement_descriptor": None,
                },
            },
            "tos_acceptance": {"date": created},
            "type": kind,
        }
