"""The warehouse side: which file, and a DuckDB connection that can read it and nothing else,
for a bounded time."""

from __future__ import annotations

import os
import re
import signal
import threading
import typing as t
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import duckdb

from tap_stripe_dd.errors import UserError

# Each Meltano environment has its own warehouse (meltano.yml), so that the emulator's data and
# Stripe's never meet: output/<environment>/stripe.duckdb in the project folder.
WAREHOUSE = Path("output") / "{environment}" / "stripe.duckdb"
DB_ENV = "STRIPE_DD_DB"
ENVIRONMENT_ENV = "MELTANO_ENVIRONMENT"
LOADER_PATH_ENV = "TARGET_DUCKDB_PATH"  # Meltano's override of the loader's path, every environment
DEFAULT_ENVIRONMENT = re.compile(r"^default_environment:\s*['\"]?([\w-]+)", re.MULTILINE)
ENVIRONMENT_NAME = re.compile(r"[A-Za-z0-9_-]+")
EMULATOR_ENVIRONMENT = "dev"
EXAMPLE = str(WAREHOUSE).format(environment=EMULATOR_ENVIRONMENT)
SOURCE_NAME = re.compile(r"[a-z0-9_]+")
SOURCE_RULE = "data-source names are lowercase letters, digits and underscores ([a-z0-9_]+)"
SYNC_HINT = (
    "load it first: `stripe-dd demo` for the emulator's data (environment dev), "
    "`TAP_STRIPE_DD_API_KEY=sk_… stripe-dd sync --environment prod` for Stripe's"
)
READ_ONLY = (
    "only queries run here (SELECT, WITH … SELECT, UNION, VALUES, PIVOT, DESCRIBE, SHOW, "
    "SUMMARIZE, EXPLAIN)"
)
# DuckDB's statement types that only read; EXPLAIN's statement is checked on its own, and only
# PIVOT makes a MULTI statement (it reads the pivoted values first), also inside a SELECT.
READ_KINDS = {"SELECT"}
EXPLAIN = re.compile(r"\s*EXPLAIN\s+(?:ANALYZE\s+)?", re.IGNORECASE)
PIVOT = re.compile(r"\bPIVOT\b", re.IGNORECASE)
FETCH_BATCH = 1000
DEFAULT_TIMEOUT = 300.0
EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C

# Set at connect time, so no statement ever runs with them off: no file, URL or extension
# other than the warehouse itself, and the lock keeps a query from switching them back.
LOCKDOWN = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}

Batches = Iterator[list[tuple]]


