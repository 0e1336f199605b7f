"""The loader guard: target-duckdb 0.8.0 loses first rows and final STATEs; ours must not. And
its fast load must write exactly the values upstream writes.

Each case runs the real executables on Singer messages and counts what reached DuckDB. The same
case against the unguarded upstream `target-duckdb` shows the bug it guards against is real.
The value cases load the same messages with ours and with upstream's own code, and compare the
warehouses column by column, type by type, value by value.
"""

from __future__ import annotations

import copy
import csv
import gzip
import io
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from target_duckdb.db_sync import DbSync

from conftest import file_size_limit, read_only_folder
from tap_stripe_dd.loader import EXTRA, FastDbSync, loads, with_extra_column, working_path

BIN = Path(sys.executable).parent
OURS = [str(BIN / "target-duckdb-dd")]
# Upstream target-duckdb with one change, its CSV header guess turned off (it drops rows): the
# reference for every value our fast load writes.
UPSTREAM_VALUES = [
    sys.executable,
    "-c",
    """
import target_duckdb
from tap_stripe_dd.loader import FIXED_COPY, UPSTREAM_COPY

class Connection:
    def __init__(self, connection):
        self.connection = connection

    def execute(self, query, *args):
        return self.connection.execute(query.replace(UPSTREAM_COPY, FIXED_COPY), *args)

    def __getattr__(self, name):
        return getattr(self.connection, name)

persist_lines = target_duckdb.persist_lines
target_duckdb.persist_lines = lambda connection, *rest: persist_lines(Connection(connection), *rest)
target_duckdb.main()
""",
]
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


