"""The emulator as a living account, over HTTP: its clock, lifecycles, writes, events (filters,
paging, lag, retention), API versions, expansion, the platform and connected accounts, and
the truth oracle; the same seed gives the same history however the clock is moved."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from email.utils import formatdate

import pytest
import requests
from test_emulator import AUTH, NOW, VERSION, burst, error, get, walk
from test_emulator import pages as raw_pages

from tap_stripe_dd.emulator import StripeEmulator
from tap_stripe_dd.emulator.protocol import StripeError

HOUR, DAY = 3_600, 86_400
OLD = {"Stripe-Version": "2022-08-01"}
ACTIVITY = 10  # per hour: a month of history is ~7,000 acts
UNCOUNTED = ("failed", "canceled")  # refunds that give their charge nothing back


def post(emu: StripeEmulator, path: str, data=None, headers=None) -> requests.Response:
    return requests.post(
        emu.url + path, data=data, headers={**AUTH, **VERSION, **(headers or {})}, timeout=10
    )


def ok(response: requests.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def events(emu: StripeEmulator, headers=None, **params) -> list[dict]:
    """Every event the feed lists, newest first, paged by starting_after."""
    found: list[dict] = []
    while True:
        cursor = {"starting_after": found[-1]["id"]} if found else {}
        page = ok(get(emu, "/v1/events", {"limit": 100, **params, **cursor}, headers))
        found += page["data"]
        if not page["has_more"]:
            return found


def advance(emu: StripeEmulator, seconds: int) -> int:
    return ok(requests.post(emu.url + "/_emulator/clock", data={"advance": seconds}, timeout=10))[
        "now"
    ]


@pytest.fixture
def emu() -> Iterator[StripeEmulator]:
    """A frozen clock: it moves only when a test moves it, so every assertion is exact."""
    with StripeEmulator(seed=3, objects=3_000, now=NOW, frozen=True, events_lag=0) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def still() -> Iterator[StripeEmulator]:
    """For tests that change nothing."""
    with StripeEmulator(seed=4, objects=500, now=NOW, frozen=True, events_lag=0) as emulator:
        yield emulator


# Time -----------------------------------------------------------------------------------------


def test_the_date_header_is_the_clock_and_the_clock_advances(emu):
    assert get(emu, "/v1/charges").headers["Date"] == formatdate(NOW, usegmt=True)
    assert advance(emu, 90) == NOW + 90 == int(emu.now())
    assert get(emu, "/v1/charges").headers["Date"] == formatdate(NOW + 90, usegmt=True)
    assert emu.advance(10) == NOW + 100
    assert ok(requests.get(emu.url + "/_emulator/clock", timeout=10)) == {"now": NOW + 100}


@pytest.mark.parametrize("value", ["-1", "soon", ""])
def test_the_clock_only_moves_forward(emu, value):
    response = requests.post(emu.url + "/_emulator/clock", data={"advance": value}, timeout=10)
    assert error(response, 400)["param"] == "advance"
    assert int(emu.now()) == NOW


def test_a_running_clock_runs_with_real_time():
    with StripeEmulator(seed=1, objects=10, now=NOW) as emu:
        assert NOW <= emu.now() < NOW + 60


def test_nothing_is_listed_from_after_now(emu):
    newest = get(emu, "/v1/charges", {"limit": 1}).json()["data"][0]
    assert NOW - DAY < newest["created"] <= NOW


# Lifecycles -----------------------------------------------------------------------------------


def test_young_payouts_are_pending_and_get_paid_or_fail_at_arrival(emu):
    young = [p for p in walk(emu, "payouts") if p["status"] in ("pending", "in_transit")]
    assert young and all(p["arrival_date"] > NOW for p in young)
    emu.advance(5 * DAY)
    after = {p["id"]: p for p in walk(emu, "payouts")}
    assert {after[p["id"]]["status"] for p in young} <= {"paid", "failed"}
    paid = {e["data"]["object"]["id"] for e in events(emu, type="payout.paid")}
    failed = {e["data"]["object"]["id"]: e for e in events(emu, type="payout.failed")}
    for payout in young:
        assert (payout["id"] in paid) != (payout["id"] in failed)
        if payout["id"] in failed:
            assert failed[payout["id"]]["data"]["object"]["failure_code"]


def test_balance_transactions_become_available_without_an_event(emu):
    pending = [t for t in walk(emu, "balance_transactions") if t["status"] == "pending"]
    assert pending and all(t["available_on"] > NOW for t in pending)
    emu.advance(max(t["available_on"] for t in pending) - NOW)
    for txn in pending:
        assert get(emu, f"/v1/balance_transactions/{txn['id']}").json()["status"] == "available"
    assert not [e for e in events(emu) if e["data"]["object"]["object"] == "balance_transaction"]


def test_balance_transactions_of_data_that_ended_long_ago_are_all_available():
    """Pending at the data set's end, a year before the clock: available since, as on Stripe."""
    end = NOW - 365 * DAY
    with StripeEmulator(seed=3, objects=3_000, created_to=end, now=NOW, frozen=True) as old:
        listed = walk(old, "balance_transactions")
    assert [t for t in listed if t["available_on"] > end], "none was pending: proves nothing"
    assert {t["status"] for t in listed} == {"available"}


