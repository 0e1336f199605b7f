"""What the emulator serves: Stripe's types and shapes, consistent links, varied values,
creation times, and a million objects per endpoint without a scan."""

from __future__ import annotations

import bisect
import importlib.util
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_emulator import NOW, RESOURCES, get, walk

from tap_stripe_dd.emulator import StripeEmulator
from tap_stripe_dd.emulator.keys import hash64
from tap_stripe_dd.emulator.timeline import Timeline

ROOT = Path(__file__).parents[1]
SHARED = Path(__file__).parents[2] / "shared" / "stripe-openapi"
SHAPES = json.loads((ROOT / "tap_stripe_dd" / "emulator" / "shapes.json").read_text())
OBJECT = {resource: resource[:-1] for resource in RESOURCES}
needs_reference = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"Stripe's reference data is not at {SHARED}"
)
JSON_TYPES: dict[str, Any] = {
    "integer": int,
    "number": (int, float),
    "string": str,
    "boolean": bool,
    "object": dict,
    "array": list,
}


def is_type(value: Any, name: str) -> bool:
    return isinstance(value, JSON_TYPES[name]) and (name == "boolean") == isinstance(value, bool)


@pytest.fixture(scope="module")
def served() -> Iterator[dict[str, list[dict]]]:
    with StripeEmulator(seed=21, objects=2500, now=NOW) as emu:
        yield {resource: walk(emu, resource) for resource in RESOURCES}


# Fidelity to Stripe's OpenAPI spec ------------------------------------------------------------


