"""The SQL side: read DataDistillr (Drill) or DuckDB SQL with sqlglot, emit checked DuckDB SQL."""

from __future__ import annotations

import logging
import re
import sys

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError

from tap_stripe_dd.errors import UserError
from tap_stripe_dd.query.warehouse import READ_ONLY, Warehouse

# Statement shapes that only read. Anything nested that writes is refused on top of that,
# because `WITH x AS (DELETE … RETURNING *) SELECT …` still looks like a SELECT from outside.
QUERY_ROOTS = (exp.Query, exp.Values, exp.Describe, exp.Show, exp.Summarize, exp.Pivot)
WRITES = (
    exp.DML,
    exp.DDL,
    exp.Drop,
    exp.Alter,
    exp.Command,
    exp.Set,
    exp.Attach,
    exp.Detach,
    exp.Install,
    exp.Pragma,
    exp.Use,
    exp.Transaction,
    exp.Commit,
    exp.Export,
    exp.LoadData,
)

# sqlglot logs a warning when it degrades a statement to a generic Command; such statements
# are refused anyway, and the log line would break the one-line error contract.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

# sqlglot keeps `EXPLAIN [ANALYZE] statement` as text; the statement is checked on its own.
EXPLAINED = re.compile(r"(ANALYZE\s+)?(.*)", re.IGNORECASE | re.DOTALL)
# Schemas DuckDB has in every database, read-only views of its catalog.
CATALOG_SCHEMAS = {"information_schema", "pg_catalog"}
# sqlglot's parser recurses about 22 frames per level of parentheses, so Python's default limit
# (1,000) stops it at 45 levels; this one at about 450 (DuckDB's own limit is 1,000 levels).
# Python 3.11+ keeps these frames off the C stack.
PARSER_RECURSION = 10_000


def to_duckdb(sql: str, wh: Warehouse, source: str | None = None) -> str:
    """One statement as DuckDB SQL over the warehouse; `source` replaces every data-source name."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, PARSER_RECURSION))
    try:
        return _to_duckdb(sql, wh, source)
    except RecursionError:
        raise UserError("the query is nested too deeply (about 450 levels at most)") from None
    finally:
        sys.setrecursionlimit(limit)


def _to_duckdb(sql: str, wh: Warehouse, source: str | None) -> str:
    tree = _parse(sql, wh)
    if isinstance(tree, exp.Command) and str(tree.this).upper() == "EXPLAIN":
        analyze, statement = EXPLAINED.fullmatch(tree.expression.name).groups()  # type: ignore[union-attr]
        return ("EXPLAIN ANALYZE " if analyze else "EXPLAIN ") + _to_duckdb(statement, wh, source)
    _refuse_writes(tree, sql, wh)
    for table in list(tree.find_all(exp.Table)):
        _rewrite_table(table, wh, source)
    for column in list(tree.find_all(exp.Column)):
        if column.args.get("db"):  # `mystripeapi`.`/charges`.id
            drill = column.table.startswith("/")  # names the live list, `charges` below
            db = exp.to_identifier(source or column.text("db").lower())
            column.set("db", None if drill else db)
            column.set("table", exp.to_identifier(column.table.removeprefix("/").lower()))
    return tree.sql(dialect=wh.dialect)


def _parse(sql: str, wh: Warehouse) -> exp.Expr:
    """DuckDB first, so plain DuckDB SQL keeps its meaning; backtick-quoted Drill SQL only parses
    as Drill. When neither parses, a statement DuckDB knows but sqlglot does not (EXPORT) is
    refused as such; otherwise the parser that got further explains the mistake best."""
    failures: list[SqlglotError] = []
    for dialect in ("duckdb", "drill"):
        try:
            statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
        except SqlglotError as exc:
            failures.append(exc)
            continue
        if not statements:
            raise UserError("no SQL statement given")
        if len(statements) > 1:
            raise UserError(f"one statement at a time, got {len(statements)}")
        return statements[0]
    raise UserError(wh.refusal(sql) or _syntax_error(max(failures, key=_reach)))


def _reach(error: SqlglotError) -> tuple[int, int]:
    first = error.errors[0] if isinstance(error, ParseError) and error.errors else {}
    return first.get("line") or 0, first.get("col") or 0


def _syntax_error(error: SqlglotError) -> str:
    """Position and token only: sqlglot's descriptions name its internal classes."""
    if not isinstance(error, ParseError) or not error.errors:
        return f"SQL syntax error: {(str(error).strip().splitlines() or ['unreadable'])[0]}"
    first = error.errors[0]
    near = (first.get("highlight") or "").strip()
    where = f"line {first.get('line')}, column {first.get('col')}"
    return f"SQL syntax error at {where}" + (f" near {near!r}" if near else " (unexpected end)")


def _refuse_writes(tree: exp.Expr, sql: str, wh: Warehouse) -> None:
    """A bare expression (`charges`, `a b`) parses too: DuckDB says whether it is a statement."""
    if isinstance(tree, WRITES):
        raise UserError(f"refused: {_kind(tree)} is not a query; {READ_ONLY}")
    if not isinstance(tree, QUERY_ROOTS):
        raise UserError(wh.refusal(sql) or "SQL syntax error: expected a query such as SELECT")
    write = next(tree.find_all(*WRITES), None)
    if write is not None:
        raise UserError(f"refused: the query contains {_kind(write)}; {READ_ONLY}")


def _kind(node: exp.Expr) -> str:
    return str(node.this).upper() if isinstance(node, exp.Command) else node.key.upper()


def _rewrite_table(table: exp.Table, wh: Warehouse, source: str | None) -> None:
    """`mystripeapi`.`/charges` → mystripeapi.charges, checked against the warehouse.

    Unqualified names (CTEs, table functions, file names) are left to DuckDB, which resolves
    them or refuses them under the lockdown."""
    if not table.db or table.db.lower() in CATALOG_SCHEMAS:
        return
    if table.catalog and table.catalog.lower() != wh.database.lower():
        raise UserError(f"unknown database {table.catalog!r}: only {wh.database!r} is queried")
    # DuckDB matches names whatever their case, quoted or not.
    name = source or table.db.lower()
    endpoint = table.name.removeprefix("/").lower()
    endpoints = wh.endpoints(name)
    if endpoint not in endpoints:
        known = ", ".join(f"/{e}" for e in endpoints) or "none"
        raise UserError(f"unknown endpoint {'/' + endpoint!r} in {name!r}; its endpoints: {known}")
    drill = table.name.startswith("/")
    table.set("db", exp.to_identifier(name))
    table.set("this", exp.to_identifier(endpoint))
    if drill:
        table.replace(_as_listed(table, wh))


def _as_listed(table: exp.Table, wh: Warehouse) -> exp.Expr:
    """The Drill form (`mystripeapi`.`/charges`) answers as the live list endpoint would (the
    product this project grew from read it): deleted objects left out (rows flagged by the
    change feed, `_sdc_deleted_at`), newest first. Plain names see every row."""
    source, endpoint = table.db, table.name
    columns = wh.columns(source, endpoint)
    inner = table.copy()
    inner.set("alias", None)
    listed = exp.select("*").from_(inner)
    if "_sdc_deleted_at" in columns:
        listed = listed.where("_sdc_deleted_at IS NULL")
    if "created" in columns:
        listed = listed.order_by("created DESC", "id DESC" if "id" in columns else "created")
    alias = table.alias or endpoint
    return listed.subquery(alias)
