"""`target-duckdb-dd`: target-duckdb 0.8.0 with the three bugs that lose data fixed.

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

It also creates the warehouse file's folder, which upstream expects to exist, and reads a
top-level primary key without flattening the whole record first (a fifth of its time).
Everything else is upstream's code, unchanged; Meltano runs this as the `target-duckdb` loader.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import target_duckdb
from target_duckdb.db_sync import DbSync

from tap_stripe_dd.query.warehouse import SOURCE_NAME, SOURCE_RULE

UPSTREAM_COPY = "WITH (new_line '\\r\\n')"
FIXED_COPY = "WITH (new_line '\\r\\n', header false)"
UPSTREAM_PERSIST_LINES = target_duckdb.persist_lines
UPSTREAM_EMIT_STATE = target_duckdb.emit_state
UPSTREAM_CONNECT = target_duckdb.duckdb_connect


class HeaderlessCopyConnection:
    """A DuckDB connection whose CSV `COPY … FROM` never treats a data row as a header."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def execute(self, query: str, *args: Any) -> Any:
        if query.startswith("COPY ") and UPSTREAM_COPY in query:
            query = query.replace(UPSTREAM_COPY, FIXED_COPY)
        return self._connection.execute(query, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


class KeyedDbSync(DbSync):
    """Upstream flattens every record just to read its key; a top-level scalar key is the same
    string either way."""

    def record_primary_key_string(self, record: dict) -> str | None:
        keys = self.stream_schema_message["key_properties"]
        if keys and all(isinstance(record.get(key), str | int) for key in keys):
            return ",".join(str(record[key]) for key in keys)
        return super().record_primary_key_string(record)


class StateTracker:
    """Remembers the last STATE the tap sent and the last one this target emitted."""

    def __init__(self) -> None:
        self.received: Any = None
        self.emitted: Any = None

    def watch(self, lines: Iterable[str]) -> Iterator[str]:
        for line in lines:
            if '"STATE"' in line:
                message = json.loads(line)
                if message.get("type") == "STATE":
                    self.received = message.get("value")
            yield line

    def emit(self, state: Any) -> None:
        UPSTREAM_EMIT_STATE(state)
        if state is not None:
            self.emitted = state

    def forward_final(self) -> None:
        """Called after upstream flushed everything: the tap's last STATE is now safe to emit."""
        if self.received is not None and self.received != self.emitted:
            self.emit(self.received)


def persist_lines(connection: Any, config: dict, lines: Iterable[str]) -> None:
    """Upstream's `persist_lines` with both fixes around it."""
    tracker = StateTracker()
    target_duckdb.emit_state = tracker.emit
    try:
        UPSTREAM_PERSIST_LINES(
            HeaderlessCopyConnection(connection),
            config | {"flush_all_streams": True},
            tracker.watch(lines),
        )
    finally:
        target_duckdb.emit_state = UPSTREAM_EMIT_STATE
    tracker.forward_final()


def duckdb_connect(config: dict) -> Any:
    """Refuses a data-source name the query tool could not use, before anything is written."""
    source = config.get("default_target_schema")
    if source is not None and not SOURCE_NAME.fullmatch(str(source)):
        print(
            f"target-duckdb: error: invalid data-source name {source!r} "
            f"(default_target_schema): {SOURCE_RULE}",
            file=sys.stderr,
        )
        sys.exit(2)
    path = str(config.get("path", config.get("filepath", "")))
    if path and ":" not in path.split("/")[0]:  # a local file, not md: or motherduck:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return UPSTREAM_CONNECT(config)


def main() -> None:
    target_duckdb.duckdb_connect = duckdb_connect
    target_duckdb.DbSync = KeyedDbSync
    target_duckdb.persist_lines = persist_lines
    target_duckdb.main()


if __name__ == "__main__":
    sys.exit(main())
