"""The write endpoints, form-encoded as Stripe takes them. Each checks its parameters as
Stripe does (unknown ones, missing ones, unknown ids, amounts), makes its change through
lifecycles.py (which records the events) and answers the object after it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from tap_stripe_dd.emulator.disputes import CLOSED, close, submit
from tap_stripe_dd.emulator.lifecycles import (
    cancel_payout,
    create_charge,
    create_customer,
    create_payout,
    create_refund,
    delete_customer,
)
from tap_stripe_dd.emulator.protocol import integer, invalid, no_such, unknown_parameter
from tap_stripe_dd.emulator.versions import Obj
from tap_stripe_dd.emulator.vocabulary import CURRENCIES, ZERO_DECIMAL

if TYPE_CHECKING:
    from tap_stripe_dd.emulator.state import State

CUSTOMER_FIELDS = ("email", "name", "description", "phone")
NESTED = ("metadata", "evidence")
EVIDENCE_FIELDS = frozenset(
    {
        "access_activity_log",
        "billing_address",
        "cancellation_policy",
        "cancellation_policy_disclosure",
        "cancellation_rebuttal",
        "customer_communication",
        "customer_email_address",
        "customer_name",
        "customer_purchase_ip",
        "customer_signature",
        "duplicate_charge_documentation",
        "duplicate_charge_explanation",
        "duplicate_charge_id",
        "product_description",
        "receipt",
        "refund_policy",
        "refund_policy_disclosure",
        "refund_refusal_explanation",
        "service_date",
        "service_documentation",
        "shipping_address",
        "shipping_carrier",
        "shipping_date",
        "shipping_documentation",
        "shipping_tracking_number",
        "uncategorized_file",
        "uncategorized_text",
    }
)
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
Write = Callable[["State", int, str | None, "Form", str], tuple[str, int]]


SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥"}


def money(amount: int, currency: str) -> str:
    """An amount as Stripe's messages write it: "$6.00", "€7.00" (others "6.00 CHF")."""
    major = str(amount) if currency in ZERO_DECIMAL else f"{amount // 100}.{amount % 100:02d}"
    symbol = SYMBOLS.get(currency)
    return f"{symbol}{major}" if symbol else f"{major} {currency.upper()}"


class Form:
    """A write's parameters: plain ones, and `metadata[k]` / `evidence[k]` as dicts."""

    def __init__(self, params: Iterable[tuple[str, str]], allowed: Iterable[str]) -> None:
        self.plain: dict[str, str] = {}
        self.nested: dict[str, dict[str, str]] = {}
        allowed = set(allowed)
        for name, value in params:
            base, bracket, key = name.partition("[")
            if bracket and base in allowed and base in NESTED and key.endswith("]") and key[:-1]:
                if base == "evidence" and key[:-1] not in EVIDENCE_FIELDS:
                    raise unknown_parameter(name)
                self.nested.setdefault(base, {})[key[:-1]] = value
            elif name in allowed and name not in NESTED:
                self.plain[name] = value
            else:
                raise unknown_parameter(name)

    def required(self, name: str) -> str:
        if name not in self.plain:
            raise invalid(f"Missing required param: {name}.", name, "parameter_missing")
        return self.plain[name]

    def amount(self, name: str = "amount") -> int:
        amount = integer(name, self.required(name))
        if amount < 1:
            raise invalid("Invalid positive integer", name, "parameter_invalid_integer")
        return amount

    def currency(self) -> str:
        currency = self.required("currency").lower()
        if currency not in CURRENCIES.values:
            raise invalid(f"Invalid currency: {currency}.", "currency")
        return currency

    def metadata(self, old: Obj | None = None) -> dict[str, str]:
        """Stripe's metadata update: keys set, and keys with an empty value removed."""
        merged = {**(old or {}), **self.nested.get("metadata", {})}
        return {key: value for key, value in merged.items() if value != ""}

    def fields(self, names: Iterable[str]) -> Obj:
        return {name: self.plain[name] or None for name in names if name in self.plain}


def existing(state: State, resource: str, object_id: str, param: str = "id") -> int:
    found = state.find(object_id)
    if (
        found is None
        or found[0] != resource
        or (resource == "customers" and found[1] in state.deleted)
    ):
        raise no_such(resource, object_id, param)
    return found[1]


def customer_create(
    state: State, t: int, _: str | None, form: Form, request: str
) -> tuple[str, int]:
    fields = {**form.fields(CUSTOMER_FIELDS), "metadata": form.metadata()}
    return "customers", create_customer(state, t, fields, request)


def customer_update(
    state: State, t: int, object_id: str | None, form: Form, request: str
) -> tuple[str, int]:
    index = existing(state, "customers", object_id or "")
    old = state.get("customers", index)
    changes = {**form.fields(CUSTOMER_FIELDS), "metadata": form.metadata(old["metadata"])}
    state.change(t, "customers", index, changes, ["customer.updated"], request)
    return "customers", index


def customer_delete(
    state: State, t: int, object_id: str | None, form: Form, request: str
) -> tuple[str, int]:
    index = existing(state, "customers", object_id or "")
    delete_customer(state, t, index, request)
    return "customers", index


def charge_create(state: State, t: int, _: str | None, form: Form, request: str) -> tuple[str, int]:
    amount, currency = form.amount(), form.currency()
    customer = form.plain.get("customer")
    if customer:
        existing(state, "customers", customer, "customer")
    extra = {**form.fields(("description",)), "metadata": form.metadata()}
    index = create_charge(state, t, amount, currency, customer or None, "succeeded", extra, request)
    return "charges", index


