"""The six resources' objects, each derived from (data set, index) alone.

An object is served as two JSON parts: its own fields, encoded per object, and a *profile*
(the card, the address, the amount, ... that many objects share, as customers reuse cards),
encoded once and spliced in. Encoding a whole charge costs more than building it, so this split
is what makes a page walk fast. Every field of Stripe's example object is present (from the
derived skeletons in shapes.json); what a builder does not set is null or empty, as in Stripe.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tap_stripe_dd.emulator.keys import Rng, WeightedTable
from tap_stripe_dd.emulator.vocabulary import (
    CAMPAIGNS,
    CHANNELS,
    CHARGE_DESCRIPTIONS,
    CURRENCIES,
    DECLINES,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    LAST_NAMES,
    LOCALES,
    NETWORK_REASON_CODES,
    PAYOUT_FAILURES,
    PLACES,
    PLANS,
    ZERO_DECIMAL,
)

if TYPE_CHECKING:
    from tap_stripe_dd.emulator.links import Links

SHAPES = json.loads(Path(__file__).with_name("shapes.json").read_text(encoding="utf-8"))
DAY = 86_400
LINK_WINDOW = 20_000  # the farthest back (in objects) an object links to another one's fields
Fields = dict[str, Any]


compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def empty(skeleton: Any) -> Any:
    """The skeleton with every value null and every list empty: Stripe's shape of 'nothing'."""
    if isinstance(skeleton, dict):
        return {key: empty(value) for key, value in skeleton.items()}
    return [] if isinstance(skeleton, list) else None


def empty_at(object_name: str, path: str) -> Any:
    node = SHAPES["skeletons"][object_name]
    for part in path.split("."):
        node = node[part]
    return empty(node)


def values(object_name: str, path: str) -> list[str]:
    """The values the spec documents for a field."""
    return SHAPES["values"][object_name][path]


class Shared:
    """A profile: fields that many objects share, JSON-encoded once."""

    def __init__(self, object_name: str, fields: Fields) -> None:
        self.object_name = object_name
        self.fields = fields
        self._json: bytes | None = None

    def json_beside(self, own: Fields) -> bytes:
        """The profile plus the skeleton's empty fields that `own` lacks, as JSON members.

        Builders return the same keys for every object of a resource, so the first call decides.
        """
        if self._json is None:
            skeleton = SHAPES["skeletons"][self.object_name]
            rest = {
                k: empty(v) for k, v in skeleton.items() if k not in own and k not in self.fields
            }
            self._json = compact({**self.fields, **rest})[1:-1].encode()
        return self._json


class Entry:
    """One object: its values for filters and links, and its JSON bytes, encoded when first
    asked for, as an object built only to be linked to (a dispute's charge) is never served."""

    __slots__ = ("_json", "own", "shared")

    def __init__(self, own: Fields, shared: Shared) -> None:
        self.own = own
        self.shared = shared
        self._json: bytes | None = None

    @property
    def json(self) -> bytes:
        if self._json is None:  # two threads may both encode it: the same bytes, no harm
            rest = self.shared.json_beside(self.own)
            head = compact(self.own)[:-1].encode()
            self._json = head + (b"," + rest if rest else b"") + b"}"
        return self._json

    def get(self, name: str) -> Any:
        return self.own[name] if name in self.own else self.shared.fields.get(name)


class Store(Protocol):
    """What builders need from their data set: ids, links to other objects, profiles."""

    count: int
    start: int
    end: int
    business: str
    reversal_lag: int

    def id(self, resource: str, index: int) -> str: ...
    def foreign_id(self, prefix: str, number: int, length: int = 24) -> str: ...
    def entry(self, resource: str, index: int) -> Entry: ...
    def profile(self, resource: str, number: int) -> Shared: ...
    def partner(self, index: int) -> str | None: ...
    def reversal(self, dispute: int) -> int | None: ...
    def wins(self, dispute: int) -> bool: ...
    def earlier(self, resource: str, index: int, rng: Rng, window: int) -> int | None: ...
    @property
    def refund_links(self) -> Links: ...
    @property
    def dispute_links(self) -> Links: ...


Builder = Callable[[Store, int, int, Rng], tuple[Fields, Shared]]
ProfileBuilder = Callable[[Store, int, Rng], Fields]


