"""`target-duckdb-dd`: target-duckdb 0.8.0 with the three bugs that lose data fixed, and a load
three to four times as fast that writes the same values.

1. Its CSV `COPY` lets DuckDB guess whether the first line is a header. From duckdb 1.3 on the
   guess is often "yes" when a column holds time-zoned date-times, and the first row of every
   batch silently disappears. Every `COPY` it runs here says `header false`.
2. When a stream's row count is an exact multiple of `batch_size_rows`, the last flush happens
   before the tap's final STATE arrives, and that STATE is never forwarded: the bookmark is lost
   and the next run re-reads everything. Here, once all input is loaded, the latest STATE is
   forwarded if it was not already.
3. With several streams interleaved (this tap syncs them side by side), it emits a STATE after
   flushing one stream's batch, carrying other streams' bookmarks whose rows are still in
   memory: a kill then loses them. Here every flush flushes all streams (`flush_all_streams`),
   so an emitted STATE never confirms a row that is not in the warehouse.

It also creates the warehouse file's folder, which upstream expects to exist, and reads Singer
BATCH messages (JSON-lines files, plain or gzip, on this machine), which upstream refuses: each
file's records go through upstream's code exactly as RECORD messages would, with the file's
modification time as their extraction time, and the file is deleted once read.

Upstream spends its time in Python, record by record: `json.loads`, `flatten_record` (a
`json.dumps` per nested value, a type check per key), `csv.writer`: about 6,000 realistic Stripe
records a second. Here the same text reaches each DuckDB column at about 20,000 a second:

- msgspec decodes the messages. What it refuses (NaN, numbers beyond a double, lone surrogates,
  bad syntax) goes to `json.loads`, so a message decodes to what upstream sees, or fails as it
  fails. The cyclic garbage collector is off meanwhile: a batch is a tree of dicts per record,
  none of them cyclic, which it would otherwise walk again and again (half the decoding time).
- A top-level scalar primary key is read without flattening the record.
- With `data_flattening_max_level` 0 (this project's setting), a batch becomes JSON lines that
  hold upstream's CSV fields as strings: nested values as `json.dumps` text (byte for byte, as
  DuckDB stores JSON text as given), `str()` of numbers and booleans, null for null, for a
  missing key and for "" (as `record_to_flattened` has it). msgspec encodes them, `read_json`
  reads them, and the `INSERT` into the temporary table casts each string to its column's type,
  the same conversion as the CSV reader's (checked type by type). The temporary table is TEMP,
  so its rows skip the warehouse's write-ahead log; upstream's `UPDATE` and `INSERT` on the
  primary key follow unchanged. That SQL runs in a background thread while Python prepares the
  next stream's batch; any other use of the connection, and every STATE, waits for it and
  raises its error. Deeper flattening takes upstream's CSV path.

Table creation, column sync, batching and state handling are upstream's code; Meltano runs this
as the `target-duckdb` loader.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn, cast

import duckdb
import msgspec
import target_duckdb
from target_duckdb.db_sync import (
    DbSync,
    _should_json_dump_value,
    primary_column_names,
    safe_column_name,
)

from tap_stripe_dd.batches import RunClaims, batch_records
from tap_stripe_dd.errors import UserError
from tap_stripe_dd.query.warehouse import SOURCE_NAME, SOURCE_RULE
from tap_stripe_dd.resyncs import COLUMNS, OncePerRun, Resync
from tap_stripe_dd.signals import Stopped, exit_stopped, stop_on_signals

UPSTREAM_COPY = "WITH (new_line '\\r\\n')"
FIXED_COPY = "WITH (new_line '\\r\\n', header false)"
UPSTREAM_PERSIST_LINES = target_duckdb.persist_lines
UPSTREAM_EMIT_STATE = target_duckdb.emit_state
UPSTREAM_CONNECT = target_duckdb.duckdb_connect
DELETED_AT = "_sdc_deleted_at"  # set on the rows of deleted objects (the tap's changes.py)

MESSAGE_DECODER = msgspec.json.Decoder()
ROW_ENCODER = msgspec.json.Encoder()
# The C encoder `json.dumps()` sets up anew on every call, set up once (a third of its cost).
NESTED_ENCODER = json.encoder.c_make_encoder(
    None, None, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
)
# A batch's JSON lines, one list of strings (or nulls) per row.
READ_ROWS = (
    "read_json(?, format = 'newline_delimited', records = 'false', columns = {'json': 'VARCHAR[]'})"
)


def dumps(value: Any) -> str:
    """`json.dumps(value)`, the text upstream writes for a nested value."""
    return "".join(NESTED_ENCODER(value, 0))


def loads(line: str | bytes) -> Any:
    """`json.loads(line)`: msgspec returns the same objects or refuses, and then json decides."""
    try:
        return MESSAGE_DECODER.decode(line)
    except msgspec.MsgspecError:
        return json.loads(line)


class FastJson:
    """The `json` module as upstream's `persist_lines` sees it, with another `loads`."""

    def __init__(self, loads: Callable[[str], Any]) -> None:
        self.loads = loads

    def __getattr__(self, name: str) -> Any:
        return getattr(json, name)