def charge_update(
    state: State, t: int, object_id: str | None, form: Form, request: str
) -> tuple[str, int]:
    index = existing(state, "charges", object_id or "")
    old = state.get("charges", index)
    changes = {**form.fields(("description",)), "metadata": form.metadata(old["metadata"])}
    state.change(t, "charges", index, changes, ["charge.updated"], request)
    return "charges", index


def refund_create(state: State, t: int, _: str | None, form: Form, request: str) -> tuple[str, int]:
    charge_id = form.required("charge")
    index = existing(state, "charges", charge_id, "charge")
    charge = state.get("charges", index)
    left = charge["amount"] - charge["amount_refunded"]
    if not charge["paid"]:
        raise invalid(f"Charge {charge_id} has not succeeded and cannot be refunded.", "charge")
    if left <= 0:
        raise invalid(
            f"Charge {charge_id} has already been refunded.", "charge", "charge_already_refunded"
        )
    amount = form.amount() if "amount" in form.plain else left
    if amount > left:
        raise invalid(  # Stripe's text, in the charge's currency, and no code
            f"Refund amount ({money(amount, charge['currency'])}) is greater than unrefunded "
            f"amount on charge ({money(left, charge['currency'])})",
            "amount",
            None,
        )
    reason = form.plain.get("reason") or None
    if reason is not None and reason not in REFUND_REASONS:
        raise invalid(f"Invalid reason: must be one of {', '.join(REFUND_REASONS)}", "reason")
    refund = create_refund(state, t, index, amount, reason, request)
    if form.nested.get("metadata"):
        state.change(t, "refunds", refund, {"metadata": form.metadata()}, ())
    return "refunds", refund


def dispute_update(
    state: State, t: int, object_id: str | None, form: Form, request: str
) -> tuple[str, int]:
    index = existing(state, "disputes", object_id or "")
    dispute = state.get("disputes", index)
    evidence = form.nested.get("evidence")
    if evidence and dispute["status"] in CLOSED:
        raise invalid("This dispute is already closed; its evidence cannot be changed.")
    submitting = form.plain.get("submit", "true") == "true"
    if evidence and submitting:
        submit(state, t, index, evidence, request)
        evidence = None
    changes: Obj = {"metadata": form.metadata(dispute["metadata"])}
    if evidence:
        changes["evidence"] = {**dispute["evidence"], **evidence}
    if changes["metadata"] != dispute["metadata"] or evidence:
        state.change(t, "disputes", index, changes, ["charge.dispute.updated"], request)
    return "disputes", index


def dispute_close(
    state: State, t: int, object_id: str | None, form: Form, request: str
) -> tuple[str, int]:
    index = existing(state, "disputes", object_id or "")
    if state.get("disputes", index)["status"] in CLOSED:
        raise invalid("This dispute is already closed.", code="dispute_already_closed")
    close(state, t, index, "lost", request)
    return "disputes", index


def payout_create(state: State, t: int, _: str | None, form: Form, request: str) -> tuple[str, int]:
    amount, currency = form.amount(), form.currency()
    index = create_payout(state, t, amount, currency, False, request)
    extra = {**form.fields(("description", "statement_descriptor")), "metadata": form.metadata()}
    if any(extra.values()):
        state.change(t, "payouts", index, extra, ())
    return "payouts", index


def payout_cancel(
    state: State, t: int, object_id: str | None, form: Form, request: str
) -> tuple[str, int]:
    index = existing(state, "payouts", object_id or "")
    if state.get("payouts", index)["status"] != "pending":
        raise invalid("Payouts can only be canceled while they are pending.")
    cancel_payout(state, t, index, request)
    return "payouts", index


# (method, resource, has id, action) -> (write, parameters it takes)
ROUTES: dict[tuple[str, str, bool, str], tuple[Write, tuple[str, ...]]] = {
    ("POST", "customers", False, ""): (customer_create, (*CUSTOMER_FIELDS, "metadata")),
    ("POST", "customers", True, ""): (customer_update, (*CUSTOMER_FIELDS, "metadata")),
    ("DELETE", "customers", True, ""): (customer_delete, ()),
    ("POST", "charges", False, ""): (
        charge_create,
        ("amount", "currency", "customer", "description", "metadata", "source"),
    ),
    ("POST", "charges", True, ""): (charge_update, ("description", "metadata")),
    ("POST", "refunds", False, ""): (refund_create, ("charge", "amount", "reason", "metadata")),
    ("POST", "disputes", True, ""): (dispute_update, ("metadata", "evidence", "submit")),
    ("POST", "disputes", True, "close"): (dispute_close, ()),
    ("POST", "payouts", False, ""): (
        payout_create,
        ("amount", "currency", "description", "metadata", "statement_descriptor"),
    ),
    ("POST", "payouts", True, "cancel"): (payout_cancel, ()),
}


def write(
    state: State, t: int, method: str, parts: list[str], params: Iterable[tuple[str, str]]
) -> tuple[str, int, str] | None:
    """Runs the write `parts` names ([resource, id?, action?]); None if there is no such
    endpoint. Returns (resource, index, request id)."""
    resource, object_id, verb = [*parts, "", ""][:3]
    route = ROUTES.get((method, resource, bool(object_id), verb))
    if route is None or len(parts) > 3:
        return None
    function, allowed = route
    form = Form(params, allowed)
    request = state.write_request()
    resource, index = function(state, t, object_id or None, form, request)
    return resource, index, request
