"""The loader guard: target-duckdb 0.8.0 loses first rows and final STATEs; ours must not.

Each case runs the real executables on Singer messages and counts what reached DuckDB. The same
case against the unguarded upstream `target-duckdb` shows the bug it guards against is real.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

BIN = Path(sys.executable).parent
SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "created": {"type": "string", "format": "date-time"},
        "amount": {"type": ["integer", "null"]},
    },
}


def singer_lines(count: int, *, stream: str = "charges") -> list[str]:
    def state(bookmark: str) -> dict:
        value = {"replication_key": "created", "replication_key_value": bookmark}
        return {"type": "STATE", "value": {"bookmarks": {stream: value}}}

    # As the tap sends them: the state it started from, the records, the state they reached.
    messages = [
        {"type": "SCHEMA", "stream": stream, "schema": SCHEMA, "key_properties": ["id"]},
        state("2025-01-01T00:00:00Z"),
    ]
    for index in range(count):
        record = {"id": f"ch_{index:05d}", "created": f"2025-03-0{1 + index % 9}T10:00:00Z"}
        messages.append({"type": "RECORD", "stream": stream, "record": record | {"amount": index}})
    messages.append(state("2025-04-01T00:00:00Z"))
    return [json.dumps(message) for message in messages]


def run_target(
    executable: str, tmp_path: Path, lines: list[str], batch_size_rows: int
) -> tuple[int, list[dict]]:
    """Returns (rows in the table, STATE values emitted on stdout)."""
    db = tmp_path / "warehouse" / f"{executable}.duckdb"
    config = tmp_path / "target.json"
    config.write_text(
        json.dumps(
            {"path": str(db), "default_target_schema": "src", "batch_size_rows": batch_size_rows}
        )
    )
    result = subprocess.run(
        [str(BIN / executable), "--config", str(config)],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    states = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = conn.execute("SELECT count(*) FROM src.charges").fetchone()[0]
    return rows, states


@pytest.mark.parametrize("count", [1, 2, 3, 250])
def test_every_row_of_every_batch_arrives(tmp_path: Path, count: int) -> None:
    rows, _ = run_target("target-duckdb-dd", tmp_path, singer_lines(count), batch_size_rows=100)
    assert rows == count


def test_upstream_drops_first_rows_that_the_guard_keeps(tmp_path: Path) -> None:
    (tmp_path / "warehouse").mkdir()
    upstream_rows, _ = run_target("target-duckdb", tmp_path, singer_lines(3), batch_size_rows=1)
    assert upstream_rows < 3, "upstream no longer loses rows: the guard may be obsolete"


@pytest.mark.parametrize("count", [100, 200])
def test_final_state_is_forwarded_when_rows_fill_the_last_batch(tmp_path: Path, count: int) -> None:
    _, states = run_target("target-duckdb-dd", tmp_path, singer_lines(count), batch_size_rows=100)
    assert states, "no STATE forwarded"
    assert states[-1]["bookmarks"]["charges"]["replication_key_value"] == "2025-04-01T00:00:00Z"


def test_upstream_loses_final_state_when_rows_fill_the_last_batch(tmp_path: Path) -> None:
    (tmp_path / "warehouse").mkdir()
    _, states = run_target("target-duckdb", tmp_path, singer_lines(100), batch_size_rows=100)
    final = states[-1]["bookmarks"]["charges"]["replication_key_value"]
    assert final == "2025-01-01T00:00:00Z", "upstream forwards the final STATE: guard obsolete?"


def test_state_is_not_forwarded_before_its_rows_are_loaded(tmp_path: Path) -> None:
    lines = singer_lines(50)
    # A STATE in the middle of a batch must wait for the flush of the rows before it.
    middle = {"type": "STATE", "value": {"bookmarks": {"charges": {"replication_key_value": "m"}}}}
    lines.insert(27, json.dumps(middle))
    _, states = run_target("target-duckdb-dd", tmp_path, lines, batch_size_rows=1000)
    assert [s["bookmarks"]["charges"]["replication_key_value"] for s in states] == [
        "2025-04-01T00:00:00Z"
    ]


@pytest.mark.parametrize("source", ["MyStripe", "my-stripe", "stripe data"])
def test_bad_data_source_name_is_refused_before_anything_is_written(tmp_path: Path, source: str):
    config = tmp_path / "target.json"
    db = tmp_path / "warehouse" / "stripe.duckdb"
    config.write_text(json.dumps({"path": str(db), "default_target_schema": source}))
    result = subprocess.run(
        [str(BIN / "target-duckdb-dd"), "--config", str(config)],
        input="\n".join(singer_lines(3)) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "lowercase letters, digits and underscores" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not db.exists()