class LoaderConnection:
    """The DuckDB connection upstream's code uses. Its CSV `COPY … FROM` never treats a data row
    as a header, and a batch's SQL can run in the background (DuckDB releases the GIL) while
    Python prepares the next batch: any other use of the connection waits for it."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._worker = ThreadPoolExecutor(max_workers=1)
        self._pending: Future | None = None

    def in_background(
        self,
        statements: list[tuple[str, list]],
        then_delete: str,
        repair: Callable[[Any], list[tuple[str, list]] | None] | None = None,
    ) -> None:
        """Runs the statements in order once earlier ones are done, then deletes a file. Should
        a value not convert to its column's type, `repair` (given the connection) may return
        the statements to run instead."""
        self.wait()

        def run() -> None:
            try:
                self._execute_all(statements)
            except duckdb.ConversionException:
                retry = repair(self._connection) if repair else None
                if retry is None:
                    raise
                self._execute_all(retry)
            os.unlink(then_delete)

        self._pending = self._worker.submit(run)

    def _execute_all(self, statements: list[tuple[str, list]]) -> None:
        for query, parameters in statements:
            self._connection.execute(query, parameters)

    def wait(self) -> None:
        """Returns once the background statements ran, or raises their error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def execute(self, query: str, *args: Any) -> Any:
        self.wait()
        if query.startswith("COPY ") and UPSTREAM_COPY in query:
            query = query.replace(UPSTREAM_COPY, FIXED_COPY)
        return self._connection.execute(query, *args)

    def __getattr__(self, name: str) -> Any:
        self.wait()
        return getattr(self._connection, name)


EXTRA = "_sdc_extra"
"""The column of the fields an object has and its schema does not name, as one JSON object."""
EXTRA_SCHEMA = {"type": ["null", "object"]}
# (stream, field) already reported by this process.
REPORTED: set[tuple[str, str]] = set()


def with_extra_column(message: dict) -> dict:
    """A SCHEMA message whose stream gets the `_sdc_extra` column too."""
    schema = message.get("schema") or {}
    properties = schema.get("properties") or {}
    if EXTRA in properties:
        return message
    return message | {"schema": schema | {"properties": properties | {EXTRA: EXTRA_SCHEMA}}}


