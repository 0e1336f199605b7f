"""Disputes and their balance transactions over HTTP, as Stripe keeps them: a chargeback's funds
withdrawn (and, won, reinstated) are `adjustment` balance transactions, embedded in the dispute
and listed in /v1/balance_transactions; an inquiry has none."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import requests
from test_emulator import AUTH, NOW, get, walk
from test_emulator_living import DAY, advance

from tap_stripe_dd.emulator import StripeEmulator

END = 1_767_225_599  # 2025-12-31: a data set over long before NOW, as generated
FEE = 1_500  # Stripe's dispute fee (USD)
INQUIRY = ("warning_needs_response", "warning_under_review", "warning_closed", "charge_refunded")


@pytest.fixture(scope="module")
def settled() -> Iterator[tuple[StripeEmulator, list[dict], list[dict]]]:
    """A data set that ended months before the clock: every object as generated."""
    with StripeEmulator(seed=21, objects=2_500, created_to=END, now=NOW, frozen=True) as emu:
        yield emu, walk(emu, "disputes"), walk(emu, "balance_transactions")


def test_chargebacks_embed_their_listed_balance_transactions(settled):
    emu, disputes, transactions = settled
    listed = {t["id"]: t for t in transactions}
    chargebacks = [d for d in disputes if d["status"] not in INQUIRY]
    statuses = Counter(d["status"] for d in chargebacks)
    # As many disputes as charges, and the transactions' mix an account's: a sixth chargebacks.
    assert len(disputes) / 10 < len(chargebacks) < len(disputes) / 4
    assert statuses["won"] and statuses["lost"]
    kinds = Counter(t["type"] for t in transactions)
    assert kinds["charge"] > len(transactions) / 2, kinds
    for dispute in chargebacks:
        withdrawn, *reinstated = dispute["balance_transactions"]
        assert withdrawn == listed[withdrawn["id"]]  # field by field, as listed
        assert (
            withdrawn["type"],
            withdrawn["reporting_category"],
            withdrawn["amount"],
            withdrawn["fee"],
            withdrawn["net"],
            withdrawn["currency"],
            withdrawn["source"],
            withdrawn["created"],
            withdrawn["status"],
        ) == (
            "adjustment",
            "dispute",
            -dispute["amount"],
            FEE,
            -dispute["amount"] - FEE,
            dispute["currency"],
            dispute["id"],
            dispute["created"],
            "available",
        )
        assert len(reinstated) == (dispute["status"] == "won")
        for back in reinstated:
            assert back == listed[back["id"]]
            assert (back["type"], back["reporting_category"], back["source"]) == (
                "adjustment",
                "dispute_reversal",
                dispute["id"],
            )
            assert back["amount"] == back["net"] == dispute["amount"] + FEE
            assert dispute["created"] + 7 * DAY <= back["created"] <= END
    won = next(d for d in chargebacks if d["status"] == "won")
    for embedded in won["balance_transactions"]:  # and as retrieved
        assert get(emu, f"/v1/balance_transactions/{embedded['id']}").json() == embedded
    assert get(emu, f"/v1/disputes/{won['id']}").json() == won


def test_inquiries_have_no_balance_transactions(settled):
    _, disputes, _ = settled
    inquiries = [d for d in disputes if d["status"] in INQUIRY]
    assert {d["status"] for d in inquiries} == set(INQUIRY)
    assert not [d["id"] for d in inquiries if d["balance_transactions"]]


def test_every_adjustment_is_embedded_by_the_dispute_it_names(settled):
    emu, disputes, transactions = settled
    by_id = {d["id"]: d for d in disputes}
    adjustments = [t for t in transactions if t["type"] == "adjustment"]
    embedded = [t for d in disputes for t in d["balance_transactions"]]
    assert len({t["id"] for t in transactions}) == len(transactions) == 2_500
    assert sorted(t["id"] for t in adjustments) == sorted(t["id"] for t in embedded)
    for transaction in adjustments:
        assert transaction in by_id[transaction["source"]]["balance_transactions"]
    assert walk(emu, "balance_transactions", type="adjustment") == adjustments
    keys = [(t["created"], t["id"]) for t in transactions]  # each at its created, newest first
    assert keys == sorted(keys, reverse=True) and keys[0][0] <= END
    won = [d for d in disputes if d["status"] == "won"][:5]
    for dispute in won:
        assert (
            walk(emu, "balance_transactions", source=dispute["id"])
            == (dispute["balance_transactions"][::-1])
        )
        back = dispute["balance_transactions"][1]
        moment = {"created[gte]": back["created"], "created[lte]": back["created"]}
        assert back in walk(emu, "balance_transactions", **moment)


def test_current_balance_transactions_are_the_http_list(settled):
    emu, _, transactions = settled
    assert emu.current("balance_transactions") == transactions


@pytest.fixture
def living() -> Iterator[StripeEmulator]:
    """A data set that ends at the clock's start: its young disputes live their lifecycle."""
    with StripeEmulator(seed=3, objects=3_000, now=NOW, frozen=True, events_lag=0) as emu:
        yield emu


