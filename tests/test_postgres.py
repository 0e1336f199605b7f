"""The private PostgreSQL server (tap_stripe_dd/postgres.py) and target-postgres through Meltano,
with Meltano's system database (its state) in PostgreSQL too."""

from __future__ import annotations

import io
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from conftest import BIN, ROOT, STREAMS, meltano, pg_meltano_env
from tap_stripe_dd.errors import UserError
from tap_stripe_dd.postgres import HOST, postgres_server
from tap_stripe_dd.query import query
from tap_stripe_dd.query.warehouse import resolve_db
from tap_stripe_dd.sync import BATCH_FILES


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((HOST, port)) == 0


def postmasters(folder: Path) -> list[int]:
    """Live processes whose command line names the cluster's folder."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(folder).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_server_answers_then_stops_and_leaves_nothing():
    with postgres_server() as server:
        with psycopg.connect(server.uri()) as conn:
            assert conn.execute("SELECT 1 + 1").fetchone() == (2,)
        uri = server.create_database("stripe")
        with psycopg.connect(uri) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("stripe",)
        assert listening(server.port)
        assert postmasters(server.folder)
    assert not listening(server.port)
    assert not server.folder.exists()
    assert not postmasters(server.folder)


def test_server_stops_when_the_block_fails():
    with pytest.raises(ZeroDivisionError), postgres_server() as server:
        _ = 1 / 0
    assert not listening(server.port)
    assert not server.folder.exists()


OWNER = """
import sys, time
from tap_stripe_dd.postgres import postgres_server
with postgres_server() as server:
    print(server.port, server.folder, flush=True)
    time.sleep(120)
"""


def test_server_dies_with_its_owner_killed_and_the_next_start_removes_its_folder():
    """kill -9 of the process that started it: no server keeps running, no folder stays."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    try:
        port, folder = owner.stdout.readline().split()
        assert listening(int(port))
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    deadline = time.monotonic() + 10
    while (postmasters(Path(folder)) or listening(int(port))) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not postmasters(Path(folder)), "the server outlived its owner"
    assert not listening(int(port))
    with postgres_server():
        assert not Path(folder).exists(), "a dead owner's folder stayed"


@pytest.mark.slow
def test_meltano_loads_postgres_exactly_with_state_in_postgres_and_the_query_tool_reads_it(
    emulators, pg_database, meltano_installed, tmp_path
):
    emulator = emulators(objects=120)
    warehouse, system = pg_database("warehouse"), pg_database("meltano")
    env = pg_meltano_env(emulator, warehouse, system)
    batches = ROOT / BATCH_FILES
    before = set(batches.glob("*"))
    run = meltano("--environment", "dev", "run", "stripe-to-postgres", env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "BATCH" in run.stderr or "batch" in run.stderr, "the tap sent no batch files"
    assert set(batches.glob("*")) <= before, "the run's batch files (Stripe data) stayed"
    with psycopg.connect(warehouse) as conn:
        for stream in STREAMS:
            ids = [row[0] for row in conn.execute(f"SELECT id FROM mystripeapi.{stream}")]
            assert sorted(ids) == sorted(emulator.ids(stream)), stream
        created = conn.execute(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = 'charges' AND column_name IN ('created', 'metadata') "
            "ORDER BY column_name"
        ).fetchall()
        assert created == [("timestamp without time zone",), ("jsonb",)]
    with psycopg.connect(system) as conn:
        ((state_id, completed),) = conn.execute("SELECT state_id, completed_state FROM state")
    assert state_id == "dev:tap-stripe-dd-to-target-postgres"
    state = completed if isinstance(completed, dict) else json.loads(completed)
    assert set(state["singer_state"]["bookmarks"]) == set(STREAMS)
    # The query tool reads the same warehouse: Drill form, the samples, writes refused.
    out = io.StringIO()
    drill = "SELECT count(*) AS n, count(DISTINCT account_id) AS a FROM `mystripeapi`.`/charges`"
    query(drill, resolve_db(warehouse), "csv", out)
    assert out.getvalue().splitlines() == ["n,a", f"{len(emulator.ids('charges'))},1"]
    samples = subprocess.run(
        [str(BIN / "stripe-dd"), "samples", "--db", warehouse], capture_output=True, text=True
    )
    assert samples.returncode == 0, samples.stderr
    assert samples.stdout.count("== mystripeapi /") == len(STREAMS)
    tables = subprocess.run(
        [str(BIN / "stripe-dd"), "tables", "--db", warehouse], capture_output=True, text=True
    )
    assert tables.returncode == 0, tables.stderr
    for stream in STREAMS:
        count = len(emulator.ids(stream))
        assert re.search(rf"── /{stream} +{count:,} rows? +last sync 20", tables.stdout), (
            tables.stdout
        )
    for sql in ("DELETE FROM mystripeapi.charges", "SELECT 1; DROP TABLE mystripeapi.charges"):
        with pytest.raises(UserError, match=r"refused|one statement"):
            query(sql, resolve_db(warehouse), "csv", io.StringIO())
    refused = subprocess.run(
        [
            str(BIN / "stripe-dd"),
            "query",
            "--db",
            warehouse,
            "SELECT nope FROM mystripeapi.charges",
        ],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    with psycopg.connect(warehouse) as conn:
        assert conn.execute("SELECT count(*) FROM mystripeapi.charges").fetchone() == (
            len(emulator.ids("charges")),
        )


@pytest.mark.slow
def test_a_resync_marks_in_postgres_the_rows_it_no_longer_lists_of_its_account_only(
    emulators, pg_database, meltano_installed
):
    """A connected account's customers deleted during a 40-day pause: the resync's completed
    note marks that account's unlisted rows in PostgreSQL, and no other account's."""
    emulator = emulators(objects=40, accounts=1)
    account = emulator.connected_accounts[0]
    warehouse, system = pg_database("warehouse"), pg_database("meltano")
    env = pg_meltano_env(emulator, warehouse, system) | {"TAP_STRIPE_DD_ACCOUNT_IDS": "all"}
    job = ("--environment", "dev", "run", "stripe-to-postgres")
    assert meltano(*job, env=env).returncode == 0
    gone = sorted(customer["id"] for customer in emulator.current("customers", account)[-2:])
    for customer in gone:
        emulator.write("DELETE", f"/v1/customers/{customer}", account=account)
    emulator.advance(40 * 86_400)
    run = meltano(*job, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"customers of {account}: 2 row(s) unlisted, marked deleted" in run.stderr
    with psycopg.connect(warehouse) as conn:
        rows = conn.execute(
            "SELECT id, account_id, deleted, _sdc_deleted_at IS NOT NULL FROM mystripeapi.customers"
        ).fetchall()
    marked = sorted(row for row in rows if row[2])
    assert marked == [(customer, account, True, True) for customer in gone]
    for owner in (emulator.platform_id, account):
        live = sorted(row[0] for row in rows if row[1] == owner and not row[2])
        assert live == sorted(emulator.ids("customers", owner)), owner