class FastDbSync(DbSync):
    """Upstream's DbSync with a faster key and batch load, for the same rows; and the fields a
    record has beyond its schema (Stripe adds fields without a version bump) kept in
    `_sdc_extra`, where upstream drops them."""

    def __init__(
        self, connection: Any, connection_config: dict, stream_schema_message: dict | None = None
    ) -> None:
        if stream_schema_message is not None:
            stream_schema_message = with_extra_column(stream_schema_message)
        super().__init__(connection, connection_config, stream_schema_message)
        if stream_schema_message is not None:
            self.known_fields = frozenset(stream_schema_message["schema"]["properties"])

    def keep_extra_fields(self, records: Iterable[dict]) -> list[dict]:
        """Records with the fields their schema does not name in `_sdc_extra`, as JSON text
        (one string: the same for the JSON-lines and the CSV path, never flattened)."""
        known = self.known_fields
        records = list(records)
        seen: set[str] = set()
        for record in records:
            if not known.issuperset(record):
                extra = {name: value for name, value in record.items() if name not in known}
                record[EXTRA] = dumps(extra)
                seen.update(extra)
        if seen:
            self.report_extra_fields(seen)
        return records

    def report_extra_fields(self, fields: set[str]) -> None:
        """One line per field, from the first run that sees it: a field already stored in
        `_sdc_extra` by an earlier run is not reported again."""
        stream = self.stream_schema_message["stream"]
        table = self.table_name(stream, False)
        for field in sorted(fields):
            if (stream, field) in REPORTED:
                continue
            REPORTED.add((stream, field))
            query = f"SELECT count(*) FROM {table} WHERE list_contains(json_keys({EXTRA}), ?)"
            if not self.conn.execute(query, [field]).fetchone()[0]:
                self.logger.warning(
                    "stream %r: field %r is not in the schema (new at Stripe?): its values "
                    "are kept in column %s",
                    stream,
                    field,
                    EXTRA,
                )

    #: While a batch's deletions load: the columns they carry (see `load_rows`).
    carried: frozenset[str] | None = None

    def record_primary_key_string(self, record: dict) -> str | None:
        """Upstream flattens every record just to read its key; a top-level scalar key is the
        same string either way."""
        keys = self.stream_schema_message["key_properties"]
        if keys and all(isinstance(record.get(key), str | int) for key in keys):
            return ",".join(str(record[key]) for key in keys)
        return super().record_primary_key_string(record)

    def csv_fields(self, records: list[dict]) -> list[list[str | None]]:
        """Each record as the fields of upstream's CSV row (`record_to_flattened`, then
        `csv.writer`), without flattening: only valid with `data_flattening_max_level` 0."""
        names = list(self.flatten_schema)
        rows = [
            [
                None
                if value is None
                else (value or None)
                if type(value) is str
                else dumps(value)
                if type(value) is dict or type(value) is list
                else str(value)
                for value in map(record.get, names)
            ]
            for record in records
        ]
        for index, name in enumerate(names):
            # A column typed exactly ["null", "object", "array"] gets json.dumps of any value.
            if _should_json_dump_value(name, None, self.flatten_schema):
                for row, record in zip(rows, records, strict=True):
                    row[index] = dumps(record[name]) if name in record else None
        return rows

    def load_rows(self, records: Iterable[dict], count: int, temp_dir: str) -> None:
        """A deletion (a row with `_sdc_deleted_at` set, where that is a column: the tap's change
        feed) carries only the columns a deletion sets, and upstream's UPDATE sets every column,
        nulling the others: deletions load on their own, updating only the columns they carry."""
        rows = list(records)
        deletable = DELETED_AT in self.flatten_schema
        deletions = [row for row in rows if deletable and row.get(DELETED_AT) is not None]
        if not deletions:
            self._load_rows(rows, count, temp_dir)
            return
        if kept := [row for row in rows if row.get(DELETED_AT) is None]:
            self._load_rows(kept, len(kept), temp_dir)
        shapes: dict[frozenset[str], list[dict]] = {}
        for row in deletions:
            shapes.setdefault(frozenset(row), []).append(row)
        for carried, group in shapes.items():
            self.conn.wait()  # the previous load's temporary file has the same name
            self.carried = frozenset(safe_column_name(name) for name in carried)
            try:
                self._load_rows(group, len(group), temp_dir)
            finally:
                self.carried = None

    def update_from_temp_table(self, temp_table: str) -> str | None:
        query = super().update_from_temp_table(temp_table)
        if self.carried is None or query is None:
            return query
        keys = set(primary_column_names(self.stream_schema_message))
        columns = [c for c in self.column_names() if c in self.carried and c not in keys]
        table = self.table_name(self.stream_schema_message["stream"])
        assignments = ", ".join(f"{column}=t.{column}" for column in columns)
        condition = self.primary_key_condition("t")
        return f"UPDATE {table} as s SET {assignments} FROM {temp_table} t WHERE {condition}"

    def _load_rows(self, records: list[dict], count: int, temp_dir: str) -> None:
        """Upstream's `load_rows`: its CSV fields as JSON lines, its SQL in the background."""
        records = self.keep_extra_fields(records)
        if self.data_flattening_max_level:
            super().load_rows(records, count, temp_dir)
            return
        stream = self.stream_schema_message["stream"]
        self.logger.info("Loading %d rows into '%s'", count, self.table_name(stream, False))
        temp_table = self.table_name(stream, is_temporary=True)
        temp_file = os.path.join(temp_dir, f"{temp_table}.json")
        rows = self.csv_fields(records)
        with open(temp_file, "wb") as file:
            file.write(ROW_ENCODER.encode_lines(rows))
        # Upstream's temporary table, but TEMP: its rows need not go through the warehouse's WAL.
        create = self.create_table_query(table_name=temp_table, is_temporary=True)
        fields = ", ".join(f"json[{index}]" for index in range(1, len(self.flatten_schema) + 1))
        statements = [
            ("CREATE TEMP TABLE" + create.removeprefix("CREATE TABLE"), []),
            (f"INSERT INTO {temp_table} SELECT {fields} FROM {READ_ROWS}", [temp_file]),
        ]
        if self.stream_schema_message["key_properties"]:
            statements.append((self.update_from_temp_table(temp_table), []))
        statements.append((self.insert_from_temp_table(temp_table), []))
        statements.append((f"DROP TABLE {temp_table}", []))

        def repair(connection: Any) -> list[tuple[str, list]] | None:
            if not self.keep_misfits(connection, records, rows):
                return None
            with open(temp_file, "wb") as file:
                file.write(ROW_ENCODER.encode_lines(rows))
            return [(f"DROP TABLE IF EXISTS {temp_table}", []), *statements]

        self.conn.in_background(statements, then_delete=temp_file, repair=repair)

    def keep_misfits(self, connection: Any, records: list[dict], rows: list[list]) -> bool:
        """Values that do not convert to their column's type (a string amount, metadata that
        is not an object): each goes to its row's `_sdc_extra` as Stripe sent it, its column
        gets NULL, and one line per stream and field names the first object. Runs only once a
        batch failed to convert (DuckDB's own TRY_CAST says which values). Returns whether
        any value moved."""
        names = list(self.flatten_schema)
        extra_at = names.index(EXTRA)
        moved = False
        for index, (name, kind) in enumerate(zip(names, self.column_types(), strict=True)):
            if kind == "varchar" or name == EXTRA:
                continue
            texts = list({row[index] for row in rows if row[index] is not None})
            bad = {
                text
                for (text,) in connection.execute(
                    f"SELECT v FROM unnest(?::VARCHAR[]) t(v) WHERE TRY_CAST(v AS {kind}) IS NULL",
                    [texts],
                ).fetchall()
            }
            for record, row in zip(records, rows, strict=True):
                if row[index] in bad:
                    extra = json.loads(row[extra_at]) if row[extra_at] else {}
                    row[extra_at] = dumps(extra | {name: record.get(name)})
                    row[index] = None
                    self.report_misfit(record, name, kind)
                    moved = True
        return moved

    def report_misfit(self, record: dict, name: str, kind: str) -> None:
        stream = self.stream_schema_message["stream"]
        if (stream, name) not in REPORTED:
            REPORTED.add((stream, name))
            self.logger.warning(
                "stream %r: object %s: field %r is %s, which is not a %s: kept in column %s "
                "(as is any later value of it that does not fit)",
                stream,
                record.get("id"),
                name,
                dumps(record.get(name))[:80],
                kind.upper(),
                EXTRA,
            )


