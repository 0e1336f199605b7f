"""The committed stream schemas: current with the generator, loadable by the target, and
true to Stripe's objects (ids, amounts, timestamps as the tap emits them)."""

from __future__ import annotations

import datetime as dt
import functools
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator, FormatChecker

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = ROOT / "schemas"
SPEC_DIR = Path(__file__).resolve().parents[2] / "shared" / "stripe-openapi"

# Stream -> Stripe resource; kept here rather than imported so a dropped stream fails.
STREAMS = {
    "balance_transactions": "balance_transaction",
    "charges": "charge",
    "customers": "customer",
    "disputes": "dispute",
    "payouts": "payout",
    "refunds": "refund",
}

needs_reference = pytest.mark.skipif(
    not SPEC_DIR.is_dir(), reason=f"Stripe reference data not available at {SPEC_DIR}"
)


def _load_generator() -> Any:
    """scripts/ is not a package, so load the generator from its path."""
    spec = importlib.util.spec_from_file_location(
        "generate_schemas", ROOT / "scripts" / "generate_schemas.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = _load_generator()


@functools.cache
def committed(stream: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{stream}.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def generated() -> dict[str, dict[str, Any]]:
    return generator.build_schemas(SPEC_DIR)


@pytest.fixture(scope="module")
def examples() -> dict[str, dict[str, Any]]:
    fixtures = json.loads((SPEC_DIR / "fixtures3.json").read_text(encoding="utf-8"))
    return fixtures["resources"]


def types_of(node: dict[str, Any]) -> set[str]:
    declared = node.get("type", [])
    return {declared} if isinstance(declared, str) else set(declared)


def node_at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """Follow `a.b[].c`: dots into properties, `[]` into array items."""
    node = schema
    for part in path.split("."):
        node = node["properties"][part.removesuffix("[]")]
        if part.endswith("[]"):
            node = node["items"]
    return node


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path or "<root>", schema
    for key, child in schema.get("properties", {}).items():
        yield from nodes(child, f"{path}.{key}" if path else key)
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(schema.get(key), dict):
            yield from nodes(schema[key], path + suffix)


def to_rfc3339(value: Any, schema: dict[str, Any]) -> Any:
    """What the tap does to a Stripe object: Unix ints at date-time nodes become RFC 3339."""
    if schema.get("format") == "date-time" and type(value) is int:
        moment = dt.datetime.fromtimestamp(value, dt.timezone.utc)
        return moment.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return {
            key: to_rfc3339(item, properties[key]) if key in properties else item
            for key, item in value.items()
        }
    if isinstance(value, list) and "items" in schema:
        return [to_rfc3339(item, schema["items"]) for item in value]
    return value


@needs_reference
def test_generator_builds_every_stream(generated):
    assert sorted(generated) == sorted(STREAMS)


@needs_reference
@pytest.mark.parametrize("stream", STREAMS)
def test_committed_schema_is_current(stream, generated):
    committed_text = (SCHEMA_DIR / f"{stream}.json").read_text(encoding="utf-8")
    assert committed_text == generator.render(generated[stream]), (
        "stale: run `python scripts/generate_schemas.py`"
    )


def test_stale_files_reports_changed_and_missing(tmp_path):
    schemas = {name: {"type": "object", "description": name} for name in ("a", "b", "c")}
    for name, schema in schemas.items():
        (tmp_path / f"{name}.json").write_text(generator.render(schema), encoding="utf-8")
    assert generator.stale_files(schemas, tmp_path) == []
    (tmp_path / "a.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "c.json").unlink()
    assert generator.stale_files(schemas, tmp_path) == [tmp_path / "a.json", tmp_path / "c.json"]


@pytest.mark.parametrize("stream", STREAMS)
def test_schema_is_valid_draft7(stream):
    Draft7Validator.check_schema(committed(stream))


@pytest.mark.parametrize("stream", STREAMS)
def test_keys_are_not_nullable(stream):
    properties = committed(stream)["properties"]
    assert properties["id"]["type"] == "string"
    created = properties["created"]
    assert (created["type"], created.get("format")) == ("string", "date-time")


def violations(node: dict[str, Any]) -> list[str]:
    """Keywords that would make the target reject records Stripe legitimately sends."""
    found = [keyword for keyword in ("enum", "required") if keyword in node]
    if node.get("additionalProperties") is False:
        found.append("additionalProperties: false")
    if "format" in node and (node["format"] != "date-time" or types_of(node) - {"string", "null"}):
        found.append(f"format {node['format']} on {node.get('type')}")
    return found


@pytest.mark.parametrize("stream", STREAMS)
def test_no_constraint_rejects_future_stripe_data(stream):
    offending = [
        f"{path}: {violation}"
        for path, node in nodes(committed(stream))
        for violation in violations(node)
    ]
    assert offending == []


@pytest.mark.parametrize(
    ("stream", "path"),
    [
        ("charges", "created"),
        ("balance_transactions", "available_on"),
        ("payouts", "arrival_date"),
        ("disputes", "evidence_details.due_by"),
        ("refunds", "created"),
        ("customers", "created"),
        ("disputes", "balance_transactions[].created"),
        ("charges", "refunds.data[].created"),
        ("customers", "discount.start"),
        ("charges", "source.created"),  # fixture-only: detected by name and value
    ],
)
def test_unix_time_is_date_time(stream, path):
    node = node_at(committed(stream), path)
    assert node.get("format") == "date-time"
    assert "string" in types_of(node)


@pytest.mark.parametrize(
    ("stream", "path", "expected"),
    [
        # Amounts stay integers in minor units.
        ("charges", "amount", {"integer", "null"}),
        ("charges", "amount_refunded", {"integer", "null"}),
        ("balance_transactions", "amount", {"integer", "null"}),
        ("balance_transactions", "fee", {"integer", "null"}),
        ("balance_transactions", "net", {"integer", "null"}),
        ("disputes", "amount", {"integer", "null"}),
        ("payouts", "amount", {"integer", "null"}),
        ("refunds", "amount", {"integer", "null"}),
        ("charges", "refunds.data[].amount", {"integer"}),
        ("payouts", "application_fee_amount", {"integer", "null"}),  # fixture-only, null
        ("customers", "invoice_settings.rendering_options.amount_tax_display", {"string", "null"}),
        # Expandable fields hold the related object's id.
        ("charges", "customer", {"string", "null"}),
        ("charges", "payment_intent", {"string", "null"}),
        ("refunds", "charge", {"string", "null"}),
        ("disputes", "charge", {"string", "null"}),
        ("balance_transactions", "source", {"string", "null"}),
    ],
)
def test_field_type(stream, path, expected):
    node = node_at(committed(stream), path)
    assert types_of(node) == expected
    assert "properties" not in node and "format" not in node


@pytest.mark.parametrize("stream", sorted(set(STREAMS) - {"balance_transactions"}))
def test_metadata_is_object_of_strings(stream):
    metadata = committed(stream)["properties"]["metadata"]
    assert types_of(metadata) == {"object", "null"}
    assert metadata["additionalProperties"] == {"type": "string"}
    assert "properties" not in metadata


@needs_reference
@pytest.mark.parametrize("stream", STREAMS)
def test_fixture_fields_are_in_schema(stream, examples):
    example = examples[STREAMS[stream]]
    assert sorted(set(example) - set(committed(stream)["properties"])) == []


@needs_reference
@pytest.mark.parametrize("stream", STREAMS)
def test_fixture_validates_after_time_conversion(stream, examples):
    schema = committed(stream)
    record = to_rfc3339(examples[STREAMS[stream]], schema)
    errors = Draft7Validator(schema, format_checker=FormatChecker()).iter_errors(record)
    assert sorted(f"{list(error.absolute_path)}: {error.message}" for error in errors) == []