def test_open_disputes_move_to_review_then_close(emu):
    open_ = [d for d in walk(emu, "disputes") if d["status"] == "needs_response"]
    assert open_
    emu.advance(60 * DAY)
    now = {d["id"]: d["status"] for d in walk(emu, "disputes")}
    assert {now[d["id"]] for d in open_} <= {"won", "lost"}
    everything = emu.events()  # also those the feed no longer serves (older than 30 days)
    closed = {e["data"]["object"]["id"] for e in everything if e["type"] == "charge.dispute.closed"}
    assert {d["id"] for d in open_} <= closed


# Writes ---------------------------------------------------------------------------------------


def test_customer_create_update_delete(emu):
    created = ok(post(emu, "/v1/customers", {"email": "a@example.com", "metadata[plan]": "pro"}))
    assert (created["email"], created["metadata"], created["created"]) == (
        "a@example.com",
        {"plan": "pro"},
        NOW,
    )
    assert get(emu, "/v1/customers", {"limit": 1}).json()["data"][0]["id"] == created["id"]
    emu.advance(5)
    changes = {"email": "b@example.com", "name": "Jenny Rosen", "metadata[plan]": ""}
    updated = ok(post(emu, f"/v1/customers/{created['id']}", changes))
    assert (updated["email"], updated["name"], updated["metadata"]) == (
        "b@example.com",
        "Jenny Rosen",
        {},
    )
    gone = requests.delete(emu.url + f"/v1/customers/{created['id']}", headers=AUTH, timeout=10)
    stub = {"id": created["id"], "object": "customer", "deleted": True}
    assert ok(gone) == stub == get(emu, f"/v1/customers/{created['id']}").json()
    assert created["id"] not in {c["id"] for c in walk(emu, "customers")}
    assert emu.deleted("customers") == [created["id"]]
    kinds = [(e["type"], e["data"].get("previous_attributes")) for e in events(emu)[:3]]
    assert kinds == [
        ("customer.deleted", None),
        (
            "customer.updated",
            {"email": "a@example.com", "name": None, "metadata": {"plan": "pro"}},
        ),
        ("customer.created", None),
    ]
    assert error(post(emu, f"/v1/customers/{created['id']}", {"name": "x"}), 404)["code"] == (
        "resource_missing"
    )