class StateTracker:
    """Remembers the last STATE the tap sent and the last one this target emitted."""

    def __init__(
        self, wait_for_rows: Callable[[], None], before_emit: Callable[[Any], None] = lambda _: None
    ) -> None:
        self.wait_for_rows = wait_for_rows
        self.before_emit = before_emit
        self.received: Any = None
        self.emitted: Any = None

    def loads(self, line: str | dict) -> Any:
        """Decodes a message for upstream, noting the value of a STATE."""
        message = line if type(line) is dict else loads(cast("str", line))
        if type(message) is dict and message.get("type") == "STATE":
            self.received = message.get("value")
        return message

    def emit(self, state: Any) -> None:
        self.wait_for_rows()  # a STATE confirms rows only once they are in the warehouse
        if state is not None:
            self.before_emit(state)
        UPSTREAM_EMIT_STATE(state)
        if state is not None:
            self.emitted = state
        # The collector is off while lines are read (see persist_lines); after a flush the
        # batch's records are gone, so whatever cyclic garbage a long run makes is freed here,
        # cheaply.
        gc.collect()

    def forward_final(self) -> None:
        """Called after upstream flushed everything: once the last rows are in, the tap's last
        STATE is safe to emit."""
        self.wait_for_rows()
        if self.received is not None and self.received != self.emitted:
            self.emit(self.received)


