"""The emulator's list and retrieve endpoints over real HTTP: envelope, order, pagination,
filters, errors, auth, connected accounts, objects added between syncs, and the request log."""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import requests

from tap_stripe_dd.emulator import StripeEmulator

KEY = "sk_test_emulatorTestKey4242"
AUTH = {"Authorization": f"Bearer {KEY}"}
VERSION = {"Stripe-Version": "2024-06-20"}  # the tap's; without it, the account's default
NOW = 1_780_000_000  # 2026-05-28: the data sets of fixtures end here
RESOURCES = ["balance_transactions", "charges", "customers", "disputes", "payouts", "refunds"]


def get(emu: StripeEmulator, path: str, params=None, headers=None) -> requests.Response:
    return requests.get(
        emu.url + path, params=params, headers={**AUTH, **VERSION, **(headers or {})}, timeout=10
    )


def walk(emu: StripeEmulator, resource: str, limit: int = 100, headers=None, **params) -> list:
    """Every object a Stripe-style client pages through with starting_after."""
    objects: list = []
    while True:
        cursor = {"starting_after": objects[-1]["id"]} if objects else {}
        response = get(emu, f"/v1/{resource}", {"limit": limit, **params, **cursor}, headers)
        assert response.status_code == 200, response.text
        page = response.json()
        objects += page["data"]
        if not page["has_more"]:
            return objects