def test_charge_refund_and_its_balance_transactions(emu):
    customer = emu.ids("customers")[0]
    charge = ok(post(emu, "/v1/charges", {"amount": 2000, "currency": "usd", "customer": customer}))
    assert (charge["status"], charge["captured"], charge["customer"]) == (
        "succeeded",
        True,
        customer,
    )
    txn = get(emu, f"/v1/balance_transactions/{charge['balance_transaction']}").json()
    assert (txn["amount"], txn["source"], txn["status"]) == (2000, charge["id"], "pending")
    described = ok(post(emu, f"/v1/charges/{charge['id']}", {"description": "Order 1"}))
    assert described["description"] == "Order 1"
    refund = ok(post(emu, "/v1/refunds", {"charge": charge["id"], "amount": 500}))
    assert (refund["amount"], refund["status"], refund["charge"]) == (500, "pending", charge["id"])
    back = get(emu, f"/v1/balance_transactions/{refund['balance_transaction']}").json()
    assert (back["amount"], back["type"], back["source"]) == (-500, "refund", refund["id"])
    now = get(emu, f"/v1/charges/{charge['id']}").json()
    assert (now["amount_refunded"], now["refunded"]) == (500, False)
    too_much = error(post(emu, "/v1/refunds", {"charge": charge["id"], "amount": 1501}), 400)
    assert (too_much["param"], too_much.get("code"), too_much["message"]) == (
        "amount",
        None,  # Stripe sends none for this one
        "Refund amount ($15.01) is greater than unrefunded amount on charge ($15.00)",
    )
    rest = ok(post(emu, "/v1/refunds", {"charge": charge["id"]}))
    assert rest["amount"] == 1500 and get(emu, f"/v1/charges/{charge['id']}").json()["refunded"]
    again = error(post(emu, "/v1/refunds", {"charge": charge["id"]}), 400)
    assert again["code"] == "charge_already_refunded"
    types = [e["type"] for e in events(emu)]
    assert types[:6] == [
        "charge.refunded",
        "refund.created",
        "charge.refunded",
        "refund.created",
        "charge.updated",
        "charge.succeeded",
    ]
    emu.advance(3 * HOUR)
    settled = {get(emu, f"/v1/refunds/{r['id']}").json()["status"] for r in (refund, rest)}
    assert settled <= {"succeeded", "failed"}
    updates = events(emu, type="charge.refund.updated")
    assert {e["data"]["object"]["id"] for e in updates} >= {refund["id"], rest["id"]}
    assert {e["data"]["object"]["object"] for e in updates} == {"refund"}


@pytest.mark.parametrize(
    ("path", "data", "status", "param"),
    [
        ("/v1/charges", {"currency": "usd"}, 400, "amount"),
        ("/v1/charges", {"amount": "12.5", "currency": "usd"}, 400, "amount"),
        ("/v1/charges", {"amount": "100", "currency": "xyz"}, 400, "currency"),
        (
            "/v1/charges",
            {"amount": "100", "currency": "usd", "customer": "cus_nope"},
            404,
            "customer",
        ),
        ("/v1/charges", {"amount": "100", "currency": "usd", "colour": "red"}, 400, "colour"),
        ("/v1/refunds", {"charge": "ch_nope"}, 404, "charge"),
        ("/v1/payouts", {"amount": "0", "currency": "usd"}, 400, "amount"),
        ("/v1/customers/cus_nope", {"name": "x"}, 404, "id"),
    ],
)
def test_bad_writes_get_stripes_errors_and_change_nothing(still, path, data, status, param):
    emu = still

    def seen() -> tuple:
        newest = get(emu, "/v1/events", {"limit": 1}).json()["data"][0]["id"]
        return newest, emu.ids("charges"), emu.current("customers"), emu.current("payouts")

    before = seen()
    body = error(post(emu, path, data), status)
    assert body["param"] == param and body["type"] == "invalid_request_error"
    assert seen() == before


def test_disputes_take_evidence_and_close_once(emu):
    dispute = next(d for d in walk(emu, "disputes") if d["status"] == "needs_response")
    path = f"/v1/disputes/{dispute['id']}"
    submitted = ok(post(emu, path, {"evidence[customer_name]": "Jenny", "metadata[case]": "7"}))
    assert (submitted["status"], submitted["evidence"]["customer_name"]) == (
        "under_review",
        "Jenny",
    )
    assert submitted["metadata"]["case"] == "7"
    closed = ok(post(emu, path + "/close"))
    assert closed["status"] == "lost"
    assert error(post(emu, path + "/close"), 400)["code"] == "dispute_already_closed"
    kinds = [e["type"] for e in events(emu) if e["data"]["object"]["id"] == dispute["id"]]
    assert kinds[:3] == [
        "charge.dispute.closed",
        "charge.dispute.updated",
        "charge.dispute.updated",
    ]