class QueryStopped(UserError):
    """Ctrl-C or the timeout stopped the query; its own exit code, so that scripts can tell."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Location:
    """The warehouse file to read, and the Meltano environment it was chosen by (None: given
    with --db or $STRIPE_DD_DB)."""

    path: Path
    environment: str | None = None

    def __str__(self) -> str:
        return (
            f"{self.path} (environment {self.environment})" if self.environment else str(self.path)
        )

    def missing(self) -> str:
        """How to fill this warehouse: a command that works from the project folder."""
        if self.environment is None:
            return SYNC_HINT
        if self.environment == EMULATOR_ENVIRONMENT:
            return (
                "load it first with `stripe-dd demo` (the emulator's data), in the project folder"
            )
        return (
            f"load it first with `TAP_STRIPE_DD_API_KEY=sk_… stripe-dd sync --environment "
            f"{self.environment}`, in the project folder"
        )


def project_root(start: Path) -> Path | None:
    """The folder of meltano.yml, here or above."""
    return next((f for f in (start, *start.parents) if (f / "meltano.yml").is_file()), None)


def resolve_db(db: str | None, environment: str | None = None) -> Location | str:
    """--db, else $STRIPE_DD_DB, else the warehouse of a Meltano environment: --environment, else
    $MELTANO_ENVIRONMENT, else meltano.yml's default_environment, as `meltano run` picks it.
    A PostgreSQL URI is kept as it is (`open_warehouse`)."""
    from tap_stripe_dd.query.postgres import is_postgres  # which imports this module

    if db := db or os.environ.get(DB_ENV):
        return db if is_postgres(db) else Location(Path(db))
    root = project_root(Path.cwd())
    environment = environment or os.environ.get(ENVIRONMENT_ENV) or _default_environment(root)
    return environment_warehouse(root, environment)


def environment_warehouse(root: Path | None, environment: str) -> Location:
    """Where meltano.yml has the environment's loader write, or $TARGET_DUCKDB_PATH, which
    Meltano puts before it in every environment."""
    if not ENVIRONMENT_NAME.fullmatch(environment):
        raise UserError(f"invalid environment name {environment!r}")
    if override := os.environ.get(LOADER_PATH_ENV):
        return Location(Path(override), environment)
    return Location((root or Path()) / str(WAREHOUSE).format(environment=environment), environment)


def _default_environment(root: Path | None) -> str:
    text = (root / "meltano.yml").read_text(encoding="utf-8") if root else ""
    found = DEFAULT_ENVIRONMENT.search(text)
    return found.group(1) if found else EMULATOR_ENVIRONMENT


@dataclass
class Guard:
    """Stops the connection's query at Ctrl-C or once `timeout` seconds have passed (0: never):
    DuckDB's `interrupt()`, from the signal handler or a timer thread. Checked again between
    batches, as an interrupt only stops a statement that is running."""

    con: duckdb.DuckDBPyConnection
    timeout: float
    stopped: QueryStopped | None = None
    _timer: threading.Timer | None = field(default=None, repr=False)

    def __enter__(self) -> Guard:
        if self.timeout:
            self._timer = threading.Timer(self.timeout, self._stop, (self._timed_out(),))
            self._timer.daemon = True
            self._timer.start()
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *_: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _timed_out(self) -> QueryStopped:
        return QueryStopped(
            f"the query ran longer than --timeout {self.timeout:g} s and was stopped "
            "(raise --timeout, or 0 for none)",
            EXIT_TIMEOUT,
        )

    def _on_sigint(self, _signal: int, _frame: FrameType | None) -> None:
        self._stop(QueryStopped("interrupted (Ctrl-C): the query was stopped", EXIT_INTERRUPTED))

    def _stop(self, reason: QueryStopped) -> None:
        self.stopped = self.stopped or reason
        self.con.interrupt()

    def check(self) -> None:
        if self.stopped is not None:
            raise self.stopped


@dataclass(frozen=True)
class Warehouse:
    """A locked-down connection plus the catalog that table references are checked against."""

    path: Path
    con: duckdb.DuckDBPyConnection
    guard: Guard
    database: str
    sources: dict[str, tuple[str, ...]]
    dialect: t.ClassVar[str] = "duckdb"  # what rewrite.py writes (query/postgres.py: postgres)

    def endpoints(self, source: str) -> tuple[str, ...]:
        if not SOURCE_NAME.fullmatch(source):
            raise UserError(f"invalid data-source name {source!r}: {SOURCE_RULE}")
        if source not in self.sources:
            known = ", ".join(self.sources) or f"none yet: {SYNC_HINT}"
            raise UserError(f"unknown data source {source!r}; data sources in {self.path}: {known}")
        return self.sources[source]

    def columns(self, source: str, table: str) -> set[str]:
        """The column names of a table of a data source."""
        rows = self.con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE schema_name = ? AND table_name = ?",
            [source, table],
        ).fetchall()
        return {name for (name,) in rows}

    def refusal(self, sql: str) -> str | None:
        """Why `sql` must not run, judged by DuckDB's own parser since that decides what would
        run (sqlglot, for one, turns `SELECT … INTO t` into `CREATE TABLE t AS SELECT …`)."""
        try:
            kinds = [s.type.name for s in self.con.extract_statements(sql)]
        except duckdb.Error:
            return None  # not DuckDB SQL at all: the caller's message says more
        if len(kinds) > 1:
            return f"one statement at a time, got {len(kinds)}"
        if kinds == ["EXPLAIN"] and (explained := EXPLAIN.match(sql)):
            return self.refusal(sql[explained.end() :])
        if not kinds or kinds[0] in READ_KINDS or (kinds == ["MULTI"] and PIVOT.search(sql)):
            return None
        return f"refused: {kinds[0]} is not a query; {READ_ONLY}"

    def execute(self, sql: str) -> tuple[list[str], list[str], Batches]:
        """Column names, DuckDB type names and the rows in batches, so output can stream."""
        if refusal := self.refusal(sql):
            raise UserError(refusal)
        try:
            cursor = self.con.execute(sql)
        except duckdb.Error as exc:
            self.guard.check()
            raise UserError(one_line(exc)) from None
        names = [d[0] for d in cursor.description]
        types = [str(d[1]) for d in cursor.description]
        return names, types, _batches(cursor, self.guard)


def _batches(cursor: duckdb.DuckDBPyConnection, guard: Guard) -> Batches:
    """Some errors (casts, overflows) only surface while fetching; they are the user's too."""
    try:
        while batch := cursor.fetchmany(FETCH_BATCH):
            guard.check()
            yield batch
    except duckdb.Error as exc:
        guard.check()
        raise UserError(one_line(exc)) from None


def one_line(exc: Exception) -> str:
    """DuckDB adds context after a blank line, with a caret under SQL the user never wrote."""
    head = str(exc).split("\n\n", 1)[0]
    return " ".join(line.strip() for line in head.splitlines() if line.strip())


@contextmanager
def open_warehouse(
    where: Location | Path | str, timeout: float = DEFAULT_TIMEOUT
) -> Iterator[Warehouse]:
    """Read-only and without external access, so no statement can write or read another file.
    The loader never opens this file (it publishes copies to it), so neither blocks the other.
    A PostgreSQL URI (`resolve_db`) opens that database instead (query/postgres.py)."""
    from tap_stripe_dd.query.postgres import is_postgres, open_postgres  # which imports this

    if is_postgres(where):
        with open_postgres(str(where)) as warehouse:
            yield t.cast("Warehouse", warehouse)
        return
    location = where if isinstance(where, Location) else Location(Path(where))
    path = location.path
    if path.is_dir():
        raise UserError(f"{path} is a directory: --db takes the DuckDB file, e.g. {EXAMPLE}")
    if not path.is_file():
        raise UserError(f"no warehouse at {location}: {location.missing()}")
    try:
        con = duckdb.connect(str(path), read_only=True, config=LOCKDOWN)
    except duckdb.Error as exc:
        writing = " (a process writes to it: query the published file, not the loader's .loader)"
        hint = writing if "lock" in str(exc) else ""
        raise UserError(f"cannot open warehouse {path}: {one_line(exc)}{hint}") from None
    try:
        with Guard(con, timeout) as guard:
            yield Warehouse(path, con, guard, *_catalog(con))
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