def error(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def burst(emu: StripeEmulator, sends: list[str | tuple[str, dict]]) -> list[int]:
    """Status codes of requests (a path, or a path and its headers) sent back to back inside one
    rate-limit window. A burst that outlasts the window (a slow machine) proves nothing, so it
    is sent again once the emulator's window has emptied."""
    session = requests.Session()
    session.headers.update(AUTH)
    sends = [(send, {}) if isinstance(send, str) else send for send in sends]
    for _ in range(5):
        began = time.monotonic()
        codes = [
            session.get(emu.url + path, params={"limit": 1}, headers=headers, timeout=5).status_code
            for path, headers in sends
        ]
        if time.monotonic() - began < 0.9:
            return codes
        time.sleep(1.1)
    pytest.fail(f"{len(sends)} requests never fitted in one second")


BUILT_OR_PREWARMED: dict = {"params": [False, True], "ids": ["built", "prewarmed"]}


@pytest.fixture(scope="module", **BUILT_OR_PREWARMED)
def emu(request: pytest.FixtureRequest) -> Iterator[StripeEmulator]:
    """Read-only tests share one emulator; tests that change it make their own. Each runs
    against objects built on demand and against prewarmed ones, which must not differ."""
    with StripeEmulator(
        seed=7, objects=500, prewarm=request.param, now=NOW, accounts=2
    ) as emulator:
        yield emulator


@pytest.fixture(**BUILT_OR_PREWARMED)
def fresh(request: pytest.FixtureRequest) -> Iterator[StripeEmulator]:
    with StripeEmulator(seed=11, objects=120, prewarm=request.param) as emulator:
        yield emulator


# Lists: envelope, order, pagination -----------------------------------------------------------


def test_list_envelope_defaults_to_ten_newest(emu):
    response = get(emu, "/v1/charges")
    assert response.headers["Content-Type"] == "application/json"
    assert response.raw.version == 11 and response.headers.get("Connection") != "close"
    page = response.json()
    assert page.keys() == {"object", "data", "has_more", "url"}
    assert (page["object"], page["url"], page["has_more"]) == ("list", "/v1/charges", True)
    assert [o["id"] for o in page["data"]] == emu.ids("charges")[:10]


@pytest.mark.parametrize("resource", RESOURCES)
def test_walk_lists_every_object_once_newest_first(emu, resource):
    objects = walk(emu, resource, limit=37)
    ids = [o["id"] for o in objects]
    assert ids == emu.ids(resource) and len(set(ids)) == 500
    keys = [(o["created"], o["id"]) for o in objects]
    assert keys == sorted(keys, reverse=True), "not newest first, then by id"
    assert all(o["object"] == resource[:-1] for o in objects)


def test_pages_split_same_second_clusters_without_loss(emu):
    created = [o["created"] for o in walk(emu, "charges", limit=25)]
    second, size = Counter(created).most_common(1)[0]
    assert size > 25
    first = created.index(second)
    split = [i for i in range(first + 1, first + size) if i % 25 == 0]
    assert split, "no page boundary inside the largest cluster"


def test_ending_before_walks_back_to_the_newest(emu):
    ids = emu.ids("refunds")
    collected: list[str] = []
    cursor = ids[-1]
    while True:
        page = get(emu, "/v1/refunds", {"limit": 40, "ending_before": cursor}).json()
        collected = [o["id"] for o in page["data"]] + collected
        if not page["has_more"]:
            break
        cursor = page["data"][0]["id"]
    assert collected == ids[:-1]


@pytest.mark.parametrize("limit", [1, 100])
def test_limit_bounds_are_inclusive(emu, limit):
    page = get(emu, "/v1/customers", {"limit": limit}).json()
    assert len(page["data"]) == limit and page["has_more"]


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1", "1.5"])
def test_bad_limit_is_400(emu, limit):
    assert error(get(emu, "/v1/charges", {"limit": limit}), 400)["param"] == "limit"


# Filters --------------------------------------------------------------------------------------

CREATED_TESTS: dict[str, Callable[[int, int], bool]] = {
    "created": lambda value, pivot: value == pivot,
    "created[gt]": lambda value, pivot: value > pivot,
    "created[gte]": lambda value, pivot: value >= pivot,
    "created[lt]": lambda value, pivot: value < pivot,
    "created[lte]": lambda value, pivot: value <= pivot,
}


@pytest.mark.parametrize("param", CREATED_TESTS)
def test_created_filter_at_a_cluster(emu, param):
    """The pivot is the second of the largest cluster, where off-by-one bounds would show."""
    objects = list(emu.objects("charges"))
    pivot = Counter(o["created"] for o in objects).most_common(1)[0][0]
    expected = [o["id"] for o in objects if CREATED_TESTS[param](o["created"], pivot)]
    assert 0 < len(expected) < len(objects)
    assert [o["id"] for o in walk(emu, "charges", **{param: pivot})] == expected


def test_created_range_combines_bounds(emu):
    objects = list(emu.objects("payouts"))
    low, high = objects[300]["created"], objects[100]["created"]
    expected = [o["id"] for o in objects if low <= o["created"] < high]
    got = walk(emu, "payouts", limit=50, **{"created[gte]": low, "created[lt]": high})
    assert [o["id"] for o in got] == expected


FIELD_FILTERS = [
    ("balance_transactions", "currency"),
    ("balance_transactions", "source"),
    ("balance_transactions", "type"),
    ("charges", "customer"),
    ("charges", "payment_intent"),
    ("charges", "transfer_group"),
    ("customers", "email"),
    ("disputes", "charge"),
    ("disputes", "payment_intent"),
    ("payouts", "destination"),
    ("payouts", "status"),
    ("refunds", "charge"),
    ("refunds", "payment_intent"),
]


@pytest.mark.parametrize(("resource", "name"), FIELD_FILTERS)
def test_field_filter_lists_exactly_the_matches(emu, resource, name):
    objects = list(emu.objects(resource))
    value = Counter(o[name] for o in objects if o[name]).most_common(1)[0][0]
    expected = [o["id"] for o in objects if o[name] == value]
    assert 0 < len(expected) < len(objects)
    assert [o["id"] for o in walk(emu, resource, limit=10, **{name: value})] == expected


def test_filter_with_no_match_is_an_empty_list(emu):
    page = get(emu, "/v1/customers", {"email": "nobody@nowhere.example"}).json()
    assert page["data"] == [] and page["has_more"] is False


def test_arrival_date_range(emu):
    objects = list(emu.objects("payouts"))
    dates = sorted(o["arrival_date"] for o in objects)
    low, high = dates[100], dates[400]
    expected = [o["id"] for o in objects if low < o["arrival_date"] <= high]
    params = {"arrival_date[gt]": low, "arrival_date[lte]": high}
    assert [o["id"] for o in walk(emu, "payouts", **params)] == expected


def test_payout_filter_lists_the_balance_transactions_it_paid_out(emu):
    payouts = [p for p in emu.objects("payouts") if p["balance_transaction"]]
    seen: set[str] = set()
    for payout in payouts[:20]:
        listed = walk(emu, "balance_transactions", payout=payout["id"])
        assert payout["balance_transaction"] in {t["id"] for t in listed}
        assert all(t["created"] <= payout["created"] for t in listed)
        ids = {t["id"] for t in listed}
        assert not ids & seen, "a balance transaction paid out twice"
        seen |= ids
    assert len(seen) > 40


def test_payout_filter_with_unknown_payout_is_404(emu):
    assert error(get(emu, "/v1/balance_transactions", {"payout": "po_nope"}), 404)["param"] == (
        "payout"
    )


# Retrieve -------------------------------------------------------------------------------------


@pytest.mark.parametrize("resource", RESOURCES)
def test_retrieve_serves_the_listed_object(emu, resource):
    listed = list(emu.objects(resource))[123]
    assert get(emu, f"/v1/{resource}/{listed['id']}").json() == listed


@pytest.mark.parametrize(
    "path",
    [
        "/v1/charges/ch_doesnotexist",
        "/v1/charges/ch_m00000AAAAAAAAAAAAAAAAAAAA",
        "/v1/customers/cus_nope",
    ],
)
def test_retrieve_unknown_id_is_404(emu, path):
    assert error(get(emu, path), 404)["code"] == "resource_missing"


def test_an_id_of_another_resource_is_unknown(emu):
    charge = emu.ids("charges")[0]
    assert error(get(emu, f"/v1/refunds/{charge}"), 404)["code"] == "resource_missing"


# Strict parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/v1/charges", {"foo": "1"}, "foo"),
        ("/v1/charges", {"include[]": "total_count"}, "include[]"),
        ("/v1/charges", {"created[since]": "1"}, "created[since]"),
        ("/v1/charges", {"email": "a@b.example"}, "email"),
        ("/v1/customers", {"customer": "cus_1"}, "customer"),
        ("/v1/balance_transactions", {"arrival_date": "1"}, "arrival_date"),
    ],
)
def test_unknown_parameter_is_400(emu, path, params, param):
    body = error(get(emu, path, params), 400)
    assert (body["code"], body["param"], body["type"]) == (
        "parameter_unknown",
        param,
        "invalid_request_error",
    )