def test_payouts_cancel_or_arrive(emu):
    first = ok(post(emu, "/v1/payouts", {"amount": 5000, "currency": "usd"}))
    second = ok(post(emu, "/v1/payouts", {"amount": 7000, "currency": "usd"}))
    assert first["status"] == second["status"] == "pending"
    canceled = ok(post(emu, f"/v1/payouts/{first['id']}/cancel"))
    assert canceled["status"] == "canceled"
    refund = get(emu, f"/v1/balance_transactions/{canceled['failure_balance_transaction']}").json()
    assert (refund["type"], refund["amount"]) == ("payout_cancel", 5000)
    assert error(post(emu, f"/v1/payouts/{first['id']}/cancel"), 400)["type"] == (
        "invalid_request_error"
    )
    emu.advance(3 * DAY)
    arrived = get(emu, f"/v1/payouts/{second['id']}").json()
    assert arrived["status"] in ("paid", "failed")
    mine = [e["type"] for e in events(emu) if e["data"]["object"].get("id") == second["id"]]
    assert mine[-1] == "payout.created" and mine[0] == "payout.updated"
    assert "payout.updated" in mine and ("payout.paid" in mine or "payout.failed" in mine)
    assert [e["type"] for e in events(emu) if e["data"]["object"].get("id") == first["id"]] == [
        "payout.updated",
        "payout.canceled",
        "payout.created",
    ]


def test_write_helper_answers_as_http_does(emu):
    charge = next(c for c in emu.objects("charges") if c["captured"] and not c["amount_refunded"])
    refund = emu.write("POST", "/v1/refunds", {"charge": charge["id"], "amount": 1})
    assert refund == get(emu, f"/v1/refunds/{refund['id']}").json()
    with pytest.raises(StripeError, match="No such charge"):
        emu.write("POST", "/v1/refunds", {"charge": "ch_nope"})


# Events ---------------------------------------------------------------------------------------