def run(
    command: list[str], config: dict, lines: list[str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """Runs a target on Singer lines; its stdout holds the STATE values it emitted."""
    config_file = tmp_path / "target.json"
    config_file.write_text(json.dumps(config))
    return subprocess.run(
        [*command, "--config", str(config_file)],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )


def run_target(
    executable: str, tmp_path: Path, lines: list[str], batch_size_rows: int
) -> tuple[int, list[dict]]:
    """Returns (rows in the table, STATE values emitted on stdout)."""
    db = tmp_path / "warehouse" / f"{executable}.duckdb"
    config = {"path": str(db), "default_target_schema": "src", "batch_size_rows": batch_size_rows}
    result = run([str(BIN / executable)], config, lines, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
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
    db = tmp_path / "warehouse" / "stripe.duckdb"
    config = {"path": str(db), "default_target_schema": source}
    result = run(OURS, config, singer_lines(3), tmp_path)
    assert result.returncode == 2
    assert "lowercase letters, digits and underscores" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not db.exists()


# A column of every type upstream maps, plus a nested object that flattening splits.
THINGS_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "text": {"type": ["string", "null"]},
        "amount": {"type": ["integer", "null"]},
        "small": {"type": ["integer", "null"], "maximum": 32767},
        "big": {"type": ["integer", "null"], "maximum": 9223372036854775807},
        "rate": {"type": ["number", "null"]},
        "flag": {"type": ["boolean", "null"]},
        "created": {"type": ["string", "null"], "format": "date-time"},
        "at": {"type": ["string", "null"], "format": "time"},
        "code": {"type": ["integer", "string", "null"]},
        "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
        "items": {"type": ["array", "null"]},
        "anything": {"type": ["null", "object", "array"]},
        "shipping": {
            "type": ["object", "null"],
            "properties": {
                "name": {"type": ["string", "null"]},
                "address": {"type": ["object", "null"]},
            },
        },
    },
}
TRICKY_TEXT = 'Zürich "quoted", comma\r\nCRLF\nLF\ttab \\ back\\slash 😀 \u2028 \x7f \x01 NULL'
THINGS = [
    {
        "id": "plain",
        "text": "plain",
        "amount": 2**40,
        "small": 7,
        "big": -(2**62),
        "rate": 0.1,
        "flag": True,
        "created": "2025-03-01T10:00:00Z",
        "at": "10:00:00",
        "code": 12,
        "metadata": {"plan": "pro", "note": TRICKY_TEXT},
        "items": [1, "two", {"three": 3.0, "none": None}, None, True, 1e16, -0.0],
        "anything": {"k": [1]},
        "shipping": {"name": "Ann", "address": {"city": "Zürich", "line1": '1 "A" St, Apt 2'}},
        "not_in_schema": "ignored",
    },
    {"id": "nulls", "text": None, "anything": None, "metadata": None, "shipping": None},
    {"id": "missing"},
    {
        "id": "edges",
        "text": "",
        "amount": 2**70,
        "small": 0,
        "big": 2**63 - 1,
        "rate": 1e-05,
        "flag": False,
        "created": "2025-03-01T10:00:00.123456+02:00",
        "at": "23:59:59.999999",
        "code": "A-1",
        "metadata": {},
        "items": [],
        "anything": "a string",
        "shipping": {},
    },
    {
        "id": f"unicode {TRICKY_TEXT}",
        "text": TRICKY_TEXT,
        "rate": -0.0,
        "created": "2025-03-01 10:00:00",
        "metadata": {"emoji": "😀", "ctl": "\x00\x1f", "quote": '"', "city": "Zürich"},
        "items": [[], {}, "", " ", "\u00e9\u0301"],
        "anything": [],
        "shipping": {"name": TRICKY_TEXT, "address": None},
    },
    {
        # Values of another type than the column's, which upstream still loads.
        "id": "mismatched",
        "text": 42,
        "amount": "12",
        "rate": 3,
        "flag": "true",
        "created": "2025-03-01",
        "code": 1.5,
        "metadata": 5,
        "items": "[1, 2]",
        "anything": 0,
        "shipping": {"name": {"first": "Ann"}, "address": "[1]"},
    },
    {"id": "more mismatched", "text": {"a": [1, "é"]}, "code": True, "rate": float("nan")},
    {"id": "non-finite", "items": [float("nan"), float("inf"), -float("inf"), 1e300 * 10]},
    {"id": "plain", "text": "the same key again: this one wins", "amount": -1},
]


def singer_messages(stream: str, schema: dict, records: list[dict]) -> list[dict]:
    return [
        {"type": "SCHEMA", "stream": stream, "schema": schema, "key_properties": ["id"]},
        *(
            {
                "type": "RECORD",
                "stream": stream,
                "record": record,
                "time_extracted": "2025-04-01T00:00:00Z",
            }
            for record in records
        ),
        {"type": "STATE", "value": {"bookmarks": {stream: {"replication_key_value": "x"}}}},
    ]


def load(command: list[str], db: Path, runs: list[list[dict]], **config: Any) -> dict:
    """Runs the target once per list of messages, into one warehouse; returns its tables."""
    config = {"path": str(db), "default_target_schema": "src"} | config
    for messages in runs:
        result = run(command, config, [json.dumps(message) for message in messages], db.parent)
        assert result.returncode == 0, result.stderr[-3000:]
    return warehouse_contents(db)


def warehouse_contents(db: Path) -> dict[str, tuple[list, list]]:
    """Every table's columns with their types, and its rows as text (JSON exactly as stored),
    without the time of loading, nor `_sdc_extra` (upstream drops the fields it keeps: tested
    on its own)."""
    contents = {}
    with duckdb.connect(str(db), read_only=True) as conn:
        tables = conn.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() ORDER BY ALL"
        ).fetchall()
        for schema, table in tables:
            columns = conn.execute(
                "SELECT column_name, data_type FROM duckdb_columns() "
                "WHERE schema_name = ? AND table_name = ? AND column_name != ? "
                "ORDER BY column_index",
                [schema, table, EXTRA],
            ).fetchall()
            texts = ", ".join(
                f'"{name}"::VARCHAR' for name, _ in columns if name != "_sdc_batched_at"
            )
            rows = conn.execute(f'SELECT {texts} FROM "{schema}"."{table}" ORDER BY ALL').fetchall()
            contents[f"{schema}.{table}"] = (columns, rows)
    return contents


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"add_metadata_columns": True},
        {"hard_delete": True, "batch_size_rows": 3},
        {"data_flattening_max_level": 1},
    ],
    ids=["plain", "metadata-columns", "hard-delete-small-batches", "flattened"],
)
def test_every_value_loads_as_upstream_loads_it(tmp_path: Path, config: dict) -> None:
    things = [*THINGS, {"id": "deleted", "_sdc_deleted_at": "2025-04-01T00:00:00Z"}]
    messages = singer_messages("things", THINGS_SCHEMA, things)
    ours = load(OURS, tmp_path / "ours.duckdb", [messages], **config)
    upstream = load(UPSTREAM_VALUES, tmp_path / "upstream.duckdb", [messages], **config)
    assert ours == upstream
    rows = ours["src.things"][1]
    assert len(rows) == len({thing["id"] for thing in things}) - ("hard_delete" in config)