class UnlistedRows:
    """Marks (or with `hard_delete` removes) the rows a completed resync did not list
    (resyncs.py), before the STATE that notes it is confirmed."""

    def __init__(self, connection: LoaderConnection, config: dict) -> None:
        self.connection = connection
        self.schema = config.get("default_target_schema")
        self.hard_delete = bool(config.get("hard_delete"))

    def mark(self, resync: Resync) -> None:
        if not self.schema:
            return
        table = resync.stream.replace(".", "_").replace("-", "_").lower()  # as upstream's
        found = self.connection.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ?",
            [self.schema.lower(), table],
        ).fetchall()
        if {column for (column,) in found} >= COLUMNS:
            sql, params = resync.statement(
                f'"{self.schema.lower()}"."{table}"', self.hard_delete, lambda name: f"${name}"
            )
            (marked,) = self.connection.execute(sql, params).fetchone()
            if marked:
                print(resync.said("target-duckdb", marked, self.hard_delete), file=sys.stderr)


def fail(message: str, exit_code: int = 1) -> NoReturn:
    print(f"target-duckdb: error: {message}", file=sys.stderr)
    sys.exit(exit_code)


def expand_batches(lines: Iterable[str], claims: RunClaims) -> Iterator[str | dict]:
    """Lines as they come, but a BATCH message as its records (already decoded, which the
    decoder passes through). Only a line that mentions "BATCH" is decoded here to find out."""
    for line in lines:
        if '"BATCH"' in line:
            message = loads(line)
            if type(message) is dict and message.get("type") == "BATCH":
                yield from batch_records(message, claims, loads)
                continue
        yield line


def persist_lines(connection: Any, config: dict, lines: Iterable[str]) -> None:
    """Upstream's `persist_lines` with the fixes around it, msgspec under its `json.loads`, and
    BATCH messages read as their records."""
    loader_connection = LoaderConnection(connection)
    publisher = Publisher(connection, published_path(config))
    unlisted = OncePerRun(UnlistedRows(loader_connection, config).mark)

    def before_emit(state: Any) -> None:
        unlisted(state)
        publisher.when_due()

    tracker = StateTracker(loader_connection.wait, before_emit)
    target_duckdb.emit_state = tracker.emit
    target_duckdb.json = FastJson(tracker.loads)
    claims = RunClaims()
    collecting = gc.isenabled()
    gc.disable()
    try:
        UPSTREAM_PERSIST_LINES(
            loader_connection, config | {"flush_all_streams": True}, expand_batches(lines, claims)
        )
        tracker.forward_final()
    except BaseException:  # an error, a stop signal: no batch file is left behind
        claims.release(discard=True)
        raise
    finally:
        target_duckdb.emit_state = UPSTREAM_EMIT_STATE
        target_duckdb.json = json
        if collecting:
            gc.enable()
    publisher.publish()
    claims.release(discard=False)


def duckdb_connect(config: dict) -> Any:
    """Refuses a data-source name the query tool could not use, before anything is written."""
    source = config.get("default_target_schema")
    if source is not None and not SOURCE_NAME.fullmatch(str(source)):
        fail(f"invalid data-source name {source!r} (default_target_schema): {SOURCE_RULE}", 2)
    published = published_path(config)
    if published is None:
        return UPSTREAM_CONNECT(config)
    published.parent.mkdir(parents=True, exist_ok=True)
    working = working_file(published)
    try:
        return UPSTREAM_CONNECT(config | {"path": str(working)})
    except duckdb.IOException as exc:
        if "lock" not in str(exc):
            raise
        fail(
            f"{working} is open in another process: only the loader opens it (readers: {published})"
        )


# The warehouse's two files (the query tool and an analyst's DuckDB session never block a sync,
# nor does a sync block them): DuckDB lets one process open a file for writing, and then no other
# may open it at all. The loader writes its own file, `<path>.loader`, the durable store the
# bookmarks vouch for, and no reader opens it. It publishes a snapshot to `path` (a CHECKPOINT,
# a copy beside it, an atomic rename): at the end of each run, and during a long run at a STATE
# once PUBLISH_EVERY seconds have passed (more if copies are slow, so that they never take more
# than 1/PUBLISH_SHARE of the time). A reader that has the old file open keeps reading it.
WORKING_SUFFIX = ".loader"
PUBLISHING_SUFFIX = ".publishing"
PUBLISH_EVERY = 60.0
PUBLISH_SHARE = 20