def test_retrieve_takes_no_parameters(emu):
    charge = emu.ids("charges")[0]
    assert error(get(emu, f"/v1/charges/{charge}", {"customer": "x"}), 400)["param"]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"created": "yesterday"}, "created"),
        ({"created[gte]": "1.5"}, "created[gte]"),
        ({"starting_after": ""}, "starting_after"),
    ],
)
def test_malformed_value_is_400(emu, params, param):
    assert error(get(emu, "/v1/charges", params), 400)["param"] == param


def test_both_cursors_are_400(emu):
    first, second = emu.ids("charges")[:2]
    params = {"starting_after": first, "ending_before": second}
    assert error(get(emu, "/v1/charges", params), 400)["code"] == "parameter_invalid"


@pytest.mark.parametrize("cursor", ["starting_after", "ending_before"])
def test_unknown_cursor_is_404(emu, cursor):
    body = error(get(emu, "/v1/charges", {cursor: "ch_gone"}), 404)
    assert (body["code"], body["param"]) == ("resource_missing", cursor)
    assert body["message"] == "No such charge: 'ch_gone'"


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_unrecognized_url_is_404(emu, method):
    path = "/v1/invoices" if method != "DELETE" else "/v1/charges/ch_1"
    response = requests.request(method, emu.url + path, headers=AUTH, data="a=1", timeout=10)
    assert error(response, 404)["message"].startswith(f"Unrecognized request URL ({method}: ")


