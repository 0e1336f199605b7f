"""`make scale-demo`: a Connect platform past one process. A private PostgreSQL and an emulator
with 12 connected accounts start; the Dagster job (orchestration.py) runs 3 shards side by side
into PostgreSQL, Meltano's state in PostgreSQL too; then each account's rows per stream print
beside the emulator's. Exit 0 only when every account's ids are exact. Everything the demo
started stops, however it ends."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tap_stripe_dd.demo import project_root
from tap_stripe_dd.emulator import StripeEmulator
from tap_stripe_dd.postgres import postgres_server
from tap_stripe_dd.streams import STREAM_TYPES

ACCOUNTS = 12
OBJECTS = 100
DRIVER = "postgresql+psycopg://"


def main() -> int:
    import dagster as dg
    import psycopg

    from tap_stripe_dd import orchestration

    root = project_root(Path.cwd())
    meltano = Path(sys.executable).parent / "meltano"
    installed = subprocess.run([str(meltano), "install"], cwd=root, capture_output=True, text=True)
    if installed.returncode:
        print(installed.stderr[-2000:], file=sys.stderr)
        return 1
    with (
        postgres_server() as server,
        StripeEmulator(seed=42, objects=OBJECTS, accounts=ACCOUNTS) as emulator,
        tempfile.TemporaryDirectory() as dagster_home,
    ):
        warehouse, system = server.create_database("stripe"), server.create_database("meltano")
        os.environ.update(
            {
                "MELTANO_DATABASE_URI": system.replace("postgresql://", DRIVER),
                "TARGET_POSTGRES_SQLALCHEMY_URL": warehouse.replace("postgresql://", DRIVER),
                "TAP_STRIPE_DD_API_URL": emulator.url,
                "TAP_STRIPE_DD_ACCOUNT_IDS": "all",
                "STRIPE_DD_PROJECT": str(root),
                "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            }
        )
        print(f"PostgreSQL {server.uri()}, emulator {emulator.url} with {ACCOUNTS} accounts")
        print(f"Dagster job {orchestration.stripe_shards.name}: {orchestration.SHARDS} shards")
        instance = dg.DagsterInstance.local_temp(dagster_home)
        result = dg.execute_job(dg.reconstructable(orchestration.stripe_shards), instance=instance)
        print(f"Dagster run {result.run_id}: {'success' if result.success else 'FAILED'}")
        with psycopg.connect(warehouse) as conn:
            exact = report(conn, emulator)
        with psycopg.connect(system) as conn:
            ids = [row[0] for row in conn.execute("SELECT state_id FROM state ORDER BY 1")]
        print(f"state in PostgreSQL: {', '.join(ids)}")
    ok = result.success and exact
    print("every account exact" if ok else "NOT EXACT", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def report(conn: object, emulator: StripeEmulator) -> bool:
    """Rows per account and stream, warehouse/emulator; True when every id set is the same."""
    streams = [stream.name for stream in STREAM_TYPES]
    print(f"{'account':<24}" + "".join(f"{name[:14]:>16}" for name in streams))
    exact = True
    for account in [emulator.platform_id, *emulator.connected_accounts]:
        cells = []
        for stream in streams:
            found = conn.execute(  # type: ignore[attr-defined]
                f"SELECT id FROM mystripeapi.{stream} WHERE account_id = %s", (account,)
            ).fetchall()
            expected = emulator.ids(stream, account)
            same = sorted(i for (i,) in found) == sorted(expected)
            exact &= same
            cells.append(f"{len(found)}/{len(expected)}{'' if same else ' !'}")
        print(f"{account:<24}" + "".join(f"{cell:>16}" for cell in cells))
    return exact


if __name__ == "__main__":
    sys.exit(main())