def test_later_batches_and_runs_update_keys_and_add_columns_as_upstream_does(tmp_path: Path):
    schema = {"type": "object", "properties": {"id": {"type": "string"}, "n": {"type": "integer"}}}
    wider = {"properties": schema["properties"] | {"note": {"type": ["string", "null"]}}}
    first = singer_messages("things", schema, [{"id": k, "n": n} for n, k in enumerate("abcab")])
    second = singer_messages(
        "things", schema | wider, [{"id": "b", "n": 10, "note": "b, again"}, {"id": "d", "n": 11}]
    )
    runs = [first, second]
    ours = load(OURS, tmp_path / "ours.duckdb", runs, batch_size_rows=2)
    upstream = load(UPSTREAM_VALUES, tmp_path / "upstream.duckdb", runs, batch_size_rows=2)
    assert ours == upstream
    assert ours["src.things"] == (
        [("id", "VARCHAR"), ("n", "HUGEINT"), ("note", "VARCHAR")],
        [("a", "3", None), ("b", "10", "b, again"), ("c", "2", None), ("d", "11", None)],
    )


def test_a_batch_that_fails_to_load_is_confirmed_by_no_state(tmp_path: Path) -> None:
    """Batches load in the background; a STATE still waits for its batch, and for its error
    (here a constraint of the warehouse's own that a row breaks: a value that does not fit its
    column is kept, see below)."""
    bad = {"id": "ch_bad", "created": "2025-03-01T10:00:00Z", "amount": 1_000}
    after_bad = {"bookmarks": {"charges": {"replication_key_value": "after the bad row"}}}
    lines = singer_lines(3)
    lines[2:2] = [
        json.dumps({"type": "RECORD", "stream": "charges", "record": bad}),
        json.dumps({"type": "STATE", "value": after_bad}),
    ]
    for name, command in {"ours": OURS, "upstream": UPSTREAM_VALUES}.items():
        config = {"path": str(tmp_path / f"{name}.duckdb"), "default_target_schema": "src"}
        with duckdb.connect(config["path"]) as conn:
            conn.execute(
                "CREATE SCHEMA src; CREATE TABLE src.charges (amount HUGEINT CHECK (amount < 1000),"
                " created TIMESTAMP, id VARCHAR PRIMARY KEY)"
            )
        result = run(command, config | {"batch_size_rows": 2}, lines, tmp_path)
        assert result.returncode != 0 and "CHECK constraint" in result.stderr, result.stderr
        assert result.stdout == "", name


# BATCH messages: their files' records load exactly as the same RECORD messages load.

EXTRACTED = "2025-04-01T00:00:00Z"


def as_batches(messages: list[dict], folder: Path, compression: str, per_file: int) -> list[dict]:
    """The messages with their RECORDs moved into files, `per_file` records each, announced
    by one BATCH message; each file's time is the RECORDs' `time_extracted`."""
    folder.mkdir(exist_ok=True)
    records = [m["record"] for m in messages if m["type"] == "RECORD"]
    urls = []
    for start in range(0, len(records), per_file):
        path = folder / f"part-{start}.jsonl{'.gz' if compression == 'gzip' else ''}"
        text = "".join(json.dumps(record) + "\n" for record in records[start : start + per_file])
        with (gzip.open if compression == "gzip" else open)(path, "wt") as file:
            file.write(text)
        stamp = datetime.fromisoformat(EXTRACTED).timestamp()
        os.utime(path, (stamp, stamp))
        urls.append(path.as_uri())
    batch = {
        "type": "BATCH",
        "stream": messages[0]["stream"],
        "encoding": {"format": "jsonl", "compression": compression},
        "manifest": urls,
    }
    at = next(i for i, m in enumerate(messages) if m["type"] == "RECORD")
    return [*messages[:at], batch, *(m for m in messages[at:] if m["type"] != "RECORD")]


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_batch_files_load_as_their_records_do_and_are_then_deleted(tmp_path: Path, compression):
    messages = singer_messages("things", THINGS_SCHEMA, THINGS)
    batches = as_batches(messages, tmp_path / "files", compression, per_file=2)
    config = {"add_metadata_columns": True, "batch_size_rows": 3}
    from_records = load(OURS, tmp_path / "records.duckdb", [messages], **config)
    from_batches = load(OURS, tmp_path / "batches.duckdb", [batches], **config)
    assert from_batches == from_records
    assert len(from_batches["src.things"][1]) == len({thing["id"] for thing in THINGS})
    assert not list((tmp_path / "files").iterdir()), "a loaded batch file was left behind"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"manifest": ["file:///nowhere/part-0.jsonl"]}, "cannot be read"),
        ({"manifest": ["s3://bucket/part-0.jsonl"]}, "is not on this machine"),
        ({"encoding": {"format": "parquet"}}, "'parquet' are not supported"),
        ({"encoding": {"format": "jsonl", "compression": "gzip"}}, "cannot be read"),
        ({"broken": True}, "line 3: not JSON"),
    ],
)
def test_a_batch_that_cannot_be_read_fails_clearly_with_no_state(tmp_path: Path, change, expected):
    messages = singer_messages("things", THINGS_SCHEMA, THINGS)
    batches = as_batches(messages, tmp_path / "files", "none", per_file=100)
    if change.get("broken"):
        (path,) = (tmp_path / "files").iterdir()
        lines = path.read_text().splitlines()
        path.write_text("\n".join([*lines[:2], '{"id": "cut', *lines[3:]]) + "\n")
    fields = {key: value for key, value in change.items() if key != "broken"}
    lines = [json.dumps(m | fields if m["type"] == "BATCH" else m) for m in batches]
    config = {"path": str(tmp_path / "w.duckdb"), "default_target_schema": "src"}
    result = run(OURS, config, lines, tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("target-duckdb: error: stream")
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(list(THINGS_SCHEMA["properties"])), JSON_VALUES)))
def test_csv_fields_are_the_fields_of_upstreams_csv_rows(records: list[dict]) -> None:
    """Any value in any column: the text DuckDB casts is the text upstream's CSV holds."""
    message = {"stream": "things", "schema": THINGS_SCHEMA, "key_properties": ["id"]}
    config = {"path": "unused.duckdb", "default_target_schema": "src"}
    ours = FastDbSync(None, config, copy.deepcopy(message)).csv_fields(records)
    upstream = DbSync(None, config, with_extra_column(copy.deepcopy(message)))
    for record, row in zip(records, ours, strict=True):
        assert "" not in row  # DuckDB would load "" as an empty string, upstream's CSV as NULL
        assert csv_line(row) == csv_line(upstream.record_to_flattened(record))