def published_path(config: dict) -> Path | None:
    """The file readers open, or None for a path that is not a local file (md:, motherduck:)."""
    path = str(config.get("path", config.get("filepath", "")))
    return Path(path) if path and ":" not in path.split("/")[0] else None


def working_path(published: Path) -> Path:
    return published.with_name(published.name + WORKING_SUFFIX)


def working_file(published: Path) -> Path:
    """The loader's own file, made from the published one if there is none (a warehouse loaded
    before the loader had its own file, or a working file deleted by hand: the published copy
    holds at least what every saved bookmark vouched for when it was published)."""
    working = working_path(published)
    if not working.exists() and published.is_file():
        partial = working.with_name(working.name + PUBLISHING_SUFFIX)
        shutil.copyfile(published, partial)
        wal = Path(f"{published}.wal")  # rows the published file's last writer did not checkpoint
        if wal.is_file():
            shutil.copyfile(wal, f"{working}.wal")
        partial.replace(working)
        wal.unlink(missing_ok=True)  # readers must not apply it to the next published copy
    return working


class Publisher:
    """Publishes the working file's committed rows to the file readers open."""

    def __init__(self, connection: Any, published: Path | None) -> None:
        self.connection = connection
        self.published = published
        self.due = time.monotonic() + PUBLISH_EVERY

    def when_due(self) -> None:
        """Called with every row committed, before a STATE is emitted."""
        if time.monotonic() >= self.due:
            self.publish()

    def publish(self) -> None:
        """A snapshot of what is committed, unless the published file already has it."""
        if self.published is None:
            return
        began = time.monotonic()
        working = working_path(self.published)
        wal = Path(f"{working}.wal")
        committed = wal.is_file() and wal.stat().st_size > 0  # every commit writes the WAL
        self.connection.execute("CHECKPOINT")  # every committed row in the file, none in a WAL
        if committed or not self.is_current(working):
            partial = self.published.with_name(self.published.name + PUBLISHING_SUFFIX)
            try:
                shutil.copyfile(working, partial)
                partial.replace(self.published)
            except OSError as exc:  # the rows are loaded: only the readers' copy is behind
                partial.unlink(missing_ok=True)
                reason = exc.strerror or exc
                fail(f"cannot publish {self.published} ({reason}); it keeps its previous rows")
        spent = time.monotonic() - began
        self.due = time.monotonic() + max(PUBLISH_EVERY, PUBLISH_SHARE * spent)

    def is_current(self, working: Path) -> bool:
        """With no commit in the WAL: whether the copy, written after a CHECKPOINT, is newer than
        the working file (a CHECKPOINT with nothing to write leaves the file as it is; DuckDB's
        own checkpoints, of a big commit or of a WAL a killed run left, come later)."""
        try:
            copy, source = self.published.stat(), working.stat()  # type: ignore[union-attr]
        except FileNotFoundError:
            return False
        return copy.st_size == source.st_size and copy.st_mtime_ns >= source.st_mtime_ns


def main() -> None:
    stop_on_signals()
    target_duckdb.duckdb_connect = duckdb_connect
    target_duckdb.DbSync = FastDbSync
    target_duckdb.persist_lines = persist_lines
    try:
        target_duckdb.main()
    except Stopped as stopped:
        exit_stopped("target-duckdb", stopped, "every STATE it sent is in the warehouse")
    except UserError as exc:  # a BATCH file that cannot be read
        fail(str(exc))
    except (duckdb.Error, OSError) as exc:  # a full disk, a read-only warehouse or folder
        fail(f"{write_error(exc)}; every STATE sent before is in the warehouse")


def write_error(exc: duckdb.Error | OSError) -> str:
    """DuckDB's message (its first line: it names the file), or the file and the system's."""
    if isinstance(exc, OSError):
        return f"{exc.filename or 'a file'}: {exc.strerror or exc}"
    return str(exc).strip().splitlines()[0]


if __name__ == "__main__":
    sys.exit(main())
