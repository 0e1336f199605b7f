"""Generate the tap's JSON schemas from Stripe's OpenAPI spec and current fixtures.

The 2022 spec gives types, nullability and descriptions; the 2026 fixtures add the
fields Stripe introduced since. Both are read in place and never copied into the project.

    python scripts/generate_schemas.py            # (re)write schemas/*.json
    python scripts/generate_schemas.py --check    # exit 1 if a committed file is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from functools import reduce
from pathlib import Path
from typing import Any

Schema = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = REPO_ROOT / "schemas"
DEFAULT_SPEC_DIR = Path(__file__).resolve().parents[2] / "shared" / "stripe-openapi"
REFERENCE_FILES = ("spec3.json", "fixtures3.json")

# Stream name -> Stripe resource name (in `components.schemas` and `resources`).
STREAMS = {
    "balance_transactions": "balance_transaction",
    "charges": "charge",
    "customers": "customer",
    "disputes": "dispute",
    "payouts": "payout",
    "refunds": "refund",
}
PRIMARY_KEY = "id"
REPLICATION_KEY = "created"
# Not Stripe's: the tap's column naming the account an object belongs to (Connect platforms).
ACCOUNT_KEY = "account_id"
ACCOUNT: Schema = {
    "type": "string",
    "description": "The account the object belongs to: the platform's own id for its own "
    "data, else the connected account's (sent as Stripe-Account).",
}

# Objects this many levels below the record keep no `properties` (so typed fields reach
# e.g. charges.payment_method_details.card.brand): the loader stores nested objects as JSON
# anyway, and Stripe's graph (customer -> subscriptions -> items -> price ...) is large.
MAX_DEPTH = 3

# Fixture-only ints count as Unix times only with a time-like name and a value between
# 1973-03-03 and 2100-01-01, so counts and amounts are never reformatted.
UNIX_TIME_NAME = re.compile(r"^(created|date|due_by|expires)$|_(at|on|date)$")
EPOCH_RANGE = range(100_000_000, 4_102_444_800)
# Null fixture values give no type; these names are Stripe's integer amounts (minor units).
# Not every `amount_*` is one: `amount_tax_display` is a string, `amount_details` an object.
AMOUNT_NAME = re.compile(
    r"^(fee|net)$|_amount$|^amount(_(authorized|capturable|captured|due|off|paid|received"
    r"|refunded|remaining))?$"
)

TYPE_ORDER = ("object", "array", "string", "integer", "number", "boolean", "null")
DATE_TIME: Schema = {"type": "string", "format": "date-time"}
METADATA: Schema = {"type": ["object", "null"], "additionalProperties": {"type": "string"}}
DESCRIPTION_LIMIT = 200


def types_of(node: Schema) -> set[str]:
    """Read `type` whether it is a string or a list, so merges need not care."""
    declared = node.get("type", [])
    return {declared} if isinstance(declared, str) else set(declared)


def with_types(node: Schema, types: Iterable[str]) -> Schema:
    """Return a copy typed canonically (`"X"` or `["X", "null"]`) so output is stable."""
    ordered = sorted(set(types), key=TYPE_ORDER.index)
    return {**node, "type": ordered[0] if len(ordered) == 1 else ordered}


def nullable(node: Schema) -> Schema:
    """Allow null: Stripe omits or nulls fields depending on API version and object state."""
    return with_types(node, types_of(node) | {"null"})


def describe(text: str) -> str:
    """Keep the first sentence, without markdown links: enough for a catalog browser."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = " ".join(text.replace("%s", "the smallest currency unit").split())
    text = re.split(r"(?<=[.!?])\s+(?=[A-Z`(])", text, maxsplit=1)[0]
    if len(text) > DESCRIPTION_LIMIT:
        text = text[: DESCRIPTION_LIMIT - 3].rsplit(" ", 1)[0] + "..."
    return text