class SpecChecker:
    """Checks values against spec3.json's schemas; fields the 2022 spec lacks are exempt."""

    def __init__(self, spec: dict) -> None:
        self.schemas = spec["components"]["schemas"]
        self.checked = 0

    def resolve(self, schema: dict) -> dict:
        while "$ref" in schema:
            schema = self.schemas[schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    def errors(self, value: Any, schema: dict, path: str) -> list[str]:
        schema = self.resolve(schema)
        self.checked += 1
        if value is None:
            return [] if schema.get("nullable") else [f"{path}: null"]
        if "anyOf" in schema:  # expandable fields: the id string, or the object
            options = [self.errors(value, option, path) for option in schema["anyOf"]]
            return [] if any(not o for o in options) else [f"{path}: {options[0][0]}"]
        kind = schema.get("type")
        if kind and not is_type(value, kind):
            return [f"{path}: {value!r} is not {kind}"]
        if "enum" in schema and value not in schema["enum"]:
            return [f"{path}: {value!r} not in {schema['enum']}"]
        found = []
        if isinstance(value, dict):
            properties = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                if key in properties:
                    found += self.errors(item, properties[key], f"{path}.{key}")
                elif isinstance(extra, dict):
                    found += self.errors(item, extra, f"{path}.{key}")
        if isinstance(value, list) and "items" in schema:
            for n, item in enumerate(value):
                found += self.errors(item, schema["items"], f"{path}[{n}]")
        return found


@needs_reference
@pytest.mark.parametrize("resource", RESOURCES)
def test_served_fields_have_the_spec_types(served, resource):
    checker = SpecChecker(json.loads((SHARED / "spec3.json").read_text()))
    schema = checker.schemas[OBJECT[resource]]
    errors = Counter(
        error for obj in served[resource] for error in checker.errors(obj, schema, OBJECT[resource])
    )
    assert not errors, errors.most_common(5)
    assert checker.checked > 20 * len(served[resource]), "too few fields were checked"


@needs_reference
def test_shapes_json_is_what_the_generator_derives():
    path = ROOT / "scripts" / "generate_emulator_shapes.py"
    spec = importlib.util.spec_from_file_location("generate_emulator_shapes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.derive(SHARED) == SHAPES


# Shape of today's example objects -------------------------------------------------------------


def shape_errors(value: Any, skeleton: Any, path: str, filled: set[str]) -> Iterator[str]:
    """Missing fields and wrong types against the example's skeleton; notes filled fields."""
    if value is not None:
        filled.add(path)
    if isinstance(skeleton, dict) and isinstance(value, dict):
        for key, part in skeleton.items():
            if key not in value:
                yield f"{path}.{key} missing"
            else:
                yield from shape_errors(value[key], part, f"{path}.{key}", filled)
    elif isinstance(skeleton, str) and value is not None and not is_type(value, skeleton):
        yield f"{path}: {value!r} is not {skeleton}"


def typed_paths(skeleton: Any, path: str) -> Iterator[str]:
    """Paths to which the example gives a value (not null)."""
    if skeleton is not None:
        yield path
    if isinstance(skeleton, dict):
        for key, part in skeleton.items():
            yield from typed_paths(part, f"{path}.{key}")


@pytest.mark.parametrize("resource", RESOURCES)
def test_objects_have_every_field_of_stripes_example(served, resource):
    skeleton = SHAPES["skeletons"][OBJECT[resource]]
    filled: set[str] = set()
    errors = Counter(e for obj in served[resource] for e in shape_errors(obj, skeleton, "", filled))
    assert not errors, errors.most_common(5)
    assert set(typed_paths(skeleton, "")) <= filled, "a field the example fills is never filled"


def no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys {Counter(keys).most_common(1)}"
    return dict(pairs)


@pytest.mark.parametrize("resource", RESOURCES)
def test_json_has_no_duplicate_keys(resource):
    with StripeEmulator(seed=2, objects=300) as emu:
        text = get(emu, f"/v1/{resource}", {"limit": 100}).text
    assert len(json.loads(text, object_pairs_hook=no_duplicates)["data"]) == 100


# Links and values -----------------------------------------------------------------------------


def test_links_point_at_existing_consistent_objects(served):
    by_id = {o["id"]: o for objects in served.values() for o in objects}
    for charge in served["charges"]:
        assert charge["customer"] is None or by_id[charge["customer"]]["object"] == "customer"
        if charge["balance_transaction"]:
            assert by_id[charge["balance_transaction"]]["source"] == charge["id"]
    for resource in ("refunds", "disputes"):
        for obj in served[resource]:
            charge = by_id[obj["charge"]]
            assert (obj["currency"], obj["payment_intent"]) == (
                charge["currency"],
                charge["payment_intent"],
            )
            assert 0 < obj["amount"] <= charge["amount"] and obj["created"] >= charge["created"]
    for payout in served["payouts"]:
        if payout["balance_transaction"]:
            transaction = by_id[payout["balance_transaction"]]
            assert (transaction["source"], transaction["amount"]) == (
                payout["id"],
                -payout["amount"],
            )
    for transaction in served["balance_transactions"]:
        source = by_id[transaction["source"]]
        if transaction["type"] == "adjustment":  # a dispute's, which embeds it
            assert source["object"] == "dispute" and transaction in source["balance_transactions"]
            withdrawn = transaction["reporting_category"] == "dispute"
            assert (source["created"] == transaction["created"]) == withdrawn
            assert source["created"] <= transaction["created"]
        else:
            assert (
                source["object"] == transaction["type"]
                and source["created"] == transaction["created"]
            )
        assert transaction["net"] == transaction["amount"] - transaction["fee"]


@pytest.mark.parametrize(
    ("resource", "field", "at_least"),
    [
        ("charges", "currency", 6),
        ("charges", "status", 3),
        ("charges", "amount", 500),
        ("charges", "customer", 800),
        ("customers", "email", 2000),
        ("customers", "name", 500),
        ("disputes", "reason", 10),
        ("disputes", "status", 8),
        ("payouts", "status", 5),
        ("payouts", "destination", 4),
        ("refunds", "reason", 4),
        ("balance_transactions", "type", 3),
    ],
)
def test_values_vary(served, resource, field, at_least):
    values = [json.dumps(o[field]) for o in served[resource]]
    assert len(set(values)) >= at_least


@pytest.mark.parametrize("resource", sorted(set(RESOURCES) - {"balance_transactions"}))
def test_metadata_is_strings_and_often_empty(served, resource):
    metadata = [o["metadata"] for o in served[resource]]
    assert all(isinstance(v, str) for m in metadata for v in m.values())
    assert 0.2 < sum(bool(m) for m in metadata) / len(metadata) < 0.8


# Creation times -------------------------------------------------------------------------------


def test_created_spreads_over_the_default_range_with_clusters(served):
    created = [o["created"] for o in served["charges"]]
    low, high = 1_704_067_200, NOW  # 2024-01-01 UTC .. the clock's start
    assert low <= min(created) < low + 86_400 * 30 and high - 86_400 * 30 < max(created) <= high
    clusters = [size for size in Counter(created).values() if size >= 30]
    assert len(clusters) >= 2 and max(clusters) <= 150


def test_data_depends_on_the_emulators_clock_not_the_machines(monkeypatch):
    end = 1_767_225_599  # 2025-12-31: the data set's end, old enough that nothing moves
    with StripeEmulator(seed=4, objects=200, created_to=end) as emu:
        today = list(emu.objects("payouts"))
    with StripeEmulator(seed=4, objects=200, now=NOW, frozen=True) as emu:
        young = list(emu.objects("payouts"))
    monkeypatch.setattr(time, "time", lambda: 4_102_444_800.0)  # 2100-01-01
    with StripeEmulator(seed=4, objects=200, created_to=end) as emu:
        assert list(emu.objects("payouts")) == today
    with StripeEmulator(seed=4, objects=200, now=NOW, frozen=True) as emu:
        assert list(emu.objects("payouts")) == young


def test_custom_created_range():
    start, end = 1_600_000_000, 1_600_086_399
    with StripeEmulator(seed=4, objects=300, created_from=start, created_to=end) as emu:
        created = [o["created"] for o in walk(emu, "balance_transactions")]
    assert all(start <= c <= end for c in created) and created == sorted(created, reverse=True)


def test_a_million_objects_page_by_cursor_and_created_bound_without_a_scan():
    with StripeEmulator(seed=9, objects=1_000_000, created_to=1_767_225_599) as emu:
        newest = get(emu, "/v1/charges", {"limit": 100}).json()["data"]
        middle_time = (1_704_067_200 + 1_767_225_599) // 2
        middle = get(emu, "/v1/charges", {"limit": 100, "created[lte]": middle_time}).json()
        after = get(emu, "/v1/charges", {"limit": 100, "starting_after": middle["data"][-1]["id"]})
        back = get(
            emu, "/v1/charges", {"limit": 100, "ending_before": after.json()["data"][0]["id"]}
        )
        oldest = get(emu, "/v1/charges", {"limit": 5, "created[lt]": 1_704_067_200 + 300}).json()
        one = get(emu, f"/v1/charges/{middle['data'][50]['id']}").json()
    assert len(newest) == 100 and newest[0]["created"] <= 1_767_225_599
    assert middle["has_more"] and middle["data"][0]["created"] <= middle_time
    keys = [(o["created"], o["id"]) for o in middle["data"] + after.json()["data"]]
    assert keys == sorted(keys, reverse=True) and len(set(keys)) == 200
    assert back.json()["data"] == middle["data"]
    assert 0 < len(oldest["data"]) <= 5 and one == middle["data"][50]


RENDER_IN_WORKERS = """
from tap_stripe_dd.emulator.dataset import Dataset
from tap_stripe_dd.emulator.objects import LINK_WINDOW, RESOURCES

def served(jobs):
    dataset = Dataset(5, None, 300, 1_704_067_200, 1_767_225_599, cache_size=10)
    if jobs:
        dataset.prewarm(jobs)
    return {name: dataset.json(name, list(range(300))) for name in RESOURCES}

assert LINK_WINDOW >= 300, "every dispute of the third range may link to a charge of the first"
built = served(0)
assert served(1) == built
assert served(3) == built
"""


def test_prewarm_renders_the_same_bytes_in_one_process_or_several():
    """Worker processes render index ranges (0-99, 100-199, 200-299) in data sets of their own,
    where objects link across the ranges; built on demand through a tiny cache, they must be
    the same. In a fresh interpreter, as forking one with threads (pytest's) is unsafe."""
    result = subprocess.run(
        [sys.executable, "-c", RENDER_IN_WORKERS], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("count", [1, 7, 2500])
def test_first_index_from_agrees_with_a_bisection_of_all_keys(count):
    """Cursor keys skip the search; every other key is searched. Both must find the same."""
    timeline = Timeline(hash64("timeline", count), count, 1_704_067_200, 1_704_070_200)
    keys = [(timeline.created(index), index) for index in range(count)]
    probes = [
        (created + shift, index + step)
        for created, index in keys
        for shift in (-1, 0, 1)
        for step in (-1, 0, 1)
    ]
    probes += [(-(1 << 62), 1), ((1 << 62), 0), (1_704_067_200, count), (1_704_070_201, -1)]
    assert [timeline.first_index_from(key) for key in probes] == [
        bisect.bisect_left(keys, key) for key in probes
    ]


def test_ids_look_like_stripes(served):
    lengths = {resource: {len(o["id"]) for o in objects} for resource, objects in served.items()}
    assert lengths == {
        "balance_transactions": {28},
        "charges": {27},
        "customers": {18},
        "disputes": {27},
        "payouts": {27},
        "refunds": {27},
    }
    assert all(o["id"].isascii() and o["id"].replace("_", "").isalnum() for o in served["charges"])


def test_python_api_refuses_misuse():
    emu = StripeEmulator(objects=1)
    with pytest.raises(ValueError, match="unknown resource"):
        emu.ids("invoices")
    with pytest.raises(RuntimeError, match="not running"):
        _ = emu.url
    with pytest.raises(ValueError, match="api_key"):
        StripeEmulator(api_key="hunter2")