# Auth -----------------------------------------------------------------------------------------


def test_no_key_is_401(emu):
    body = error(requests.get(emu.url + "/v1/charges", timeout=10), 401)
    assert body["type"] == "invalid_request_error"
    assert "You did not provide an API key" in body["message"]


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer sk_test_short",
        "Bearer pk_test_51HcLh7publishableKey0000",
        "Bearer not-a-key-at-all-really",
        "Token sk_test_emulatorTestKey4242",
        "Basic !!!notbase64",
    ],
)
def test_malformed_key_is_401_and_never_echoed(emu, authorization):
    response = requests.get(
        emu.url + "/v1/charges", headers={"Authorization": authorization}, timeout=10
    )
    message = error(response, 401)["message"]
    assert message.startswith("Invalid API Key provided: ")
    secret = authorization.split(" ", 1)[1]
    assert secret not in response.text and secret[8:] not in response.text


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {KEY}",
        "Basic " + base64.b64encode(f"{KEY}:".encode()).decode(),
    ],
)
def test_the_configured_key_is_accepted_by_bearer_or_basic(authorization):
    with StripeEmulator(seed=1, objects=5, api_key=KEY) as emu:
        response = get(emu, "/v1/charges", headers={"Authorization": authorization})
    assert response.status_code == 200 and len(response.json()["data"]) == 5


def test_any_other_key_is_401_masked_like_stripe():
    other = "sk_test_someoneElsesKeyZ9x8"
    with StripeEmulator(seed=1, objects=5, api_key=KEY) as emu:
        response = get(emu, "/v1/charges", headers={"Authorization": f"Bearer {other}"})
    assert error(response, 401)["message"] == (
        "Invalid API Key provided: sk_test_***************Z9x8"  # a star a hidden character
    )
    assert other[8:-4] not in response.text


def test_restricted_key_without_permission_is_403(emu):
    key = "rk_test_noperm_51Hx9restricted"
    response = get(emu, "/v1/disputes", headers={"Authorization": f"Bearer {key}"})
    body = error(response, 403)
    assert body["type"] == "invalid_request_error"
    assert "'rk_test_******************cted' does not have the required" in body["message"]
    assert key not in response.text


# Connected accounts ---------------------------------------------------------------------------


def test_each_account_has_its_own_data_set(emu):
    alpha, beta = emu.connected_accounts
    accounts = [None, alpha, beta]
    listed = {
        account: [
            o["id"]
            for o in walk(emu, "charges", headers={"Stripe-Account": account} if account else {})
        ]
        for account in accounts
    }
    for account in accounts:
        assert listed[account] == emu.ids("charges", account=account)
    assert not set(listed[alpha]) & set(listed[None])
    assert not set(listed[alpha]) & set(listed[beta])
    other = listed[alpha][0]
    assert get(emu, f"/v1/charges/{other}").status_code == 404
    headers = {"Stripe-Account": alpha}
    assert get(emu, f"/v1/charges/{other}", headers=headers).status_code == 200


@pytest.mark.parametrize("account", ["not-an-account", "acct_1NotConnectedHere"])
def test_an_account_not_connected_is_403(emu, account):
    response = get(emu, "/v1/charges", headers={"Stripe-Account": account})
    body = error(response, 403)
    assert body["code"] == "account_invalid" and account in body["message"]


def test_the_platforms_own_id_is_the_platform(emu):
    headers = {"Stripe-Account": emu.platform_id}
    assert get(emu, "/v1/charges", headers=headers).json() == get(emu, "/v1/charges").json()


# Objects added between syncs ------------------------------------------------------------------


def test_added_objects_are_listed_first_and_retrievable(fresh):
    before = fresh.ids("charges")
    new = fresh.add_objects("charges", 30)
    assert len(set(new)) == 30 and not set(new) & set(before)
    listed = [o["id"] for o in walk(fresh, "charges", limit=7)]
    assert set(listed[:30]) == set(new) and listed[30:] == before
    since = {"created[gte]": int(time.time()) - 5}
    assert {o["id"] for o in walk(fresh, "charges", **since)} == set(new)
    assert get(fresh, f"/v1/charges/{new[0]}").json()["created"] >= since["created[gte]"]