def test_events_cover_the_last_30_days_newest_first(emu):
    feed = events(emu)
    created = [e["created"] for e in feed]
    assert created == sorted(created, reverse=True) and created[-1] > NOW - 30 * DAY
    assert Counter(e["type"].split(".")[0] for e in feed).keys() >= {
        "charge",
        "customer",
        "payout",
        "refund",
    }
    one = feed[len(feed) // 2]
    assert get(emu, f"/v1/events/{one['id']}").json() == one


def test_events_filter_by_type_types_created_and_delivery(emu):
    feed = events(emu)
    charges = events(emu, type="charge.*")
    assert charges == [e for e in feed if e["type"].startswith("charge.")]
    exact = events(emu, **{"types[]": ["payout.paid", "customer.created"]})
    assert exact == [e for e in feed if e["type"] in ("payout.paid", "customer.created")]
    middle = feed[len(feed) // 2]["created"]
    window = events(emu, **{"created[gte]": middle - DAY, "created[lt]": middle})
    assert window == [e for e in feed if middle - DAY <= e["created"] < middle]
    delivered = events(emu, delivery_success="true")
    failed = events(emu, delivery_success="false")
    assert failed and len(delivered) + len(failed) == len(feed)
    assert {e["pending_webhooks"] for e in failed} == {1}
    both = get(emu, "/v1/events", {"type": "charge.*", "types[]": "payout.paid"})
    assert error(both, 400)["type"] == "invalid_request_error"
    many = get(emu, "/v1/events", {"types[]": [f"charge.t{n}" for n in range(21)]})
    assert error(many, 400)["param"] == "types"


def test_events_page_both_ways(emu):
    feed = events(emu)
    first = get(emu, "/v1/events", {"limit": 7}).json()
    second = get(emu, "/v1/events", {"limit": 7, "starting_after": first["data"][-1]["id"]}).json()
    back = get(emu, "/v1/events", {"limit": 7, "ending_before": second["data"][0]["id"]}).json()
    assert first["data"] + second["data"] == feed[:14] and back["data"] == first["data"]
    assert error(get(emu, "/v1/events", {"limit": 101}), 400)["param"] == "limit"


def test_events_are_listed_after_the_lag_and_gone_after_30_days():
    with StripeEmulator(seed=3, objects=200, now=NOW, frozen=True, events_lag=2) as emu:
        customer = ok(post(emu, "/v1/customers", {"email": "lag@example.com"}))
        newest = get(emu, "/v1/events", {"limit": 1}).json()["data"]
        assert not newest or newest[0]["data"]["object"]["id"] != customer["id"]
        emu.advance(2)
        event = get(emu, "/v1/events", {"limit": 1}).json()["data"][0]
        assert (event["type"], event["data"]["object"]["id"]) == (
            "customer.created",
            customer["id"],
        )
        emu.advance(30 * DAY - 2)
        assert error(get(emu, f"/v1/events/{event['id']}"), 404)["code"] == "resource_missing"
        assert event["id"] not in {e["id"] for e in events(emu)}


# Versions and expansion -----------------------------------------------------------------------


def test_versions_differ_in_charge_refunds_and_three_d_secure(emu):
    charge = next(
        c
        for c in emu.objects("charges")
        if c["captured"] and c["payment_method_details"]["card"]["three_d_secure"]
    )
    refund = ok(post(emu, "/v1/refunds", {"charge": charge["id"], "amount": 1}))
    new = get(emu, f"/v1/charges/{charge['id']}").json()
    old = get(emu, f"/v1/charges/{charge['id']}", headers=OLD).json()
    default = requests.get(emu.url + f"/v1/charges/{charge['id']}", headers=AUTH, timeout=10)
    assert "refunds" not in new and default.json() == old
    assert old["refunds"]["data"] == [get(emu, f"/v1/refunds/{refund['id']}").json()]
    assert (old["refunds"]["has_more"], old["refunds"]["total_count"]) == (False, 1)
    secure_new = new["payment_method_details"]["card"]["three_d_secure"]
    secure_old = old["payment_method_details"]["card"]["three_d_secure"]
    assert "result" in secure_new and "authenticated" not in secure_new
    assert "result" not in secure_old and isinstance(secure_old["authenticated"], bool)
    event = events(emu, type="charge.refunded")[0]
    assert event["api_version"] == "2022-08-01" and "refunds" in event["data"]["object"]
    bad = get(emu, "/v1/charges", headers={"Stripe-Version": "yesterday"})
    assert error(bad, 400)["code"] == "api_version_invalid"


def test_expansion_on_lists_and_retrieves(emu):
    charges = get(
        emu, "/v1/charges", {"limit": 20, "expand[]": ["data.customer", "data.balance_transaction"]}
    ).json()["data"]
    with_customer = [c for c in charges if c["customer"]]
    assert with_customer and all(c["customer"]["object"] == "customer" for c in with_customer)
    assert all(
        c["balance_transaction"] is None
        or c["balance_transaction"]["object"] == "balance_transaction"
        for c in charges
    )
    refund = walk(emu, "refunds")[0]
    deep = get(emu, f"/v1/refunds/{refund['id']}", {"expand[0]": "charge.customer"}).json()
    if deep["charge"] and not isinstance(deep["charge"], str):
        assert deep["charge"]["id"] == refund["charge"]
    txn = get(emu, "/v1/balance_transactions", {"limit": 1, "expand[]": "data.source"}).json()
    assert isinstance(txn["data"][0]["source"], dict)
    unknown = get(emu, "/v1/charges", {"expand[]": "data.colour"})
    assert error(unknown, 400)["message"] == "This property cannot be expanded (data.colour)."
    hint = error(get(emu, "/v1/charges", {"expand[]": "customer"}), 400)["message"]
    assert "You may want to try expanding 'data.customer' instead." in hint


def test_sub_lists_stop_at_ten_with_has_more(emu):
    charge = ok(post(emu, "/v1/charges", {"amount": 5000, "currency": "usd"}))
    refunds = [
        ok(post(emu, "/v1/refunds", {"charge": charge["id"], "amount": 100}))["id"]
        for _ in range(11)
    ]
    expanded = get(emu, f"/v1/charges/{charge['id']}", {"expand[]": "refunds"}).json()["refunds"]
    assert expanded["has_more"] and [r["id"] for r in expanded["data"]] == refunds[::-1][:10]
    old = get(emu, f"/v1/charges/{charge['id']}", headers=OLD).json()["refunds"]
    assert old["has_more"] and old["total_count"] == 11 and len(old["data"]) == 10


# The platform and connected accounts ----------------------------------------------------------


def test_platform_and_connected_accounts():
    with StripeEmulator(seed=5, objects=100, now=NOW, frozen=True, accounts=5, events_lag=0) as emu:
        platform = get(emu, "/v1/account").json()
        assert platform["id"] == emu.platform_id and platform["object"] == "account"
        listed = [a["id"] for a in get(emu, "/v1/accounts", {"limit": 100}).json()["data"]]
        assert listed == emu.connected_accounts and len(listed) == 5
        first = get(emu, "/v1/accounts", {"limit": 2}).json()
        rest = get(emu, "/v1/accounts", {"starting_after": first["data"][-1]["id"]}).json()
        assert [a["id"] for a in first["data"] + rest["data"]] == listed and first["has_more"]
        created = {a["id"]: a["created"] for a in get(emu, "/v1/accounts").json()["data"]}
        cut = sorted(created.values())[2]
        newer = get(emu, "/v1/accounts", {"created[gte]": cut}).json()["data"]
        assert {a["id"] for a in newer} == {a for a, c in created.items() if c >= cut}
        one = listed[0]
        assert get(emu, f"/v1/accounts/{one}").json()["id"] == one
        header = {"Stripe-Account": one}
        assert get(emu, "/v1/account", headers=header).json()["id"] == one
        theirs = [c["id"] for c in walk(emu, "charges", headers=header)]
        assert theirs == emu.ids("charges", account=one)
        assert not set(theirs) & set(emu.ids("charges"))
        post(emu, "/v1/customers", {"email": "c@example.com"}, header)
        assert events(emu, header, type="customer.created")[0]["data"]["object"]["email"] == (
            "c@example.com"
        )
        assert "c@example.com" not in {e["data"]["object"].get("email") for e in events(emu)}
        stranger = get(emu, "/v1/charges", headers={"Stripe-Account": "acct_1Stranger00000"})
        assert error(stranger, 403)["code"] == "account_invalid"


def test_rate_limits_count_per_account():
    with StripeEmulator(seed=5, objects=5, accounts=1, rate_limit="test") as emu:
        theirs = ("/v1/customers", {"Stripe-Account": emu.connected_accounts[0]})
        codes = burst(emu, ["/v1/customers"] * 25 + [theirs] * 25 + ["/v1/customers"])
        assert codes == [200] * 50 + [429]


# Activity and the truth -----------------------------------------------------------------------


def living(**options) -> StripeEmulator:
    return StripeEmulator(seed=9, objects=300, now=NOW, frozen=True, activity=ACTIVITY, **options)


def test_activity_changes_all_six_resources_and_current_is_the_truth():
    with living() as emu:
        emu.advance(2 * DAY)
        kinds = Counter(e["type"] for e in events(emu, **{"created[gt]": NOW}))
        assert ACTIVITY * 48 * 0.5 < sum(kinds.values()) < ACTIVITY * 48 * 4
        for kind in ("charge.succeeded", "customer.updated", "refund.created", "payout.paid"):
            assert kinds[kind], kind
        for resource in ("charges", "customers", "refunds", "payouts", "disputes"):
            assert walk(emu, resource) == emu.current(resource), resource
        assert emu.deleted("customers") == [
            e["data"]["object"]["id"] for e in emu.events() if e["type"] == "customer.deleted"
        ]
        old = emu.current("charges", version="2022-08-01")[:100]
        assert old == get(emu, "/v1/charges", {"limit": 100}, OLD).json()["data"]


def assert_charges_show_their_refunds_and_disputes(emu: StripeEmulator) -> dict[str, list]:
    """As Stripe shows them: amount_refunded (pending refunds count, failed and canceled do not),
    refunded (in full), disputed, and in old versions the `refunds` sub-list, newest first."""
    refunds: dict[str, list] = {}
    for refund in emu.current("refunds"):
        refunds.setdefault(refund["charge"], []).append(refund)
    disputed = {dispute["charge"] for dispute in emu.current("disputes")}
    old = {charge["id"]: charge for charge in emu.current("charges", version="2022-08-01")}
    for charge in emu.current("charges"):
        mine = refunds.get(charge["id"], [])
        back = sum(r["amount"] for r in mine if r["status"] not in UNCOUNTED)
        assert back <= charge["amount"], charge["id"]
        assert (charge["amount_refunded"], charge["refunded"]) == (back, back >= charge["amount"])
        assert charge["disputed"] == (charge["id"] in disputed), charge["id"]
        assert not (mine or charge["disputed"]) or charge["captured"], charge["id"]
        assert old[charge["id"]]["refunds"] == {
            "object": "list",
            "data": mine[:10],
            "has_more": len(mine) > 10,
            "total_count": len(mine),
            "url": f"/v1/charges/{charge['id']}/refunds",
        }
    return refunds


def assert_refunds_add_up(charge: dict) -> None:
    """An event's charge (in the account's old version, which embeds its refunds) counts the
    refunds it lists."""
    listed = charge["refunds"]
    if not listed["has_more"]:
        back = sum(r["amount"] for r in listed["data"] if r["status"] not in UNCOUNTED)
        assert charge["amount_refunded"] == back, charge["id"]


def test_born_charges_events_list_the_refunds_they_count():
    """Many born charges of the feed's month have born refunds (a few weeks later, at most)."""
    with StripeEmulator(seed=3, objects=30_000, now=NOW, frozen=True, events_lag=0) as emu:
        kinds = {"types[]": ["charge.succeeded", "charge.refunded"]}
        charges = [e["data"]["object"] for e in events(emu, **kinds)]
        assert sum(c["amount_refunded"] > 0 for c in charges) > 10
        for charge in charges:
            assert_refunds_add_up(charge)


def test_charges_show_their_generated_and_their_activitys_refunds_and_disputes():
    with living() as emu:
        born = assert_charges_show_their_refunds_and_disputes(emu)
        assert len(born) > 50 and max(map(len, born.values())) > 1
        emu.advance(2 * DAY)
        after = assert_charges_show_their_refunds_and_disputes(emu)
        statuses = Counter(r["status"] for mine in after.values() for r in mine)
        assert statuses["failed"] and statuses["succeeded"]
        assert sum(map(len, after.values())) > sum(map(len, born.values()))
        newest: dict[str, dict] = {}  # each charge's newest event, as a feed reader keeps it
        refunded: dict[str, int] = {}  # each charge's last charge.refunded
        for event in emu.events():  # oldest first
            obj = event["data"]["object"]
            if obj["object"] == "charge":
                newest[obj["id"]] = obj
                assert_refunds_add_up(obj)
            if event["type"] == "charge.refunded":
                refunded[obj["id"]] = event["created"]
        for charge in emu.current("charges"):
            seen = newest.get(charge["id"], charge)
            assert seen["amount_refunded"] == charge["amount_refunded"], charge["id"]
            assert seen["refunded"] == charge["refunded"], charge["id"]
        for refund in (r for mine in after.values() for r in mine):
            if refund["created"] > NOW - 30 * DAY and refund["charge"]:
                assert refunded.get(refund["charge"], 0) >= refund["created"], refund["id"]


def test_the_same_seed_gives_the_same_history_however_the_clock_moves():
    with living() as once, living() as daily:
        once.advance(7 * DAY)
        for _ in range(7):
            daily.advance(DAY)
        feeds = [raw_pages(emu, "events", **{"created[gt]": NOW}) for emu in (once, daily)]
        assert feeds[0] == feeds[1] and len(feeds[0]) > 1
        assert get(once, "/v1/charges").content == get(daily, "/v1/charges").content


def test_old_versions_render_born_and_changed_charges_alike(emu):
    """The spliced fast path for unchanged charges gives the bytes the general one gives."""
    state = emu.state(None)
    for index in range(0, 3_000, 7):
        spliced = state.old_json("charges", index, "2022-08-01")
        general = state.render("charges", index, "2022-08-01")
        assert spliced == json.dumps(general, separators=(",", ":"), ensure_ascii=False).encode()


def test_concurrent_writes_and_reads_with_a_running_clock_keep_the_feed_in_order():
    from concurrent.futures import ThreadPoolExecutor

    with StripeEmulator(seed=6, objects=200, events_lag=0) as emu:

        def work(n: int) -> list[int]:
            statuses = []
            for i in range(8):
                statuses.append(
                    post(emu, "/v1/customers", {"email": f"{n}.{i}@example.com"}).status_code
                )
                statuses.append(get(emu, "/v1/events", {"limit": 5}).status_code)
            return statuses

        with ThreadPoolExecutor(4) as pool:
            statuses = [s for result in pool.map(work, range(4)) for s in result]
        assert set(statuses) == {200}
        feed = events(emu, **{"created[gte]": int(emu.now()) - 120})
        assert [e["created"] for e in feed] == sorted((e["created"] for e in feed), reverse=True)
        emails = {e["data"]["object"]["email"] for e in feed if e["type"] == "customer.created"}
        assert {f"{n}.{i}@example.com" for n in range(4) for i in range(8)} <= emails
