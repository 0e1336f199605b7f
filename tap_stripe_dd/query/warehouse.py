"""The warehouse side: a DuckDB connection that can read the one file and nothing else."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from tap_stripe_dd.errors import UserError

DEFAULT_DB = Path("output/stripe.duckdb")
DB_ENV = "STRIPE_DD_DB"
SOURCE_NAME = re.compile(r"[a-z0-9_]+")
SOURCE_RULE = "data-source names are lowercase letters, digits and underscores ([a-z0-9_]+)"
SYNC_HINT = "run the sync first (`make demo`, or `meltano run tap-stripe-dd target-duckdb`)"
READ_ONLY = (
    "only queries run here (SELECT, WITH … SELECT, UNION, VALUES, DESCRIBE, SHOW, SUMMARIZE)"
)
FETCH_BATCH = 1000

# Set at connect time, so no statement ever runs with them off: no file, URL or extension
# other than the warehouse itself, and the lock keeps a query from switching them back.
LOCKDOWN = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}

Batches = Iterator[list[tuple]]


@dataclass(frozen=True)
class Warehouse:
    """A locked-down connection plus the catalog that table references are checked against."""

    path: Path
    con: duckdb.DuckDBPyConnection
    database: str
    sources: dict[str, tuple[str, ...]]

    def endpoints(self, source: str) -> tuple[str, ...]:
        if not SOURCE_NAME.fullmatch(source):
            raise UserError(f"invalid data-source name {source!r}: {SOURCE_RULE}")
        if source not in self.sources:
            known = ", ".join(self.sources) or f"none yet: {SYNC_HINT}"
            raise UserError(f"unknown data source {source!r}; data sources in {self.path}: {known}")
        return self.sources[source]

    def refusal(self, sql: str) -> str | None:
        """Why `sql` must not run, judged by DuckDB's own parser since that decides what would
        run (sqlglot, for one, turns `SELECT … INTO t` into `CREATE TABLE t AS SELECT …`)."""
        try:
            kinds = [s.type.name for s in self.con.extract_statements(sql)]
        except duckdb.Error:
            return None  # not DuckDB SQL at all: the caller's message says more
        if len(kinds) > 1:
            return f"one statement at a time, got {len(kinds)}"
        return None if kinds == ["SELECT"] else f"refused: {kinds[0]} is not a query; {READ_ONLY}"

    def execute(self, sql: str) -> tuple[list[str], list[str], Batches]:
        """Column names, DuckDB type names and the rows in batches, so output can stream."""
        if refusal := self.refusal(sql):
            raise UserError(refusal)
        try:
            cursor = self.con.execute(sql)
        except duckdb.Error as exc:
            raise UserError(one_line(exc)) from None
        names = [d[0] for d in cursor.description]
        types = [str(d[1]) for d in cursor.description]
        return names, types, _batches(cursor)


def _batches(cursor: duckdb.DuckDBPyConnection) -> Batches:
    """Some errors (casts, overflows) only surface while fetching; they are the user's too."""
    try:
        yield from iter(lambda: cursor.fetchmany(FETCH_BATCH), [])
    except duckdb.Error as exc:
        raise UserError(one_line(exc)) from None


def one_line(exc: Exception) -> str:
    """DuckDB adds context after a blank line, with a caret under SQL the user never wrote."""
    head = str(exc).split("\n\n", 1)[0]
    return " ".join(line.strip() for line in head.splitlines() if line.strip())


def resolve_db(db: str | None) -> Path:
    return Path(db or os.environ.get(DB_ENV) or DEFAULT_DB)


@contextmanager
def open_warehouse(path: Path) -> Iterator[Warehouse]:
    """Read-only and without external access, so no statement can write or read another file."""
    if path.is_dir():
        raise UserError(f"{path} is a directory: --db takes the DuckDB file, e.g. {DEFAULT_DB}")
    if not path.is_file():
        raise UserError(f"no warehouse at {path}: {SYNC_HINT}, or point --db / ${DB_ENV} at it")
    try:
        con = duckdb.connect(str(path), read_only=True, config=LOCKDOWN)
    except duckdb.Error as exc:
        hint = " (is a sync writing to it right now?)" if "lock" in str(exc) else ""
        raise UserError(f"cannot open warehouse {path}: {one_line(exc)}{hint}") from None
    try:
        yield Warehouse(path, con, *_catalog(con))
    finally:
        con.close()


def _catalog(con: duckdb.DuckDBPyConnection) -> tuple[str, dict[str, tuple[str, ...]]]:
    """Data sources are the loader's schemas; built-in ones (main) count if they hold tables."""
    rows = con.execute(
        """
        SELECT s.schema_name, list(t.table_name ORDER BY t.table_name)
                                  FILTER (WHERE t.table_name IS NOT NULL)
        FROM duckdb_schemas() s
        LEFT JOIN duckdb_tables() t USING (database_name, schema_name)
        WHERE s.database_name = current_database()
          AND (NOT s.internal OR t.table_name IS NOT NULL)
        GROUP BY s.schema_name ORDER BY s.schema_name
        """
    ).fetchall()
    (database,) = con.execute("SELECT current_database()").fetchone() or ("",)
    return database, {schema: tuple(tables or ()) for schema, tables in rows}