def test_young_disputes_won_by_their_lifecycle_end_withdrawn_and_reinstated(living):
    transactions = walk(living, "balance_transactions")
    assert len(transactions) == 3_000  # the born lifecycles before now added none
    before = {d["id"]: d for d in walk(living, "disputes")}
    open_ = [d for d in before.values() if d["status"] in ("needs_response", "under_review")]
    assert open_ and all(len(d["balance_transactions"]) == 1 for d in open_)
    advance(living, 120 * DAY)
    after = {d["id"]: d for d in walk(living, "disputes")}
    listed = {t["id"]: t for t in walk(living, "balance_transactions")}
    won = [after[d["id"]] for d in open_ if after[d["id"]]["status"] == "won"]
    assert won and {after[d["id"]]["status"] for d in open_} <= {"won", "lost"}
    reinstated = {
        e["data"]["object"]["id"]
        for e in living.events()  # also those the feed no longer serves
        if e["type"] == "charge.dispute.funds_reinstated"
    }
    for dispute in won:
        withdrawn, back = dispute["balance_transactions"]
        assert withdrawn == before[dispute["id"]]["balance_transactions"][0]
        assert back == listed[back["id"]] and back["source"] == dispute["id"]
        assert (back["reporting_category"], back["amount"]) == (
            "dispute_reversal",
            dispute["amount"] + FEE,
        )
        assert NOW < back["created"] <= NOW + 120 * DAY and dispute["id"] in reinstated
    adjustments = [t for t in listed.values() if t["type"] == "adjustment"]
    embedded = [t for d in after.values() for t in d["balance_transactions"]]
    assert sorted(t["id"] for t in adjustments) == sorted(t["id"] for t in embedded)
    assert living.current("balance_transactions") == walk(living, "balance_transactions")


def test_young_generated_wins_are_won_again_with_their_own_reinstatement(living):
    disputes = walk(living, "disputes")
    young = [d for d in disputes if d["created"] > NOW - 60 * DAY and d["status"] == "won"]
    assert young
    for dispute in young:
        withdrawn, back = dispute["balance_transactions"]
        assert withdrawn["created"] == dispute["created"] < back["created"] <= NOW
        assert walk(living, "balance_transactions", source=dispute["id"]) == [back, withdrawn]
    ids = {d["id"] for d in young}
    kinds = Counter(e["type"] for e in living.events() if e["data"]["object"]["id"] in ids)
    assert kinds["charge.dispute.funds_reinstated"] == kinds["charge.dispute.closed"] == len(ids)


def test_bad_writes_get_stripes_own_texts(living):
    missing = get(living, "/v1/disputes/dp_nope").json()["error"]
    assert (missing["message"], missing["code"], missing["param"], missing["doc_url"]) == (
        "No such dispute: 'dp_nope'",
        "resource_missing",
        "id",
        "https://stripe.com/docs/error-codes/resource-missing",
    )
    charge = living.write("POST", "/v1/charges", {"amount": 1000, "currency": "eur"})
    response = requests.post(
        living.url + "/v1/refunds",
        data={"charge": charge["id"], "amount": 1001},
        headers=AUTH,
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "message": "Refund amount (€10.01) is greater than unrefunded amount on charge (€10.00)",
        "param": "amount",
    }


def test_born_chargebacks_record_their_funds_withdrawn(living):
    month = [d for d in walk(living, "disputes") if d["created"] > NOW - 30 * DAY]
    recorded = Counter(
        (e["type"], e["data"]["object"]["id"])
        for e in living.events()
        if e["type"] in ("charge.dispute.created", "charge.dispute.funds_withdrawn")
    )
    assert month and any(d["balance_transactions"] for d in month)
    for dispute in month:
        chargeback = dispute["status"] not in INQUIRY
        assert recorded["charge.dispute.created", dispute["id"]] == 1
        assert recorded["charge.dispute.funds_withdrawn", dispute["id"]] == chargeback