def merge(left: Schema, right: Schema) -> Schema:
    """Union of two schemas, widening rather than failing: used for `anyOf` variants and
    for fixture values that contradict the older spec."""
    types = types_of(left) | types_of(right)
    merged: Schema = merge_object_shape(left, right)
    if "description" in left or "description" in right:
        merged["description"] = left.get("description", right.get("description"))
    formats = {node.get("format") for node in (left, right) if "string" in types_of(node)}
    if len(formats) == 1 and None not in formats:
        merged["format"] = formats.pop()
    arrays = [node for node in (left, right) if "array" in types_of(node)]
    items = [node["items"] for node in arrays if "items" in node]
    if items and len(items) == len(arrays):
        merged["items"] = reduce(merge, items)
    return with_types(merged, types)


def merge_object_shape(left: Schema, right: Schema) -> Schema:
    """The `properties`/`additionalProperties` of a union: a shapeless object on either
    side admits any object, so the union is shapeless too."""
    shapes = [
        {key: node[key] for key in ("properties", "additionalProperties") if key in node}
        for node in (left, right)
        if "object" in types_of(node)
    ]
    if not shapes:
        return {}
    if len(shapes) == 1 or shapes[0] == shapes[1]:
        return dict(shapes[0])
    if not all("properties" in shape for shape in shapes):
        return {}
    left_props, right_props = (shape["properties"] for shape in shapes)
    properties = {
        key: merge(left_props[key], right_props[key])
        if key in left_props and key in right_props
        else left_props.get(key, right_props.get(key))
        for key in sorted(left_props.keys() | right_props.keys())
    }
    return {"properties": properties, "additionalProperties": True}


class SpecConverter:
    """Turns OpenAPI component schemas into Singer JSON schemas."""

    def __init__(self, components: dict[str, Schema]) -> None:
        self.components = components

    def convert(self, node: Schema, depth: int, refs: frozenset[str]) -> Schema:
        """Convert one spec node; `depth` counts enclosing objects, `refs` guards recursion."""
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            if name in refs:
                return {"type": "object"}
            return self.convert(self.components[name], depth, refs | {name})
        if "x-expansionResources" in node:
            # Unexpanded, Stripe sends the related object's id; the tap never expands.
            converted: Schema = {"type": "string"}
        elif "anyOf" in node:
            variants = [self.convert(variant, depth, refs) for variant in node["anyOf"]]
            converted = reduce(merge, variants)
            converted.pop("description", None)
        elif node.get("format") == "unix-time":
            converted = dict(DATE_TIME)
        elif node.get("type") == "object":
            converted = self.convert_object(node, depth, refs)
        elif node.get("type") == "array":
            converted = {"type": "array"}
            if "items" in node:
                converted["items"] = self.convert(node["items"], depth, refs)
        else:
            converted = {"type": node["type"]}
        if node.get("description"):
            converted["description"] = describe(node["description"])
        return nullable(converted) if node.get("nullable") else converted

    def convert_object(self, node: Schema, depth: int, refs: frozenset[str]) -> Schema:
        """Typed properties down to MAX_DEPTH; deeper or shapeless objects stay permissive."""
        if depth >= MAX_DEPTH:
            return {"type": "object"}
        if node.get("properties"):
            properties = {
                key: self.convert(value, depth + 1, refs)
                for key, value in node["properties"].items()
            }
            # `true` keeps nested fields added after the spec even when the SDK's type
            # conformance runs, which otherwise drops keys a `properties` list lacks.
            return {"type": "object", "properties": properties, "additionalProperties": True}
        if isinstance(node.get("additionalProperties"), dict):
            values = self.convert(node["additionalProperties"], depth + 1, refs)
            return {"type": "object", "additionalProperties": values}
        return {"type": "object"}


def is_unix_time(name: str, value: Any) -> bool:
    """Heuristic for fields the spec does not know: time-like name and epoch-like int."""
    return type(value) is int and value in EPOCH_RANGE and bool(UNIX_TIME_NAME.search(name))


