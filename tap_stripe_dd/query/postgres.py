"""The query tool over PostgreSQL (`--db postgresql://…`): the warehouse that shards load with
target-postgres, in the same schema and tables as DuckDB's. The same SQL, Drill form included,
is checked as for DuckDB and written in PostgreSQL's dialect; the session is read-only, so that
PostgreSQL itself would refuse a write that got past the checks."""

from __future__ import annotations

import functools
import re
import typing as t
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import urlsplit, urlunsplit

import duckdb

from tap_stripe_dd.errors import UserError
from tap_stripe_dd.query.warehouse import FETCH_BATCH, Batches, Warehouse

SCHEME = re.compile(r"^postgres(ql)?(\+psycopg)?://")
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


def is_postgres(db: object) -> bool:
    return isinstance(db, str) and bool(SCHEME.match(db))


def masked(uri: str) -> str:
    """The URI without its password, for messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class PostgresWarehouse:
    """What `Warehouse` offers the query tool, over a read-only PostgreSQL session."""

    path: str
    con: t.Any  # psycopg.Connection: the `postgres` extra
    database: str
    sources: dict[str, tuple[str, ...]]
    dialect: t.ClassVar[str] = "postgres"

    endpoints = Warehouse.endpoints

    def columns(self, source: str, table: str) -> set[str]:
        """The column names of a table of a data source (as `Warehouse.columns`)."""
        rows = self.con.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s",
            (source, table),
        ).fetchall()
        self.con.rollback()  # read-only: leave no transaction open
        return {str(name) for (name,) in rows}

    def refusal(self, sql: str) -> str | None:
        """Judged by DuckDB's parser exactly as for a DuckDB warehouse (`Warehouse.refusal`)."""
        return Warehouse.refusal(t.cast("Warehouse", duckdb_parser()), sql)

    def execute(self, sql: str) -> tuple[list[str], list[str], Batches]:
        import psycopg  # the `postgres` extra

        if refusal := self.refusal(sql):
            raise UserError(refusal)
        cursor = self.con.cursor()
        try:
            cursor.execute(sql)
        except psycopg.Error as exc:
            self.con.rollback()
            raise UserError(one_line(exc)) from None
        description = cursor.description or []
        names = [column.name for column in description]
        types = [_type_name(column.type_code) for column in description]
        return names, types, _batches(cursor)


@functools.cache
def duckdb_parser() -> SimpleNamespace:
    """What `Warehouse.refusal` reads: a connection to parse with (in memory, no data)."""
    return SimpleNamespace(con=duckdb.connect())


def _type_name(oid: int) -> str:
    import psycopg

    info = psycopg.adapters.types.get(oid)
    return info.name.upper() if info else str(oid)


def _batches(cursor: t.Any) -> Batches:
    import psycopg

    try:
        yield from iter(lambda: cursor.fetchmany(FETCH_BATCH), [])
    except psycopg.Error as exc:
        raise UserError(one_line(exc)) from None


def one_line(exc: Exception) -> str:
    """PostgreSQL's first line; its LINE/caret lines point into SQL the user never wrote."""
    return (str(exc).strip().splitlines() or ["error"])[0]


@contextmanager
def open_postgres(uri: str) -> Iterator[PostgresWarehouse]:
    try:
        import psycopg
    except ImportError:
        msg = "querying PostgreSQL needs psycopg: pip install 'tap-stripe-dd[postgres]'"
        raise UserError(msg) from None
    plain = SCHEME.sub("postgresql://", uri)
    try:
        con = psycopg.connect(
            plain, options="-c default_transaction_read_only=on", connect_timeout=10
        )
    except psycopg.Error as exc:
        raise UserError(f"cannot open warehouse {masked(uri)}: {one_line(exc)}") from None
    try:
        yield PostgresWarehouse(masked(uri), con, *_catalog(con))
    finally:
        con.close()


def _catalog(con: t.Any) -> tuple[str, dict[str, tuple[str, ...]]]:
    """Data sources are the loader's schemas (those holding tables)."""
    rows = con.execute(
        "SELECT table_schema, array_agg(table_name::text ORDER BY table_name) "
        "FROM information_schema.tables WHERE table_schema <> ALL(%s) "
        "GROUP BY table_schema ORDER BY table_schema",
        (list(SYSTEM_SCHEMAS),),
    ).fetchall()
    (database,) = con.execute("SELECT current_database()").fetchone()
    con.rollback()
    return database, {schema: tuple(tables) for schema, tables in rows}
