"""`stripe-dd query | samples | tables`: read-only SQL over the DuckDB warehouse the sync fills.

Queries copied from DataDistillr (Apache Drill syntax, `mystripeapi`.`/charges`) run unchanged:
sqlglot parses them, the table references are rewritten to the loader's schema.table layout, and
DuckDB runs the result on a read-only connection that cannot touch any other file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import sys
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import TextIO

from sqlglot import exp

from tap_stripe_dd.errors import UserError
from tap_stripe_dd.query.output import WRITERS
from tap_stripe_dd.query.rewrite import to_duckdb
from tap_stripe_dd.query.warehouse import (
    DB_ENV,
    DEFAULT_TIMEOUT,
    ENVIRONMENT_ENV,
    EXIT_TIMEOUT,
    SYNC_HINT,
    WAREHOUSE,
    Location,
    Warehouse,
    open_warehouse,
    resolve_db,
)

DEFAULT_SOURCE = "mystripeapi"
SAMPLES = resources.files("tap_stripe_dd") / "samples"


def query(
    sql: str,
    db: Location | Path | str,
    fmt: str = "table",
    out: TextIO | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> int:
    """`stripe-dd query` without argparse (tests, the demo): bad input raises only UserError."""
    with open_warehouse(db, timeout) as wh:
        return _write(wh, to_duckdb(sql, wh), fmt, out or sys.stdout)


def _location(args: argparse.Namespace) -> Location | str:
    """The warehouse the command reads; when an environment chose it, stderr says which."""
    location = resolve_db(args.db, args.environment)
    if isinstance(location, Location) and location.environment is not None:
        print(f"stripe-dd {args.command}: warehouse {location}", file=sys.stderr, flush=True)
    return location


def _write(wh: Warehouse, sql: str, fmt: str, out: TextIO) -> int:
    names, types, batches = wh.execute(sql)
    return WRITERS[fmt](batches, names, types, out)


def _read_sql(text: str) -> str:
    """A single word ending in .sql is a file name: no SQL statement looks like that."""
    if not text.endswith(".sql") or len(text.split()) != 1:
        return text
    try:
        return Path(text).read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise UserError(f"cannot read SQL file {text}: {reason}") from None


def _quiet_on_closed_pipe(
    command: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """`stripe-dd query … | head` closes stdout early: stop quietly, as Unix tools do."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except BrokenPipeError:
            return 0

    return run


@_quiet_on_closed_pipe
def _query_command(args: argparse.Namespace) -> int:
    query(_read_sql(args.sql), _location(args), args.format, timeout=args.timeout)
    return 0


@_quiet_on_closed_pipe
def _samples_command(args: argparse.Namespace) -> int:
    """Every sample runs even if one endpoint is missing; the failures are summed up at the end."""
    samples = sorted((s for s in SAMPLES.iterdir() if s.name.endswith(".sql")), key=str)
    failed: list[str] = []
    with open_warehouse(_location(args), args.timeout) as wh:
        wh.endpoints(args.source)  # a bad or unknown data source: nothing would run
        for sample in samples:
            endpoint = "/" + sample.name.removesuffix(".sql")
            print(f"== {args.source} {endpoint} ==")
            try:
                _write(
                    wh, to_duckdb(sample.read_text("utf-8"), wh, args.source), "table", sys.stdout
                )
            except UserError as exc:
                print(f"(not run: {exc})")
                failed.append(endpoint)
            print()
    if failed:
        raise UserError(f"{len(failed)} of {len(samples)} samples did not run: {', '.join(failed)}")
    return 0


@_quiet_on_closed_pipe
def _tables_command(args: argparse.Namespace) -> int:
    location = _location(args)
    with open_warehouse(location, args.timeout) as wh:
        if not wh.sources:
            hint = location.missing() if isinstance(location, Location) else SYNC_HINT
            print(f"(no data sources in {wh.path} yet: {hint})")
        for number, (source, endpoints) in enumerate(wh.sources.items()):
            stats = [(f"/{e}", *_table_stats(wh, source, e)) for e in endpoints]
            print(("\n" if number else "") + source)
            print("".join(_tree(stats)) or "└── (no endpoints yet)\n", end="")
    return 0


def _table_stats(wh: Warehouse, source: str, endpoint: str) -> tuple[int, str]:
    """Row count and last sync: the newest `_sdc_batched_at`, which the loader stamps per batch."""
    table = exp.table_(endpoint, db=source, quoted=True)
    has_batched = "_sdc_batched_at" in wh.columns(source, endpoint)
    synced = exp.func("max", exp.column("_sdc_batched_at")) if has_batched else exp.null()
    _, _, batches = wh.execute(exp.select("count(*)", synced).from_(table).sql(wh.dialect))
    ((count, last),) = next(batches)
    when = last.strftime("%Y-%m-%d %H:%M:%S") if isinstance(last, dt.datetime) else last
    return count, "—" if when is None else str(when)


def _tree(stats: list[tuple[str, int, str]]) -> Iterator[str]:
    path_width = max((len(path) for path, _, _ in stats), default=0)
    count_width = max((len(f"{count:,}") for _, count, _ in stats), default=0)
    for i, (path, count, synced) in enumerate(stats):
        branch = "└──" if i == len(stats) - 1 else "├──"
        rows = f"{count:>{count_width},} {'row ' if count == 1 else 'rows'}"
        yield f"{branch} {path:<{path_width}}   {rows}   last sync {synced}\n"


def _warehouse_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", help=f"the DuckDB warehouse file (default: ${DB_ENV}, else the environment's)"
    )
    parser.add_argument(
        "--environment",
        help=f"the Meltano environment whose warehouse to read, {WAREHOUSE} (default: "
        f"${ENVIRONMENT_ENV}, else meltano.yml's default_environment)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        help=f"stop a query after this many seconds, exit code {EXIT_TIMEOUT} (default: "
        f"{DEFAULT_TIMEOUT:g}; 0: none); Ctrl-C stops it too",
    )


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0: no timeout)")
    return seconds


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    query_parser = subparsers.add_parser(
        "query",
        help="run one read-only SQL query over the warehouse",
        description="Run one read-only query. DataDistillr/Drill form (`source`.`/endpoint`) "
        "and plain DuckDB SQL (source.endpoint) both work.",
    )
    query_parser.add_argument("sql", help="the SQL text, or the path of a .sql file")
    _warehouse_options(query_parser)
    query_parser.add_argument(
        "--format", choices=tuple(WRITERS), default="table", help="output format"
    )
    query_parser.set_defaults(func=_query_command)

    samples_parser = subparsers.add_parser(
        "samples",
        help="run the six sample queries",
        description="Run the sample query of every endpoint (tap_stripe_dd/samples/*.sql).",
    )
    _warehouse_options(samples_parser)
    samples_parser.add_argument(
        "--source", default=DEFAULT_SOURCE, help=f"data source to query (default: {DEFAULT_SOURCE})"
    )
    samples_parser.set_defaults(func=_samples_command)

    tables_parser = subparsers.add_parser(
        "tables", help="list data sources, endpoints, row counts and last sync"
    )
    _warehouse_options(tables_parser)
    tables_parser.set_defaults(func=_tables_command)