def csv_line(fields: list) -> str:
    written = io.StringIO()
    csv.writer(written).writerow(fields)
    return written.getvalue()


NUMBER_TEXT = st.from_regex(
    r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][-+]?[0-9]{1,3})?", fullmatch=True
)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES, st.booleans(), NUMBER_TEXT)
def test_messages_decode_as_json_loads_decodes_them(value: Any, ascii_only: bool, number: str):
    line = f'{{"number": {number}, "record": {json.dumps(value, ensure_ascii=ascii_only)}}}'
    assert repr(loads(line)) == repr(json.loads(line))


@pytest.mark.parametrize(
    "line",
    ['{"a": NaN, "b": -Infinity}', '{"a": 1e400}', '{"a": "\\ud800"}', '{"a": 1, "a": 2}', "[1]"],
)
def test_odd_messages_decode_as_json_loads_decodes_them(line: str) -> None:
    assert repr(loads(line)) == repr(json.loads(line))


@pytest.mark.parametrize("line", ["", "{", '{"a": 01}', '{"a": "\x01"}', '{"a": 1} x'])
def test_what_json_loads_refuses_fails_as_upstream_fails(line: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        loads(line)


# A full disk, a read-only warehouse: one line, and every STATE sent stands for rows in DuckDB.


def counted_lines(groups: int, size: int) -> list[str]:
    """Groups of records, each followed by a STATE counting the records so far."""
    lines = singer_lines(0)[:1]
    for group in range(groups):
        for index in range(group * size, (group + 1) * size):
            record = {"id": f"ch_{index:06d}", "created": "2025-03-01T10:00:00Z", "amount": index}
            lines.append(json.dumps({"type": "RECORD", "stream": "charges", "record": record}))
        lines.append(json.dumps({"type": "STATE", "value": {"count": (group + 1) * size}}))
    return lines


def assert_failed_in_one_line(result: subprocess.CompletedProcess, db: Path, *words: str) -> None:
    """Exit 1, one line naming the problem, and each STATE sent covers rows in the loader's own
    file (the durable store; the published copy may lag)."""
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("target-duckdb: error: "), result.stderr[-3000:]
    assert all(word in last for word in words), last
    states = [json.loads(line)["count"] for line in result.stdout.splitlines() if line.strip()]
    with duckdb.connect(str(working_path(db)), read_only=True) as conn:
        rows = conn.execute("SELECT count(*) FROM src.charges").fetchone()[0]
    assert rows >= max(states, default=0), "a STATE was sent for rows that are not in DuckDB"


def test_a_full_disk_fails_in_one_line_and_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "warehouse" / "full.duckdb"
    config = {"path": str(db), "default_target_schema": "src", "batch_size_rows": 2_000}
    first = run(OURS, config, counted_lines(1, 2_000), tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    config_file = tmp_path / "target.json"
    result = subprocess.run(
        [*OURS, "--config", str(config_file)],
        input="\n".join(counted_lines(40, 2_000)) + "\n",
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=file_size_limit(working_path(db).stat().st_size + 300_000),
    )
    assert_failed_in_one_line(result, db, "File too large")


def test_a_read_only_warehouse_fails_in_one_line_and_loses_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "warehouse"
    db = folder / "ro.duckdb"
    config = {"path": str(db), "default_target_schema": "src", "batch_size_rows": 100}
    first = run(OURS, config, counted_lines(1, 100), tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    with read_only_folder(folder):
        result = run(OURS, config, counted_lines(3, 100), tmp_path)
    assert_failed_in_one_line(result, db, str(db))


# Fields Stripe adds without a version bump: kept in `_sdc_extra`, reported once.


def test_fields_beyond_the_schema_reach_the_warehouse_and_are_reported_once(tmp_path: Path):
    schema = {"type": "object", "properties": {"id": {"type": "string"}, "n": {"type": "integer"}}}
    new = {"risk": {"score": 7, "tags": ["a"]}, "flag": True}
    runs = [
        singer_messages("things", schema, [{"id": "a", "n": 1} | new, {"id": "b", "n": 2}]),
        singer_messages("things", schema, [{"id": "c", "n": 3, "flag": False}]),
        singer_messages("things", schema, [{"id": "a", "n": 4, "flag": None, "late": "x"}]),
    ]
    db = tmp_path / "extra.duckdb"
    config = {"path": str(db), "default_target_schema": "src", "batch_size_rows": 1}
    reports = []
    for messages in runs:
        result = run(OURS, config, [json.dumps(message) for message in messages], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        reports.append([line for line in result.stderr.splitlines() if "not in the schema" in line])
    assert [len(lines) for lines in reports] == [2, 0, 1], reports
    assert "stream 'things': field 'flag'" in reports[0][0]
    assert "stream 'things': field 'risk'" in reports[0][1]
    assert "stream 'things': field 'late'" in reports[2][0]
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = conn.execute(f"SELECT id, n, {EXTRA} FROM src.things ORDER BY id").fetchall()
    assert [(id_, n, json.loads(extra) if extra else None) for id_, n, extra in rows] == [
        ("a", 4, {"flag": None, "late": "x"}),
        ("b", 2, None),
        ("c", 3, {"flag": False}),
    ]


def test_values_that_do_not_fit_their_column_are_kept_in_sdc_extra(tmp_path: Path):
    """A string amount, metadata that is not an object, a date-time that is not one: each kept
    as Stripe sent it, one line per field naming the first object; every row loads."""
    schema = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "amount": {"type": ["null", "integer"]},
            "created": {"type": "string", "format": "date-time"},
            "metadata": {"type": ["null", "object"]},
        },
    }
    good = {"amount": 5, "created": "2025-03-01T10:00:00Z", "metadata": {"k": "v"}}
    records = [
        {"id": "ch_1"} | good,
        {"id": "ch_2"} | good | {"amount": "12 EUR"},
        {"id": "ch_3"} | good | {"metadata": "none", "amount": "x"},
        {"id": "ch_4"} | good | {"created": 1740823200.5, "risk": 3},
    ]
    db = tmp_path / "misfits.duckdb"
    config = {"path": str(db), "default_target_schema": "src"}
    lines = [json.dumps(message) for message in singer_messages("things", schema, records)]
    result = run(OURS, config, lines, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == json.loads(lines[-1])["value"]
    warned = [line for line in result.stderr.splitlines() if "which is not a" in line]
    assert len(warned) == 3, result.stderr[-3000:]
    assert "stream 'things': object ch_2: field 'amount' is \"12 EUR\"" in warned[0]
    assert "object ch_3: field 'metadata' is \"none\", which is not a JSON" in "\n".join(warned)
    assert "object ch_4: field 'created' is 1740823200.5" in "\n".join(warned)
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = conn.execute(
            f"SELECT id, amount, created IS NULL, metadata, {EXTRA} FROM src.things ORDER BY id"
        ).fetchall()
    assert [(r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] else None) for r in rows] == [
        ("ch_1", 5, False, '{"k": "v"}', None),
        ("ch_2", None, False, '{"k": "v"}', {"amount": "12 EUR"}),
        ("ch_3", None, False, None, {"amount": "x", "metadata": "none"}),
        ("ch_4", 5, True, '{"k": "v"}', {"created": 1740823200.5, "risk": 3}),
    ]
