"""Derive the emulator's object shapes from Stripe's reference data in ../shared/stripe-openapi.

The reference files may not be copied into the project, so the emulator ships only what this
script derives from them: per resource, the field skeleton of today's example object (field names
and value types, no values) and the value lists the spec documents for those fields. Run it again
when the reference data changes; its output is committed.

    .venv/bin/python scripts/generate_emulator_shapes.py [--shared DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = ROOT.parent / "shared" / "stripe-openapi"
DEFAULT_OUT = ROOT / "tap_stripe_dd" / "emulator" / "shapes.json"
RESOURCES = ("balance_transaction", "charge", "customer", "dispute", "payout", "refund")
# Descriptions such as "Can be `credit`, `debit`, `prepaid`, or `unknown`." list a field's values
# in one sentence; later sentences mention other names.
LISTING = re.compile(r"\b(can be|one of|possible values|either)\b|: `", re.IGNORECASE)
SENTENCE_END = re.compile(r"\.\s")
CODE = re.compile(r"`([a-z0-9_.]+)`")
NOT_VALUES = {"true", "false", "null"}
# Fields the emulator renders per API version (see tap_stripe_dd/emulator/versions.py): not in
# the canonical shape (that of 2022-11-15 on), so not in its skeleton.
VERSIONED = {"charge": ("refunds",)}

Schema = dict[str, Any]


def skeleton(value: Any) -> Any:
    """Keep an example's structure and replace each value by its JSON type (None where null)."""
    if isinstance(value, dict):
        return {key: skeleton(item) for key, item in value.items()}
    if isinstance(value, list):
        return [skeleton(value[0])] if value else []
    if value is None:
        return None
    return {bool: "boolean", int: "integer", float: "number", str: "string"}[type(value)]


class Spec:
    """Resolves the parts of spec3.json that describe the fields an example object has."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.schemas: dict[str, Schema] = spec["components"]["schemas"]

    def resolve(self, schema: Schema) -> Schema:
        while "$ref" in schema:
            schema = self.schemas[schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    def object_branch(self, schema: Schema) -> Schema | None:
        """The inline-object alternative of a field (expandable fields also allow an id)."""
        schema = self.resolve(schema)
        branches = [self.resolve(b) for b in schema.get("anyOf", [schema])]
        return next((b for b in branches if "properties" in b), None)

    def leaf(self, schema: Schema) -> Schema:
        schema = self.resolve(schema)
        branches = [self.resolve(b) for b in schema.get("anyOf", [schema])]
        return next((b for b in branches if "properties" not in b), schema)

    def values(self, schema: Schema) -> list[str]:
        """The documented values of a string field: its enum, or the list in its description."""
        leaf = self.leaf(schema)
        if leaf.get("type") != "string":
            return []
        if "enum" in leaf:
            return list(leaf["enum"])
        description = leaf.get("description", "") or self.resolve(schema).get("description", "")
        sentence = next((s for s in SENTENCE_END.split(description) if LISTING.search(s)), "")
        return [v for v in dict.fromkeys(CODE.findall(sentence)) if v not in NOT_VALUES]

    def value_lists(self, example: dict[str, Any], schema: Schema, prefix: str = "") -> dict:
        """Dotted field path -> documented values, for every field of the example."""
        found: dict[str, list[str]] = {}
        properties = schema.get("properties", {})
        for key, value in example.items():
            if key not in properties:
                continue
            path = prefix + key
            values = self.values(properties[key])
            if len(values) > 1:
                found[path] = values
            branch = self.object_branch(properties[key])
            if isinstance(value, dict) and branch is not None:
                found.update(self.value_lists(value, branch, path + "."))
        return found


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def derive(shared: Path) -> dict[str, Any]:
    fixtures = json.loads((shared / "fixtures3.json").read_text())["resources"]
    spec = Spec(json.loads((shared / "spec3.json").read_text()))
    return {
        "about": (
            "Derived by scripts/generate_emulator_shapes.py from Stripe's openapi reference data "
            "(MIT licence, Copyright (c) 2011- Stripe, Inc.): field types of fixtures3.json "
            "examples and value lists of spec3.json. Regenerate it; do not edit."
        ),
        "sources": {name: digest(shared / name) for name in ("fixtures3.json", "spec3.json")},
        "skeletons": {
            name: {
                key: value
                for key, value in skeleton(fixtures[name]).items()
                if key not in VERSIONED.get(name, ())
            }
            for name in RESOURCES
        },
        "values": {
            name: spec.value_lists(fixtures[name], spec.schemas[name]) for name in RESOURCES
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    shapes = derive(args.shared)
    args.out.write_text(json.dumps(shapes, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
