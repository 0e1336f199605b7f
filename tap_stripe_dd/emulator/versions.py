"""API versions: how an object is rendered for a `Stripe-Version`.

Objects are kept in one canonical shape, that of versions since 2022-11-15 (the tap pins
2024-06-20); older versions are rendered from it. The emulator knows one cut-off, modelled on
Stripe's 2022-11-15 release, and renders versions before it differently in two ways a client
can get wrong:

- `charge.refunds` (a field removed, a nested list): before 2022-11-15 a charge embeds its
  refunds as a list (`{"object": "list", "data": [...10 newest], "has_more", "total_count",
  "url"}`); from 2022-11-15 the field is absent unless asked for with `expand[]=refunds`.
- `charge.payment_method_details.card.three_d_secure` (a field renamed and reshaped): before
  2022-11-15 it has the booleans `authenticated` and `succeeded`; from then on `result`
  ("authenticated", ...) and `result_reason` instead.

Each account has a default version (`--account-api-version`, default 2022-08-01, older than
the tap's pinned one): a request without `Stripe-Version` and every event's `data.object` are
rendered in it, as on Stripe.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

CUTOFF = "2022-11-15"
DEFAULT_ACCOUNT_VERSION = "2022-08-01"
LATEST = "2024-06-20"
VERSION = re.compile(r"(20[1-9][0-9])-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])(\.[a-z]+)?")
SUBLIST_LIMIT = 10  # sub-lists embedded in objects stop here, with has_more
Obj = dict[str, Any]
RefundsOf = Callable[[str], Sequence[Obj]]  # a charge's refunds, newest first


def valid(version: str) -> bool:
    return VERSION.fullmatch(version) is not None


def canonical(version: str) -> bool:
    """Whether objects render in this version exactly as they are kept (the fast path)."""
    return version[:10] >= CUTOFF


def sublist(url: str, items: Sequence[Obj], total: int | None = None) -> Obj:
    """A list embedded in an object: its first items of `total` (default: all of them)."""
    total = len(items) if total is None else total
    return {
        "object": "list",
        "data": list(items[:SUBLIST_LIMIT]),
        "has_more": total > SUBLIST_LIMIT,
        "total_count": total,
        "url": url,
    }


def render(resource: str, obj: Obj, version: str, refunds_of: RefundsOf) -> Obj:
    """The object as `version` shows it (a new dict; `obj` is never changed)."""
    if canonical(version) or resource != "charges" or obj.get("deleted"):
        return obj
    refunds = [render("refunds", refund, version, refunds_of) for refund in refunds_of(obj["id"])]
    old = {**obj, "refunds": sublist(f"/v1/charges/{obj['id']}/refunds", refunds)}
    details = obj.get("payment_method_details") or {}
    card = details.get("card") or {}
    secure = card.get("three_d_secure")
    if secure is not None:
        result = secure.get("result")
        legacy = {k: v for k, v in secure.items() if k not in ("result", "result_reason")}
        legacy |= {
            "authenticated": result == "authenticated",
            "succeeded": result in ("authenticated", "attempt_acknowledged"),
        }
        old["payment_method_details"] = {**details, "card": {**card, "three_d_secure": legacy}}
    return old
