"""Objects that do not fit the schema. What the run relies on (an object, its id, its `created`)
stops the tap in one line naming stream, object and field, and the bookmark never passes it;
what can be kept losslessly is kept: a whole `created` sent as a float, and (the loader, in
tests/test_loader.py) values that do not fit their column, kept in `_sdc_extra`.

Stripe's objects here come from the emulator, with one object spoiled on its way by a proxy
(tests/misbehaving.py; the emulator serves only well-formed objects)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from misbehaving import proxy

from conftest import TEST_TUNING
from tap_stripe_dd.client import to_unix
from tap_stripe_dd.emulator import StripeEmulator
from tap_stripe_dd.records import float_rfc3339, to_rfc3339

NOW = 1_780_000_000  # the emulator's data, the same in the test and behind the proxy


def charges() -> list[dict]:
    return list(StripeEmulator(seed=7, objects=40, now=NOW).objects("charges"))


@contextmanager
def serving(objects: list) -> Iterator[str]:
    """The emulator's API, with its charges replaced on their way by `objects` (one spoiled)."""
    replaced = {o["id"]: spoiled for o, spoiled in zip(charges(), objects, strict=True)}

    def spoil(page: dict) -> dict:
        return page | {"data": [replaced[o["id"]] for o in page["data"]]}

    with (
        StripeEmulator(seed=7, objects=40, now=NOW) as emulator,
        proxy(emulator, "/v1/charges", change_body=spoil) as url,
    ):
        yield url


def config_for(url: str) -> dict:
    return {
        "api_key": "sk_test_RecordsK3yThatN3v3rL3aks",
        "api_url": url,
        "start_date": "2024-01-01T00:00:00Z",
        **TEST_TUNING,
        "page_size": 5,
    }


SPOILED = 17  # the object that does not fit, mid-way
# Where on its page (page and slice edges are the tap's business).
WHERE = f"\\((after object {re.escape(charges()[SPOILED - 1]['id'])}|first on its page)\\)"


def spoil_null_element(objects: list) -> str:
    objects[SPOILED] = None
    return f"null where an object belongs {WHERE}"


def spoil_null_id(objects: list) -> str:
    objects[SPOILED]["id"] = None
    return f"an object {WHERE}: field 'id' is None"


def spoil_null_created(objects: list) -> str:
    objects[SPOILED]["created"] = None
    return f"object {objects[SPOILED]['id']}: field 'created' is None"


def spoil_fractional_created(objects: list) -> str:
    objects[SPOILED]["created"] += 0.5
    return f"object {objects[SPOILED]['id']}: field 'created' is {objects[SPOILED]['created']}"


@pytest.mark.parametrize(
    "spoil",
    [spoil_null_element, spoil_null_id, spoil_null_created, spoil_fractional_created],
    ids=["null element", "null id", "null created", "fractional created"],
)
def test_an_object_the_run_cannot_place_stops_it_in_one_line_before_it(
    run_tap, spoil: Callable[[list], str]
):
    objects = charges()
    bound = objects[SPOILED - 1]["created"]  # the bookmark may not pass the spoiled object
    what = spoil(objects)
    with serving(objects) as url:
        run = run_tap(config_for(url))
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    pattern = (
        f"tap-stripe-dd: error: stream 'charges': {what}: Stripe sent an object that does not "
        "fit the schema; stopped before it \\(the next run starts again from the last bookmark\\)"
    )
    assert re.fullmatch(pattern, run.stderr.strip().splitlines()[-1]), run.stderr[-2000:]
    marks = [
        to_unix(state["bookmarks"]["charges"]["replication_key_value"])
        for state in run.states
        if "replication_key_value" in state.get("bookmarks", {}).get("charges", {})
    ]
    assert all(mark <= bound for mark in marks), "the bookmark moved past the spoiled object"


def test_a_whole_created_sent_as_a_float_is_kept(run_tap):
    objects = charges()
    objects[SPOILED]["created"] = float(objects[SPOILED]["created"])
    with serving(objects) as url:
        run = run_tap(config_for(url))
    assert run.returncode == 0, run.stderr[-3000:]
    got = {record["id"]: record["created"] for record in run.records["charges"]}
    assert got == {o["id"]: to_rfc3339(int(o["created"])) for o in objects}


def test_a_unix_time_with_a_fraction_is_kept_to_the_microsecond():
    assert float_rfc3339(1704067200.0) == "2024-01-01T00:00:00Z"
    assert float_rfc3339(1704067200.25) == "2024-01-01T00:00:00.250000Z"
