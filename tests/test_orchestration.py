"""The Dagster code location (tap_stripe_dd/orchestration.py): a platform's twelve accounts in
three shards, each a `meltano run` in an op of its own, run through Dagster's multiprocess
executor into a real PostgreSQL, Meltano's state in PostgreSQL too; one shard killed mid-run
first, which the job's run then resumes."""

from __future__ import annotations

import json
import os
import time

import dagster as dg
import psycopg
import pytest

from conftest import (
    ROOT,
    STREAMS,
    kill_group,
    meltano_lock,
    pg_meltano_env,
    start_meltano,
    wait_for_group_to_end,
)
from tap_stripe_dd import orchestration
from tap_stripe_dd.accounts import shard_of

pytestmark = pytest.mark.slow
STEP_START, STEP_SUCCESS = dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS


def saved_partitions(system: str, suffix: str) -> list[str]:
    """Accounts with a bookmark in the state Meltano saved for one shard so far."""
    try:
        with psycopg.connect(system) as conn:
            found = conn.execute(
                "SELECT completed_state, partial_state FROM state WHERE state_id LIKE %s",
                (f"%:{suffix}",),
            ).fetchall()
    except psycopg.errors.UndefinedTable:  # Meltano has not created its tables yet
        return []
    accounts = []
    for row in found:
        for part in row:
            value = part if isinstance(part, dict) else json.loads(part or "{}")
            for stream in value.get("singer_state", {}).get("bookmarks", {}).values():
                accounts += [p["context"]["account_id"] for p in stream.get("partitions", [])]
    return accounts


def test_dagster_runs_the_shards_side_by_side_into_postgres_exactly(
    emulators, pg_database, meltano_installed, monkeypatch, tmp_path
):
    emulator = emulators(objects=20, accounts=12, latency_ms=10)
    accounts = [emulator.platform_id, *emulator.connected_accounts]
    warehouse, system = pg_database("warehouse"), pg_database("meltano")
    env = pg_meltano_env(emulator, warehouse, system) | {
        "TAP_STRIPE_DD_ACCOUNT_IDS": "all",
        "TAP_STRIPE_DD_PAGE_SIZE": "10",
        "STRIPE_DD_PROJECT": str(ROOT),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with meltano_lock():
        # Shard 1 alone, killed once Meltano has saved some of its bookmarks.
        killed = start_meltano(
            *orchestration.shard_command(ROOT, 1)[1:],
            env={
                **os.environ,
                "TAP_STRIPE_DD_ACCOUNT_SHARD": "1/3",
                "MELTANO_SYS_DIR_ROOT": str(orchestration.shard_sys_dir(ROOT, 1)),
            },
            log=tmp_path / "killed.log",
        )
        deadline = time.monotonic() + 90
        while not saved_partitions(system, "shard-1") and time.monotonic() < deadline:
            assert killed.poll() is None, (tmp_path / "killed.log").read_text()[-2000:]
            time.sleep(0.05)
        kill_group(killed)
        assert not wait_for_group_to_end(killed.pid)
        instance = dg.DagsterInstance.local_temp(str(tmp_path))
        result = dg.execute_job(dg.reconstructable(orchestration.stripe_shards), instance=instance)
    assert result.success
    steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
    assert steps == {"prepare", "shard_1_of_3", "shard_2_of_3", "shard_3_of_3"}
    shards = [e for e in instance.all_logs(result.run_id) if (e.step_key or "").startswith("sh")]
    starts = [e.timestamp for e in shards if e.dagster_event_type == STEP_START]
    ends = [e.timestamp for e in shards if e.dagster_event_type == STEP_SUCCESS]
    assert len(starts) >= 3 and max(starts) < min(ends), "the shards ran one after another"
    with psycopg.connect(warehouse) as conn:
        for stream in STREAMS:
            for account in accounts:
                ids = conn.execute(
                    f"SELECT id FROM mystripeapi.{stream} WHERE account_id = %s", (account,)
                ).fetchall()
                assert sorted(i for (i,) in ids) == sorted(emulator.ids(stream, account)), (
                    stream,
                    account,
                )
    for k in (1, 2, 3):
        saved = set(saved_partitions(system, f"shard-{k}"))
        assert saved == {a for a in accounts if shard_of(a, 3) == k}, k


def test_the_job_is_scheduled_hourly_and_each_shard_retried():
    """What Dagster loads from the code location: the job on an hourly schedule, and a retry
    policy on every op (a shard that fails is run again, from its own saved state)."""
    (schedule,) = orchestration.defs.schedules
    assert schedule.job_name == "stripe_shards" and schedule.cron_schedule == "0 * * * *"
    job = orchestration.defs.resolve_job_def("stripe_shards")
    ops = {node.name: node.definition for node in job.nodes}
    assert set(ops) == {"prepare", *(f"shard_{k}_of_3" for k in (1, 2, 3))}
    assert all(op.retry_policy and op.retry_policy.max_retries >= 1 for op in ops.values())
