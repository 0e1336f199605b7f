"""The loader's deletion guard (loader.py): upstream target-duckdb updates every column of a
row from a record, so a deletion's record (only the columns a deletion sets) would null the
row's last known values; the guard updates only the columns a deletion carries."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_loader import OURS, UPSTREAM_VALUES, load, singer_messages

SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "email": {"type": ["string", "null"]},
        "balance": {"type": ["integer", "null"]},
        "deleted": {"type": ["boolean", "null"]},
        "_sdc_deleted_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
CUSTOMERS = [
    {"id": "cus_1", "email": "a@example.com", "balance": 5},
    {"id": "cus_2", "email": "b@example.com", "balance": 7},
]
DELETION = {"id": "cus_1", "deleted": True, "_sdc_deleted_at": "2026-01-02T00:00:00Z"}


def rows(db: Path, command: list[str], second: list[dict], **config: object) -> list[tuple]:
    """(id, email, balance, deleted) of each row, as text, after a load and then `second`."""
    runs = [
        singer_messages("customers", SCHEMA, CUSTOMERS),
        singer_messages("customers", SCHEMA, second),
    ]
    columns, found = load(command, db, runs, **config)["src.customers"]
    names = [name for name, _ in columns if name != "_sdc_batched_at"]
    wanted = [names.index(name) for name in ("id", "email", "balance", "deleted")]
    return sorted(tuple(row[i] for i in wanted) for row in found)


def test_upstream_nulls_what_a_deletion_does_not_carry(tmp_path: Path) -> None:
    (first, _) = rows(tmp_path / "up.duckdb", UPSTREAM_VALUES, [DELETION])
    assert first == ("cus_1", None, None, "true")


@pytest.mark.parametrize("metadata", [False, True])
def test_a_deletion_keeps_the_last_known_values(tmp_path: Path, metadata: bool) -> None:
    renamed = {"id": "cus_2", "email": "c@example.com", "balance": None}
    found = rows(tmp_path / "ours.duckdb", OURS, [DELETION, renamed], add_metadata_columns=metadata)
    assert found[0] == ("cus_1", "a@example.com", "5", "true")
    assert found[1] == ("cus_2", "c@example.com", None, None)  # a full row: nulls are values


def test_hard_delete_removes_deleted_rows(tmp_path: Path) -> None:
    found = rows(tmp_path / "hard.duckdb", OURS, [DELETION], hard_delete=True)
    assert [row[0] for row in found] == ["cus_2"]
