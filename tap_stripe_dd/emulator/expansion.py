"""`expand[]` (and `expand[0]`, ...): ids replaced by the objects they name, as Stripe does.

Only links between the six resources are expandable (the emulator serves nothing else), to
at most four levels; a list's expansions start with `data.`. Anything else gets Stripe's 400.
An expanded object is rendered in the request's version, with its own expansions applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tap_stripe_dd.emulator.protocol import StripeError
from tap_stripe_dd.emulator.versions import Obj, sublist

ANY = "*"  # a balance transaction's source: a charge, refund, payout or dispute
REFUNDS = "refunds[]"  # a charge's refunds: a list
LINKS: dict[str, dict[str, str]] = {
    "balance_transactions": {"source": ANY},
    "charges": {
        "balance_transaction": "balance_transactions",
        "customer": "customers",
        "failure_balance_transaction": "balance_transactions",
        "refunds": REFUNDS,
    },
    "customers": {},
    "disputes": {"charge": "charges"},
    "payouts": {
        "balance_transaction": "balance_transactions",
        "failure_balance_transaction": "balance_transactions",
    },
    "refunds": {
        "balance_transaction": "balance_transactions",
        "charge": "charges",
        "failure_balance_transaction": "balance_transactions",
    },
}
MAX_DEPTH = 4
Tree = dict[str, "Tree"]
Lookup = Callable[[str], tuple[str, Obj] | None]  # id -> (resource, object as rendered)


def split(params: Iterable[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
    """(the other parameters, the expansions asked for)."""
    rest, paths = [], []
    for name, value in params:
        if name == "expand[]" or (name.startswith("expand[") and name[7:-1].isdigit()):
            paths.append(value)
        else:
            rest.append((name, value))
    return rest, paths


def cannot(path: str, hint: str | None = None) -> StripeError:
    message = f"This property cannot be expanded ({path})."
    if hint:
        message += f" You may want to try expanding '{hint}' instead."
    return StripeError(400, message, param="expand")


def tree(resource: str, paths: list[str], listing: bool) -> Tree:
    """The expansions as a tree, checked against what each resource can expand."""
    root: Tree = {}
    for path in paths:
        parts = path.split(".")
        if listing:
            if parts[0] != "data":
                valid = parts[0] in LINKS[resource]
                raise cannot(path, f"data.{path}" if valid else None)
            parts = parts[1:]
        if not parts or len(parts) > MAX_DEPTH:
            raise cannot(path)
        current, node = resource, root
        for part in parts:
            if current != ANY and part not in LINKS.get(current, {}):
                raise cannot(path)
            current = LINKS[current][part] if current != ANY else ANY
            current = "refunds" if current == REFUNDS else current
            node = node.setdefault(part, {})
    return root


def expand(
    resource: str, obj: Obj, expansions: Tree, lookup: Lookup, refunds: Callable[[str], list[Obj]]
) -> Obj:
    if not expansions:
        return obj
    obj = dict(obj)
    for field, below in expansions.items():
        if resource == "charges" and field == "refunds":
            items = [
                expand("refunds", refund, below, lookup, refunds) for refund in refunds(obj["id"])
            ]
            obj["refunds"] = sublist(f"/v1/charges/{obj['id']}/refunds", items)
            continue
        value = obj.get(field)
        found = lookup(value) if isinstance(value, str) else None
        if found is not None:
            obj[field] = expand(found[0], found[1], below, lookup, refunds)
    return obj
