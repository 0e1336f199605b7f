"""`target-postgres-dd`: meltanolabs-target-postgres (the shards' loader, README "Many
accounts") reading this tap's BATCH files as the RECORD messages they stand for.

Upstream loads a BATCH file as it is: without the `_sdc_*` columns RECORD messages get (the
query tool's "last sync" is `_sdc_batched_at`), and it leaves the file on disk, where the
tap's next run would find it. The files hold Stripe data (customers' names, e-mails), and none
may outlive its run (batches.py). Here each file's records go through upstream's RECORD path,
and the file is deleted once read, under its run's claim, as the DuckDB loader does
(loader.py). Before a STATE is confirmed, the rows a completed resync did not list are marked
deleted, or removed with `hard_delete` (resyncs.py), as the DuckDB loader does too. Meltano
installs this beside upstream, in the loader's own environment.
"""

from __future__ import annotations

import sys
from functools import cached_property

import msgspec
import sqlalchemy
from target_postgres.connector import PostgresConnector
from target_postgres.target import TargetPostgres

from tap_stripe_dd.batches import RunClaims, batch_records
from tap_stripe_dd.errors import UserError
from tap_stripe_dd.resyncs import COLUMNS, OncePerRun, Resync

CLAIMS = RunClaims()


class BatchesAsRecords(TargetPostgres):
    """target-postgres, with each BATCH message read as its records."""

    def _process_batch_message(self, message_dict: dict) -> None:
        for record in batch_records(message_dict, CLAIMS, msgspec.json.decode):
            self._process_record_message(record)

    def _write_state_message(self, state: dict) -> None:
        """Called once every sink is drained: the rows before this STATE are in."""
        self._unlisted(state)
        super()._write_state_message(state)

    @cached_property
    def _unlisted(self) -> OncePerRun:
        return OncePerRun(self._mark_unlisted)

    @cached_property
    def _connector(self) -> PostgresConnector:
        return PostgresConnector(config=dict(self.config))

    def _mark_unlisted(self, resync: Resync) -> None:
        schema = self.config.get("default_target_schema")
        engine = self._connector._engine
        inspector = sqlalchemy.inspect(engine)
        if not schema or not inspector.has_table(resync.stream, schema=schema):
            return
        columns = {column["name"] for column in inspector.get_columns(resync.stream, schema)}
        if not columns >= COLUMNS:
            return
        hard_delete = bool(self.config.get("hard_delete"))
        sql, params = resync.statement(f'"{schema}"."{resync.stream}"', hard_delete, ":{}".format)
        with engine.begin() as connection:
            marked = connection.execute(sqlalchemy.text(sql), params).rowcount
        if marked:
            print(resync.said("target-postgres", marked, hard_delete), file=sys.stderr)


def main() -> None:
    code: int | str | None = 1
    try:
        BatchesAsRecords.cli()  # ends with SystemExit, as click commands do
    except SystemExit as done:
        code = done.code
        raise
    except UserError as exc:  # a BATCH file that cannot be read
        print(f"target-postgres: error: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:  # failed or stopped: the files not read are fetched again by the next run
        CLAIMS.release(discard=code not in (0, None))


if __name__ == "__main__":
    main()