@dataclass(frozen=True)
class Resource:
    name: str  # the URL segment, e.g. "balance_transactions"
    object: str  # the `object` field, e.g. "balance_transaction"
    prefix: str  # the id prefix, e.g. "txn"
    id_length: int  # characters after the prefix, as in Stripe's ids
    build: Builder
    profile: ProfileBuilder


# Shared pieces ------------------------------------------------------------------------------

BRANDS = WeightedTable(
    {"visa": 50, "mastercard": 30, "amex": 12, "discover": 4, "jcb": 2, "unionpay": 2}
)
FUNDING = WeightedTable({"credit": 60, "debit": 35, "prepaid": 5})
CHECK_RESULTS = WeightedTable({"pass": 85, "unchecked": 6, "unavailable": 5, "fail": 4})
assert set(CHECK_RESULTS.values) <= set(
    values("charge", "payment_method_details.card.checks.cvc_check")
)
ADDRESS_NONE = empty_at("customer", "address")
OUTCOME_NONE = empty_at("charge", "outcome")
CARD_NONE = empty_at("charge", "payment_method_details.card")
THREE_D_SECURE_NONE = empty_at("charge", "payment_method_details.card.three_d_secure")
SOURCE_NONE = empty_at("charge", "source")
DISCOUNT_NONE = empty_at("customer", "discount")
EVIDENCE_NONE = empty_at("dispute", "evidence")
AUTHORIZED = {
    **OUTCOME_NONE,
    "network_status": "approved_by_network",
    "reason": None,
    "seller_message": "Payment complete.",
    "type": "authorized",
}
DECLINED = {
    decline: {
        **OUTCOME_NONE,
        "network_status": decline[4],
        "reason": decline[2],
        "seller_message": "The bank did not return any further details with this decline."
        if decline[3] == "issuer_declined"
        else "Stripe blocked this payment as too risky.",
        "type": decline[3],
    }
    for decline in DECLINES
}


def full_name(rng: Rng) -> tuple[str, str]:
    return rng.pick(FIRST_NAMES), rng.pick(LAST_NAMES)


def email(first: str, last: str, rng: Rng) -> str:
    local = f"{first}.{last}".lower().replace("'", "").replace(" ", "")
    return f"{local}{rng.below(1000)}@{rng.pick(EMAIL_DOMAINS)}"


def address(rng: Rng) -> Fields:
    city, state, country, postal, street = rng.pick(PLACES)
    return {
        "city": city,
        "country": country,
        "line1": f"{rng.between(1, 999)} {street}",
        "line2": f"Apt {rng.between(1, 40)}" if rng.chance(20) else None,
        "postal_code": f"{postal}{rng.digits(2)}",
        "state": state,
    }


def phone(rng: Rng) -> str:
    return f"+1555{rng.digits(7)}"


PRICE_BANDS = ((50, 2_000), (2_000, 10_000), (10_000, 100_000), (100_000, 2_000_000))
METADATA_VALUES: dict[str, Callable[[Rng], str]] = {
    "order_id": lambda rng: f"ord_{rng.digits(7)}",
    "plan": lambda rng: rng.pick(PLANS),
    "channel": lambda rng: rng.pick(CHANNELS),
    "campaign": lambda rng: rng.pick(CAMPAIGNS),
    "internal_ref": lambda rng: rng.token(10),
}


def price(rng: Rng, currency: str) -> int:
    """An amount in minor units: mostly small orders, a long tail of large ones."""
    cents = rng.between(*rng.pick(PRICE_BANDS))
    return cents * 3 // 2 if currency in ZERO_DECIMAL else cents


def metadata(rng: Rng) -> dict[str, str]:
    """Up to three key-value strings as integrations attach them; often none."""
    if not rng.chance(55):
        return {}
    keys = list(METADATA_VALUES)[rng.below(len(METADATA_VALUES)) :][:3]
    return {key: METADATA_VALUES[key](rng) for key in keys}