def test_backdated_objects_take_their_place_in_the_order(fresh):
    objects = list(fresh.objects("refunds"))
    created = objects[60]["created"]
    (new,) = fresh.add_objects("refunds", 1, created=created)
    listed = walk(fresh, "refunds", limit=9)
    position = [o["id"] for o in listed].index(new)
    assert listed[position - 1]["created"] >= created >= listed[position + 1]["created"]
    assert len(listed) == len(objects) + 1


def test_visible_after_delays_listing_but_not_retrieval(fresh):
    (new,) = fresh.add_objects("disputes", 1, visible_after=1)
    assert new not in fresh.ids("disputes")
    assert new not in [o["id"] for o in walk(fresh, "disputes")]
    assert get(fresh, f"/v1/disputes/{new}").status_code == 200
    time.sleep(2)
    assert get(fresh, "/v1/disputes", {"limit": 1}).json()["data"][0]["id"] == new


def test_added_objects_link_to_existing_ones_and_change_none(fresh):
    charges = fresh.current("charges")
    new = fresh.add_objects("refunds", 5) + fresh.add_objects("balance_transactions", 5)
    sources = set(fresh.ids("charges") + fresh.ids("refunds") + fresh.ids("payouts"))
    for object_id in new:
        resource = "refunds" if object_id.startswith("re_") else "balance_transactions"
        obj = get(fresh, f"/v1/{resource}/{object_id}").json()
        assert obj["charge"] is None if resource == "refunds" else obj["source"] in sources
    assert fresh.current("charges") == charges


# The request log ------------------------------------------------------------------------------


def test_request_log_records_requests_without_the_key(fresh):
    fresh.clear_log()
    get(fresh, "/v1/payouts", {"limit": 3, "status": "paid"}, {"Stripe-Version": "2024-06-20"})
    get(fresh, "/v1/payouts", {"limit": 0}, {"authorization": f"Bearer {KEY}"})
    first, second = fresh.request_log
    assert (first.method, first.path, first.params) == (
        "GET",
        "/v1/payouts",
        {"limit": "3", "status": "paid"},
    )
    assert (first.status, second.status, first.account) == (200, 400, None)
    assert first.headers["Stripe-Version"] == "2024-06-20"
    assert all("Authorization" not in e.headers and KEY not in repr(e) for e in (first, second))
    fresh.clear_log()
    assert fresh.request_log == []


def test_same_seed_same_data_other_seed_other_data(emu):
    with (
        StripeEmulator(seed=7, objects=500, now=NOW) as twin,
        StripeEmulator(seed=8, objects=500, now=NOW) as other,
    ):
        assert get(twin, "/v1/charges").json() == get(emu, "/v1/charges").json()
        assert not set(twin.ids("customers")) & set(other.ids("customers"))


def pages(emu: StripeEmulator, resource: str, **params) -> list[bytes]:
    """The raw bodies of a walk's pages."""
    bodies, cursor = [], {}
    while True:
        response = get(emu, f"/v1/{resource}", {"limit": 100, **params, **cursor})
        bodies.append(response.content)
        page = response.json()
        if not page["has_more"]:
            return bodies
        cursor = {"starting_after": page["data"][-1]["id"]}


def test_prewarmed_objects_are_byte_for_byte_those_built_on_demand():
    with (
        StripeEmulator(seed=5, objects=400, cache_size=50, now=NOW) as built,
        StripeEmulator(seed=5, objects=400, prewarm=True, now=NOW) as prewarmed,
    ):
        for resource in RESOURCES:
            assert pages(built, resource) == pages(prewarmed, resource)
            assert pages(built, resource, **{"created[lt]": 1_750_000_000}) == pages(
                prewarmed, resource, **{"created[lt]": 1_750_000_000}
            )
            one = f"/v1/{resource}/{built.ids(resource)[123]}"
            assert get(built, one).content == get(prewarmed, one).content