def infer(name: str, value: Any, depth: int) -> Schema:
    """Schema for a fixture-only field, always nullable since one example proves little."""
    if name == "metadata":
        return dict(METADATA)
    if value is None:
        if UNIX_TIME_NAME.search(name):
            return nullable(DATE_TIME)
        return nullable({"type": "integer" if AMOUNT_NAME.search(name) else "string"})
    if isinstance(value, dict):
        if depth >= MAX_DEPTH or not value:
            return nullable({"type": "object"})
        properties = {key: infer(key, item, depth + 1) for key, item in value.items()}
        return nullable({"type": "object", "properties": properties, "additionalProperties": True})
    if isinstance(value, list):
        if not value:
            return nullable({"type": "array"})
        items = reduce(merge, (infer(name, item, depth) for item in value))
        return nullable({"type": "array", "items": items})
    if is_unix_time(name, value):
        return nullable(DATE_TIME)
    json_type = {bool: "boolean", int: "integer", float: "number", str: "string"}[type(value)]
    return nullable({"type": json_type})


def accepts(node: Schema, value: Any) -> bool:
    """Whether `node`'s types admit this scalar (an int at a date-time node is converted)."""
    types = types_of(node)
    if value is None:
        return "null" in types
    if type(value) is int:
        return bool(types & {"integer", "number"}) or node.get("format") == "date-time"
    if isinstance(value, float):
        return "number" in types
    return {bool: "boolean", str: "string"}[type(value)] in types


def overlay(node: Schema | None, name: str, value: Any, depth: int) -> Schema:
    """Add what the fixture shows to the spec's schema: new fields, and wider types where
    today's objects contradict the spec. The spec keeps precedence for what it knows."""
    if node is None:
        return infer(name, value, depth)
    if isinstance(value, dict) and "object" in types_of(node):
        if "properties" not in node:
            return node
        properties = dict(node["properties"])
        for key, item in value.items():
            properties[key] = overlay(properties.get(key), key, item, depth + 1)
        return {**node, "properties": properties}
    if isinstance(value, list) and "array" in types_of(node):
        if "items" not in node:
            return node
        items = node["items"]
        for item in value:
            items = overlay(items, name, item, depth)
        return {**node, "items": items}
    if isinstance(value, (dict, list)) or not accepts(node, value):
        return merge(node, infer(name, value, depth))
    return node


def build_schema(resource: str, components: dict[str, Schema], example: Schema) -> Schema:
    """One stream's schema: every field nullable except the primary and replication keys."""
    spec = components[resource]
    converted = SpecConverter(components).convert_object(spec, 0, frozenset({resource}))
    properties = overlay(converted, resource, example, 0)["properties"]
    properties = {key: nullable(value) for key, value in properties.items()}
    properties[PRIMARY_KEY] = with_types(properties[PRIMARY_KEY], {"string"})
    properties[REPLICATION_KEY] = with_types(properties[REPLICATION_KEY], {"string"})
    properties[ACCOUNT_KEY] = ACCOUNT
    description = describe(spec["description"])
    return {"type": "object", "description": description, "properties": properties}


def build_schemas(spec_dir: Path = DEFAULT_SPEC_DIR) -> dict[str, Schema]:
    """All stream schemas keyed by stream name, computed in memory (the test compares these)."""
    spec, fixtures = (
        json.loads((spec_dir / name).read_text(encoding="utf-8")) for name in REFERENCE_FILES
    )
    components = spec["components"]["schemas"]
    return {
        stream: build_schema(resource, components, fixtures["resources"][resource])
        for stream, resource in STREAMS.items()
    }


def render(schema: Schema) -> str:
    """Byte-stable serialisation so reruns and `--check` compare exactly."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def stale_files(schemas: dict[str, Schema], schema_dir: Path) -> list[Path]:
    """Schema files that are missing or differ from what the generator produces."""
    stale = []
    for stream, schema in sorted(schemas.items()):
        path = schema_dir / f"{stream}.json"
        if not path.is_file() or path.read_text(encoding="utf-8") != render(schema):
            stale.append(path)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec-dir", type=Path, default=DEFAULT_SPEC_DIR)
    parser.add_argument("--check", action="store_true", help="list stale files, write nothing")
    args = parser.parse_args(argv)
    missing = [name for name in REFERENCE_FILES if not (args.spec_dir / name).is_file()]
    if missing:
        parser.error(f"{', '.join(missing)} not found in {args.spec_dir} (pass --spec-dir)")
    schemas = build_schemas(args.spec_dir)
    stale = stale_files(schemas, SCHEMA_DIR)
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(REPO_ROOT)}", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(render(schemas[path.stem]), encoding="utf-8")
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