def midnight(timestamp: int, days: int = 0) -> int:
    return (timestamp // DAY + days) * DAY


# Charges ------------------------------------------------------------------------------------

CHARGE_STATES = ("captured", "uncaptured", "failed", "pending")
PROFILES_PER_STATE = 2_048  # a charge shares all but ids, links and times with ~1/8192 of all
LEGACY_PROFILES = 128  # the last profiles of each state pay by a Source, not a PaymentIntent
UNSETTLED = WeightedTable({"failed": 50, "uncaptured": 35, "pending": 15})


def charge_profile(store: Store, number: int, rng: Rng) -> Fields:
    """What a charge was for, how it was paid and how that went: amount, card, outcome, ..."""
    state = CHARGE_STATES[number // PROFILES_PER_STATE]
    legacy = number % PROFILES_PER_STATE >= PROFILES_PER_STATE - LEGACY_PROFILES
    decline = rng.pick(DECLINES) if state == "failed" else None
    paid = state in ("captured", "uncaptured")
    currency = CURRENCIES.draw(rng)
    amount = price(rng, currency)
    connect = rng.chance(5)
    first, last = full_name(rng)
    brand = BRANDS.draw(rng)
    payment_method = store.foreign_id("src" if legacy else "pm", number)
    billing_address = address(rng) if rng.chance(60) else ADDRESS_NONE
    card = {
        **CARD_NONE,
        "amount_authorized": amount,
        "authorization_code": rng.digits(6),
        "brand": brand,
        "checks": {
            "address_line1_check": CHECK_RESULTS.draw(rng) if billing_address["line1"] else None,
            "address_postal_code_check": CHECK_RESULTS.draw(rng),
            "cvc_check": CHECK_RESULTS.draw(rng),
        },
        "country": billing_address["country"] or rng.pick(PLACES)[2],
        "exp_month": rng.between(1, 12),
        "exp_year": rng.between(2025, 2033),
        "extended_authorization": {"status": "disabled"},
        "fingerprint": rng.token(16),
        "funding": FUNDING.draw(rng),
        "incremental_authorization": {"status": "unavailable"},
        "installments": {
            "plan": {"count": rng.pick((3, 6, 12)), "interval": "month", "type": "fixed_count"}
        }
        if rng.chance(3)
        else None,
        "last4": rng.digits(4),
        "multicapture": {"status": "unavailable"},
        "network": brand,
        "network_token": {"used": rng.chance(30)},
        "network_transaction_id": rng.digits(15),
        "overcapture": {"maximum_amount_capturable": amount, "status": "unavailable"},
        "regulated_status": rng.pick(("regulated", "unregulated")),
        "three_d_secure": {
            **THREE_D_SECURE_NONE,
            "authentication_flow": rng.pick(
                values("charge", "payment_method_details.card.three_d_secure.authentication_flow")
            ),
            "electronic_commerce_indicator": "05",
            "result": "authenticated",
            "transaction_id": f"{rng.token(8)}-{rng.token(4)}-{rng.token(12)}",
            "version": "2.2.0",
        }
        if rng.chance(15)
        else None,
        "wallet": {
            "dynamic_last4": rng.digits(4),
            "type": rng.pick(values("charge", "payment_method_details.card.wallet.type")),
        }
        if rng.chance(20)
        else None,
    }
    owner = {**SOURCE_NONE["owner"], "address": billing_address, "name": f"{first} {last}"}
    return {
        "amount": amount,
        "amount_captured": amount if state == "captured" else 0,
        "application_fee_amount": amount // 10 if connect else None,
        "billing_details": {
            "address": billing_address,
            "email": email(first, last, rng) if rng.chance(70) else None,
            "name": f"{first} {last}",
            "phone": phone(rng) if rng.chance(30) else None,
            "tax_id": None,
        },
        "calculated_statement_descriptor": store.business if paid else None,
        "captured": state == "captured",
        "currency": currency,
        "description": rng.pick(CHARGE_DESCRIPTIONS).format(n=rng.digits(5))
        if rng.chance(70)
        else None,
        "failure_code": decline[0] if decline else None,
        "failure_message": decline[1] if decline else None,
        "fraud_details": {"stripe_report": "fraudulent"}
        if decline and decline[3] == "blocked"
        else {},
        "livemode": False,
        "metadata": metadata(rng),
        "outcome": DECLINED[decline] if decline else AUTHORIZED,
        "paid": paid,
        "payment_method": payment_method,
        "payment_method_details": {"card": card, "type": "card"},
        "shipping": {
            "address": address(rng),
            "carrier": rng.pick(("UPS", "FedEx", "DHL", None)),
            "name": f"{first} {last}",
            "phone": None,
            "tracking_number": rng.digits(12) if rng.chance(50) else None,
        }
        if rng.chance(25)
        else None,
        "source": {
            **SOURCE_NONE,
            "client_secret": f"src_client_secret_{rng.token(24)}",
            "created": store.start - rng.below(365 * DAY),
            "flow": "none",
            "id": payment_method,
            "livemode": False,
            "metadata": {},
            "object": "source",
            "owner": owner,
            "status": "chargeable",
            "type": "card",
            "usage": "reusable",
        }
        if legacy
        else None,
        "receipt_email": email(*full_name(rng), rng) if rng.chance(35) else None,
        "statement_descriptor_suffix": f"ORDER {rng.digits(4)}" if rng.chance(20) else None,
        "status": "failed" if decline else "pending" if state == "pending" else "succeeded",
        "transfer_data": {
            "amount": None,
            "destination": {"id": store.foreign_id("acct", rng.below(5), 16), "object": "account"},
        }
        if connect
        else None,
        "transfer_group": f"group_{1000 + rng.below(40)}" if rng.chance(10) else None,
    }


def charge_profile_number(settled: bool, rng: Rng) -> int:
    """Which profile a charge has: the first draws of its Rng (see Dataset.charge_amount)."""
    state = "captured" if settled else UNSETTLED.draw(rng)
    return CHARGE_STATES.index(state) * PROFILES_PER_STATE + rng.below(PROFILES_PER_STATE)


UNCOUNTED = frozenset({"failed", "canceled"})  # refunds that give the charge nothing back


def refund_totals(amount: int, refunds: Iterable[tuple[int, str]]) -> Fields:
    """A charge's fields that its refunds (amount, status) make: pending ones count, failed
    and canceled ones do not. Generated charges and living ones both get them from here."""
    refunded = sum(part for part, status in refunds if status not in UNCOUNTED)
    return {"amount_refunded": refunded, "refunded": refunded >= amount}


def build_charge(store: Store, index: int, created: int, rng: Rng) -> tuple[Fields, Shared]:
    """A charge; the 70% whose index has a charge balance transaction are captured."""
    settled = store.partner(index) == "charges"
    shared = store.profile("charges", charge_profile_number(settled, rng))
    profile = shared.fields
    customer = (
        store.earlier("customers", index, rng, window=store.count) if rng.chance(85) else None
    )
    charge_id = store.id("charges", index)
    refunds = store.refund_links
    return {
        "id": charge_id,
        "object": "charge",
        "application_fee": store.foreign_id("fee", index)
        if settled and profile["transfer_data"]
        else None,
        "balance_transaction": store.id("balance_transactions", index) if settled else None,
        "created": created,
        "customer": None if customer is None else store.id("customers", customer),
        **refund_totals(
            profile["amount"],
            ((refund.amount, refund.status) for refund in map(refunds.child, refunds.of(index))),
        ),
        "disputed": bool(store.dispute_links.of(index)),
        "payment_intent": None if profile["source"] else store.foreign_id("pi", index),
        "receipt_number": f"{rng.digits(4)}-{rng.digits(4)}"
        if profile["receipt_email"] and profile["paid"]
        else None,
        "receipt_url": f"https://pay.stripe.com/receipts/payment/{rng.token(32)}"
        if profile["paid"]
        else None,
        "review": store.foreign_id("prv", index) if rng.chance(1) else None,
    }, shared


# Customers ----------------------------------------------------------------------------------

TAX_EXEMPT = WeightedTable({"none": 90, "exempt": 5, "reverse": 5})
assert set(TAX_EXEMPT.values) <= set(values("customer", "tax_exempt"))


def customer_profile(store: Store, number: int, rng: Rng) -> Fields:
    """Where a customer lives and how they are invoiced."""
    return {
        "address": address(rng) if rng.chance(70) else ADDRESS_NONE,
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": store.foreign_id("pm", number) if rng.chance(40) else None,
            "footer": None,
            "rendering_options": None
            if rng.chance(80)
            else {"amount_tax_display": "include_inclusive_tax", "template": None},
        },
        "preferred_locales": rng.pick(LOCALES),
        "tax_exempt": TAX_EXEMPT.draw(rng),
    }


def build_customer(store: Store, index: int, created: int, rng: Rng) -> tuple[Fields, Shared]:
    shared = store.profile("customers", rng.below(256))
    first, last = full_name(rng)
    customer_id = store.id("customers", index)
    discount_start = created + rng.below(30 * DAY)
    return {
        "id": customer_id,
        "object": "customer",
        "balance": 0 if rng.chance(85) else rng.between(-50, 200) * 100,
        "created": created,
        "currency": CURRENCIES.draw(rng) if rng.chance(60) else None,
        "default_source": store.foreign_id("card", index) if rng.chance(10) else None,
        "delinquent": rng.chance(4),
        "description": rng.pick(("VIP", "Imported from legacy CRM", "Wholesale", "Trial user"))
        if rng.chance(30)
        else None,
        "discount": {
            **DISCOUNT_NONE,
            "customer": customer_id,
            "end": discount_start + 90 * DAY if rng.chance(50) else None,
            "id": store.foreign_id("di", index),
            "object": "discount",
            "source": {"coupon": f"coupon_{rng.token(8)}", "type": "coupon"},
            "start": discount_start,
        }
        if rng.chance(8)
        else None,
        "email": email(first, last, rng) if rng.chance(90) else None,
        "invoice_prefix": f"{rng.below(16**8):08X}",
        "livemode": False,
        "metadata": metadata(rng),
        "name": f"{first} {last}" if rng.chance(90) else None,
        "next_invoice_sequence": rng.between(1, 40),
        "phone": phone(rng) if rng.chance(40) else None,
        "shipping": {
            "address": address(rng),
            "carrier": None,
            "name": f"{first} {last}",
            "phone": None,
            "tracking_number": None,
        }
        if rng.chance(30)
        else None,
    }, shared


# Refunds ------------------------------------------------------------------------------------

REFUND_STATUS = WeightedTable({"succeeded": 80, "pending": 12, "failed": 4, "canceled": 4})
REFUND_REASON = WeightedTable(
    {None: 40, "requested_by_customer": 40, "duplicate": 10, "fraudulent": 10}
)


def refund_profile(store: Store, number: int, rng: Rng) -> Fields:
    kind = ("refund", "reversal", "pending")[number % 3]
    return {"destination_details": {"card": {"type": kind}, "type": "card"}}


def settled(status: str, created: int, end: int) -> str:
    """A refund pending for more than a day at the data set's end has succeeded."""
    return "succeeded" if status == "pending" and created < end - DAY else status


def build_refund(store: Store, index: int, created: int, rng: Rng) -> tuple[Fields, Shared]:
    """A refund of a recent captured charge (see links.py), in its currency."""
    link = store.refund_links.child(index)
    charge = None if link.charge is None else store.entry("charges", link.charge)
    has_transaction = store.partner(index) == "refunds"
    return {
        "id": store.id("refunds", index),
        "object": "refund",
        "amount": link.amount,
        "balance_transaction": store.id("balance_transactions", index) if has_transaction else None,
        "charge": charge.get("id") if charge else None,
        "created": created,
        "currency": charge.get("currency") if charge else "usd",
        "customer": charge.get("customer") if charge else None,
        "metadata": metadata(rng),
        "payment_intent": charge.get("payment_intent") if charge else None,
        "payment_method": charge.get("payment_method") if charge else None,
        "reason": REFUND_REASON.draw(rng),
        "receipt_number": f"{rng.digits(4)}-{rng.digits(4)}" if rng.chance(30) else None,
        "status": link.status,
    }, store.profile("refunds", rng.below(3))


# Disputes -----------------------------------------------------------------------------------

# A generated dispute is a chargeback (funds withdrawn) exactly when its index's balance
# transaction is its withdrawal (Dataset.partner), and `won` exactly when a later one reinstates
# its funds (Dataset.reversal); the rest of its status is drawn here among the statuses that fit.
CHARGEBACK_OPEN = WeightedTable({"lost": 50, "needs_response": 25, "under_review": 25})
INQUIRY_STATUS = WeightedTable(
    {"warning_closed": 50, "warning_needs_response": 20, "warning_under_review": 20,
     "charge_refunded": 10}
)  # fmt: skip
DISPUTE_STATUSES = frozenset({"won", *CHARGEBACK_OPEN.values, *INQUIRY_STATUS.values})
DISPUTE_LIFE = 60 * DAY  # disputes older than this at the data set's end are closed
DISPUTE_ENDS = {
    "needs_response": "lost",
    "under_review": "lost",  # a win would have its reinstatement, so it is `won` already
    "warning_needs_response": "warning_closed",
    "warning_under_review": "warning_closed",
}
DISPUTE_FEE = 1_500
EVIDENCE_PROFILES = 32  # profiles below this number carry submitted evidence
assert set(DISPUTE_STATUSES) <= set(values("dispute", "status"))


def dispute_adjustment(amount: int, reinstated: bool) -> tuple[int, int, str]:
    """A dispute's balance transaction (amount, fee, reporting_category): its funds withdrawn
    less the dispute fee, or, won, reinstated with it. Generated and living disputes' alike."""
    if reinstated:
        return amount + DISPUTE_FEE, 0, "dispute_reversal"
    return -amount, DISPUTE_FEE, "dispute"


def dispute_money(store: Store, index: int) -> tuple[Entry | None, int, str]:
    """A generated dispute's charge, amount and currency, without building the dispute (its
    balance transactions need them, and it embeds them)."""
    link = store.dispute_links.child(index)
    charge = None if link.charge is None else store.entry("charges", link.charge)
    if charge is None:
        return None, link.amount, "usd"
    return charge, charge.get("amount"), charge.get("currency")


def dispute_status(store: Store, index: int, created: int, chargeback: bool, rng: Rng) -> str:
    """A status that fits the dispute's balance transactions (see CHARGEBACK_OPEN)."""
    old = created < store.end - DISPUTE_LIFE  # long over: open states have ended
    if not chargeback:
        status = INQUIRY_STATUS.draw(rng)
    elif store.reversal(index) is not None:
        return "won"
    elif store.wins(index):  # it wins after the data set's end: open until then
        status = "under_review"
    else:
        status = CHARGEBACK_OPEN.draw(rng)
    return DISPUTE_ENDS.get(status, status) if old else status


def rendered(store: Store, resource: str, index: int) -> Fields:
    """An object as the API serves it, to embed in another."""
    return json.loads(store.entry(resource, index).json)


def dispute_profile(store: Store, number: int, rng: Rng) -> Fields:
    """The card network's case and the evidence the merchant submitted, if any."""
    brand = rng.pick(tuple(NETWORK_REASON_CODES))
    first, last = full_name(rng)
    evidence = {**EVIDENCE_NONE, "enhanced_evidence": {}}
    if number < EVIDENCE_PROFILES:
        evidence |= {
            "customer_email_address": email(first, last, rng),
            "customer_name": f"{first} {last}",
            "product_description": rng.pick(("Annual subscription", "Hardware order", "Gift card")),
            "uncategorized_text": "The customer confirmed receipt by email.",
            "uncategorized_file": store.foreign_id("file", number),
        }
    return {
        "enhanced_eligibility_types": ["visa_compelling_evidence_3"] if brand == "visa" else [],
        "evidence": evidence,
        "payment_method_details": {
            "card": {
                "brand": brand,
                "case_type": rng.pick(("chargeback", "inquiry")),
                "network": brand,
                "network_reason_code": rng.pick(NETWORK_REASON_CODES[brand]),
            },
            "type": "card",
        },
    }


def build_dispute(store: Store, index: int, created: int, rng: Rng) -> tuple[Fields, Shared]:
    """A dispute of an earlier captured charge (see links.py), for its amount, with a deadline
    for evidence; a chargeback embeds its balance transactions, as the API serves them."""
    charge, amount, currency = dispute_money(store, index)
    chargeback = store.partner(index) == "disputes"
    status = dispute_status(store, index, created, chargeback, rng)
    reversal = store.reversal(index) if chargeback else None
    transactions = [index] if reversal is None else [index, reversal]
    submitted = status in ("won", "lost", "under_review", "warning_under_review")
    due_by = midnight(created, rng.between(7, 21)) - 1
    return {
        "id": store.id("disputes", index),
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [
            rendered(store, "balance_transactions", transaction) for transaction in transactions
        ]
        if chargeback
        else [],
        "charge": charge.get("id") if charge else None,
        "created": created,
        "currency": currency,
        "evidence_details": {
            "due_by": due_by,
            "enhanced_eligibility": {},
            "has_evidence": submitted,
            "past_due": not submitted and due_by < store.end,
            "submission_count": int(submitted),
        },
        "is_charge_refundable": status.startswith("warning"),
        "livemode": False,
        "metadata": metadata(rng),
        "payment_intent": charge.get("payment_intent") if charge else None,
        "reason": rng.pick(values("dispute", "reason")),
        "status": status,
    }, store.profile("disputes", rng.below(EVIDENCE_PROFILES * 2))


# Payouts ------------------------------------------------------------------------------------

PAYOUT_STATUS = WeightedTable(
    {"paid": 82, "in_transit": 6, "pending": 4, "failed": 4, "canceled": 4}
)
PAYOUT_PROFILES = 4  # three bank accounts, and one debit card for instant payouts
assert set(PAYOUT_STATUS.values) <= set(values("payout", "status"))


def payout_profile(store: Store, number: int, rng: Rng) -> Fields:
    """Where payouts go: one of the account's bank accounts, or its card."""
    card = number == PAYOUT_PROFILES - 1
    return {
        "destination": store.foreign_id("card" if card else "ba", number),
        "method": "instant" if card else "standard",
        "source_type": "card",
        "type": "card" if card else "bank_account",
    }


def build_payout(store: Store, index: int, created: int, rng: Rng) -> tuple[Fields, Shared]:
    """A payout; those whose index has a payout balance transaction are automatic."""
    has_transaction = store.partner(index) == "payouts"
    automatic = has_transaction or rng.chance(50)
    status = PAYOUT_STATUS.draw(rng)
    failure = rng.pick(PAYOUT_FAILURES) if status == "failed" else (None, None)
    arrival = midnight(created, rng.between(1, 4))
    if status in ("pending", "in_transit") and arrival <= store.end:
        status = "paid"  # arrived: the living account's lifecycles (born.py) do the rest
    return {
        "id": store.id("payouts", index),
        "object": "payout",
        "amount": rng.between(1_000, 5_000_000),
        "arrival_date": arrival,
        "automatic": automatic,
        "balance_transaction": store.id("balance_transactions", index) if has_transaction else None,
        "created": created,
        "currency": "usd" if rng.chance(85) else CURRENCIES.draw(rng),
        "description": "STRIPE PAYOUT" if automatic else rng.pick(("Manual payout", None)),
        "failure_code": failure[0],
        "failure_message": failure[1],
        "livemode": False,
        "metadata": metadata(rng),
        "reconciliation_status": "completed"
        if automatic and status == "paid"
        else "not_applicable",
        "statement_descriptor": None if automatic else store.business,
        "status": status,
        "trace_id": {"status": "supported", "value": rng.digits(15)}
        if status == "paid"
        else {"status": "pending", "value": None},
    }, store.profile("payouts", 0 if rng.chance(70) else rng.below(PAYOUT_PROFILES))


# Balance transactions -----------------------------------------------------------------------

# Whose balance transaction generated transaction i is (Dataset.partner): object i of one of
# these resources. Object counts are equal per resource, so this is also the share of charges
# captured, disputes that are chargebacks, ...: the transactions keep a Stripe account's mix
# (most are charges', most charges captured), so with as many disputes as charges (Stripe has
# one in hundreds) only about a sixth of them are chargebacks, the rest inquiries. Besides,
# some transactions reinstate a won dispute's funds ("dispute_reversals"), instead of the kind
# drawn here.
SOURCE_KINDS = WeightedTable({"charges": 60, "refunds": 12, "payouts": 12, "disputes": 16})
IMPORTED_KINDS = WeightedTable({"charges": 70, "refunds": 15, "payouts": 15})  # add_objects'
BALANCE_TYPE = {
    "charges": "charge",
    "refunds": "refund",
    "payouts": "payout",
    "disputes": "adjustment",
    "dispute_reversals": "adjustment",
}
CATEGORY = {
    "charge": "charge",
    "refund": "refund",
    "refund_failure": "refund_failure",
    "payout": "payout",
    "payout_cancel": "payout_reversal",
    "payout_failure": "payout_reversal",
    "adjustment": "dispute",  # a dispute's withdrawal; its reinstatement says dispute_reversal
}
assert set(BALANCE_TYPE.values()) | set(CATEGORY) <= set(values("balance_transaction", "type"))


def stripe_fee(amount: int, currency: str) -> int:
    return amount * 29 // 1000 + (0 if currency in ZERO_DECIMAL else 30)


def transaction_fields(
    kind: str,
    source: str | None,
    amount: int,
    currency: str,
    created: int,
    fee: int = 0,
    available_on: int | None = None,
    category: str | None = None,
    as_of: int | None = None,
    description: str | None = None,
) -> Fields:
    """A balance transaction's fields, for generated and living ones alike: `pending` until
    `available_on` (default `created`), as it is at `as_of` (default `created`)."""
    available_on = created if available_on is None else available_on
    as_of = created if as_of is None else as_of
    fee_details = [
        {
            "amount": fee,
            "application": None,
            "currency": currency,
            "description": "Stripe processing fees" if kind == "charge" else "Dispute fee",
            "type": "stripe_fee",
        }
    ]
    return {
        "amount": amount,
        "available_on": available_on,
        "balance_type": "payments",
        "created": created,
        "currency": currency,
        "description": description,
        "fee": fee,
        "fee_details": fee_details if fee else [],
        "net": amount - fee,
        "reporting_category": category or CATEGORY[kind],
        "source": source,
        "status": "pending" if available_on > as_of else "available",
        "type": kind,
    }


def no_profile(store: Store, number: int, rng: Rng) -> Fields:
    return {}


def build_balance_transaction(
    store: Store, index: int, created: int, rng: Rng
) -> tuple[Fields, Shared]:
    """The balance side of object `index` of one of the other resources (or, for added ones,
    of an existing object): charges add funds less Stripe's fee, refunds and payouts take them,
    a chargeback takes its amount and the dispute fee; or a won dispute's reinstatement."""
    partner = store.partner(index)
    if partner in ("disputes", "dispute_reversals"):
        dispute = index if partner == "disputes" else index - store.reversal_lag
        _, gross, currency = dispute_money(store, dispute)
        amount, fee, category = dispute_adjustment(gross, partner == "dispute_reversals")
        fields = transaction_fields(
            "adjustment", store.id("disputes", dispute), amount, currency, created, fee,
            category=category, as_of=store.end,
        )  # fmt: skip
    else:
        kind = partner or IMPORTED_KINDS.draw(rng)
        source_index = index if partner else store.earlier(kind, index, rng, store.count)
        source = None if source_index is None else store.entry(kind, source_index)
        gross = source.get("amount") if source else price(rng, "usd")
        currency = source.get("currency") if source else "usd"
        charge = kind == "charges"
        fields = transaction_fields(
            BALANCE_TYPE[kind],
            source.get("id") if source else None,
            gross if charge else -gross,
            currency,
            created,
            stripe_fee(gross, currency) if charge else 0,
            midnight(created, 2) if charge else created,
            as_of=store.end,
            description=source.get("description") if source else None,
        )
    own = {"id": store.id("balance_transactions", index), "object": "balance_transaction"}
    return own | fields, store.profile("balance_transactions", 0)


RESOURCES = {
    resource.name: resource
    for resource in (
        Resource(
            "balance_transactions",
            "balance_transaction",
            "txn",
            24,
            build_balance_transaction,
            no_profile,
        ),
        Resource("charges", "charge", "ch", 24, build_charge, charge_profile),
        Resource("customers", "customer", "cus", 14, build_customer, customer_profile),
        Resource("disputes", "dispute", "dp", 24, build_dispute, dispute_profile),
        Resource("payouts", "payout", "po", 24, build_payout, payout_profile),
        Resource("refunds", "refund", "re", 24, build_refund, refund_profile),
    )
}
