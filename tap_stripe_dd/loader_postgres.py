"""`target-postgres-dd`: meltanolabs-target-postgres (the shards' loader, README "Many
accounts") reading this tap's BATCH files as the RECORD messages they stand for.

Upstream loads a BATCH file as it is: without the `_sdc_*` columns RECORD messages get (the
query tool's "last sync" is `_sdc_batched_at`), and it leaves the file on disk, where the
tap's next run would find it. The files hold Stripe data (customers' names, e-mails), and none
may outlive its run (batches.py). Here each file's records go through upstream's RECORD path,
and the file is deleted once read, under its run's claim, as the DuckDB loader does
(loader.py). Meltano installs this beside upstream, in the loader's own environment.
"""

from __future__ import annotations

import sys

import msgspec
from target_postgres.target import TargetPostgres

from tap_stripe_dd.batches import RunClaims, batch_records
from tap_stripe_dd.errors import UserError

CLAIMS = RunClaims()


class BatchesAsRecords(TargetPostgres):
    """target-postgres, with each BATCH message read as its records."""

    def _process_batch_message(self, message_dict: dict) -> None:
        for record in batch_records(message_dict, CLAIMS, msgspec.json.decode):
            self._process_record_message(record)


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
