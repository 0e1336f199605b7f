"""`stripe-dd sync`: the crash-safe way to run the job. After a `kill -9` of `meltano run` it goes
ahead at once and removes the key file the killed run left; the files Meltano writes under it are
the owner's only; it refuses, touching nothing, while another sync or a live `meltano run` has
the project. Real Meltano, tap, target and emulator, as in tests/test_reliability.py."""

from __future__ import annotations

import re
import signal
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from conftest import (
    BIN,
    ROOT,
    RUN_JOB,
    Warehouse,
    assert_no_secret,
    assert_warehouse_exact,
    fetching,
    kill_first_run,
    kill_group,
    meltano_env,
    meltano_lock,
    mentions,
    remove_files,
    start_meltano,
    wait_for_group_to_end,
)
from tap_stripe_dd import cli
from tap_stripe_dd.emulator import StripeEmulator
from tap_stripe_dd.sync import BATCH_FILES, EX_TEMPFAIL

# A key of its own, so that a leak found here is this file's.
KEY = "sk_test_SyncK3yThatN3v3rL3aksAnywh3re"
MELTANO_ENV = meltano_env(KEY)

SYNC = ("sync", "--environment", "dev")
RUN_CONFIGS = "*/*.config.json"  # under .meltano/run/: tap.<uuid>.config.json and the target's


def sync(wh: Warehouse, *args: str) -> subprocess.CompletedProcess:
    """`stripe-dd sync` as cron starts it, in the project folder. Call it under `meltano_lock()`."""
    return subprocess.run(
        [str(BIN / "stripe-dd"), *SYNC, *args],
        cwd=ROOT,
        env=wh.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_configs() -> set[Path]:
    return set((ROOT / ".meltano" / "run").glob(RUN_CONFIGS))


def jobs(wh: Warehouse) -> list[str]:
    """The state of each Meltano job of the warehouse's system database, oldest first."""
    with sqlite3.connect(f"file:{wh.path.with_name('meltano.db')}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("SELECT state FROM runs ORDER BY id")]


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert proc.poll() is None, f"the run ended too early: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "the run never got there"
        time.sleep(0.05)


@contextmanager
def started(wh: Warehouse, emulator: StripeEmulator, *args: str, **options: object) -> Iterator:
    """Starts `args` (see `start_meltano`) and yields (process, log, the config files its run
    wrote) once the tap fetches; afterwards no process of its group is left."""
    before = run_configs()
    log = wh.path.with_name(f"run-{time.monotonic_ns()}.log")
    proc = start_meltano(*args, env=wh.env, log=log, **options)  # type: ignore[arg-type]
    try:
        wait_until(lambda: fetching(wh, emulator) and bool(run_configs() - before), proc, log)
        yield proc, log, sorted(run_configs() - before)
    finally:
        with suppress(ProcessLookupError):
            kill_group(proc)
        assert not wait_for_group_to_end(proc.pid), "processes outlived the test"


def stalled_emulator(emulators: Callable[..., StripeEmulator], seconds: float) -> StripeEmulator:
    """A run against it lasts `seconds` or more: its second charges request stalls."""
    emulator = emulators(objects=100)
    emulator.script_fault("/v1/charges", nth=2, kind="slow", seconds=seconds)
    return emulator


@pytest.mark.slow
def test_sync_after_a_killed_meltano_run_goes_ahead_at_once_and_removes_the_key_file(
    emulators, warehouse
):
    """The fix for open_bug(STALE_JOB) and open_bug(KEY_LEFT_ON_DISK) in test_reliability.py.
    The lock is kept from the kill to the sync: no other test's sync removes the leftovers."""
    with meltano_lock():
        wh, emulator, killed = kill_first_run(
            emulators, warehouse, fetching, MELTANO_ENV, objects=300, latency_ms=5
        )
        configs = [path for path in killed.leftovers if path.match(RUN_CONFIGS)]
        # As a run killed between the tap's writing a batch file and the loader's reading it.
        unread = ROOT / BATCH_FILES / "tap-stripe-dd--charges-killed-1.jsonl"
        unread.parent.mkdir(exist_ok=True)
        unread.write_text('{"id": "ch_killed"}\n')
        try:
            assert any(mentions(path, KEY) for path in configs), "no key file left to remove"
            assert jobs(wh) == ["RUNNING"], "the killed run is not marked RUNNING: nothing to force"
            synced = sync(wh)
            left = [path for path in [*configs, unread] if path.exists()]
        finally:
            remove_files([*killed.leftovers, unread])
    assert synced.returncode == 0, synced.stderr[-3000:]
    assert (
        "1 killed run(s) still marked RUNNING in Meltano's system database: marked failed, "
        "running with --force" in synced.stderr
    )
    removed = re.search(r"removed (\d+) file\(s\) that killed runs left", synced.stderr)
    assert removed and int(removed[1]) >= len(configs) + 1, synced.stderr[-3000:]
    assert not left, "the key file or the batch file is still there"
    assert jobs(wh) == ["FAIL", "SUCCESS"], "the killed run is still marked RUNNING"
    assert_warehouse_exact(wh, emulator)
    with meltano_lock():
        again = sync(wh)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "killed run" not in again.stderr, "a later sync warns of the same killed run"
    assert_no_secret(KEY, killed.output, synced, wh.path, wh.path.with_name("meltano.db"))


@pytest.mark.slow
def test_meltano_writes_the_key_file_of_a_sync_for_the_owner_only(emulators, warehouse):
    """Under a sync started with a permissive umask (cron's 022), the config files Meltano
    writes are 0600, during the run and as left by a kill -9 of Meltano; the sync then exits
    137, as a shell reports a SIGKILL."""
    emulator = stalled_emulator(emulators, seconds=30)
    wh = warehouse(emulator, **MELTANO_ENV)
    with meltano_lock(), started(wh, emulator, *SYNC, program="stripe-dd", umask=0o022) as run:
        proc, log, configs = run
        assert any(mentions(path, KEY) for path in configs), configs
        during = {path.name: stat.S_IMODE(path.stat().st_mode) for path in configs}
        kill_group(proc, who="meltano")
        left = {path.name: stat.S_IMODE(path.stat().st_mode) for path in configs}
    remove_files(configs)
    assert proc.returncode == 128 + signal.SIGKILL, log.read_text()[-2000:]
    assert set(during.values()) == set(left.values()) == {0o600}, (during, left)
    assert_no_secret(KEY, log.read_text(), wh.path.with_name("meltano.db"))


def sync_while(
    emulators: Callable[..., StripeEmulator],
    warehouse: Callable[..., Warehouse],
    *args: str,
    stall: float,
    **options: object,
) -> subprocess.CompletedProcess:
    """Runs a sync while `args` (see `started`) run, stalled `stall` seconds: it must be refused,
    touching nothing, and that run then loads every object exactly once. Returns the refused
    sync."""
    emulator = stalled_emulator(emulators, seconds=stall)
    wh = warehouse(emulator, **MELTANO_ENV)
    with meltano_lock(), started(wh, emulator, *args, **options) as (proc, log, configs):
        refused = sync(wh)
        still_there = [path for path in configs if path.exists()]
        jobs_then = jobs(wh)
        proc.wait(timeout=60)
    assert refused.returncode == EX_TEMPFAIL, refused.stderr[-3000:]
    assert still_there == configs, "the refused sync removed the running one's config files"
    assert jobs_then == ["RUNNING"], "the refused sync started a Meltano job"
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert jobs(wh) == ["SUCCESS"]
    assert_warehouse_exact(wh, emulator)
    assert_no_secret(KEY, refused, log.read_text(), wh.path, wh.path.with_name("meltano.db"))
    return refused


@pytest.mark.slow
def test_a_second_sync_is_refused_while_one_runs_and_touches_nothing(emulators, warehouse):
    second = sync_while(emulators, warehouse, *SYNC, stall=5, program="stripe-dd")
    assert second.stdout == ""
    assert second.stderr.splitlines() == [
        "stripe-dd sync: error: another stripe-dd sync of this project is running "
        "(.meltano/stripe-dd-sync.lock is locked)"
    ]


@pytest.mark.slow
def test_a_sync_leaves_a_live_plain_meltano_run_alone(emulators, warehouse):
    """A `meltano run` started by hand or by Meltano's scheduler holds no sync lock; its job
    keeps beating, so the sync neither forces a second run past it nor removes its key file."""
    # Long enough to outlast the sync's wait for the job's heartbeat to stop (10 s at most).
    refused = sync_while(emulators, warehouse, *RUN_JOB, stall=20)
    assert refused.stderr.splitlines() == [
        "stripe-dd sync: error: a `meltano run` started without stripe-dd sync is running in "
        "this project"
    ]


@pytest.mark.slow
def test_sync_passes_meltano_run_arguments_through(emulators, warehouse):
    wh = warehouse(emulators(objects=10), **MELTANO_ENV)
    with meltano_lock():
        dry = sync(wh, "--", "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "Dry run" in dry.stderr + dry.stdout
    assert not wh.path.exists(), "a dry run loaded the warehouse"
    assert_no_secret(KEY, dry)


def test_sync_outside_a_project_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sync"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "stripe-dd sync: error: no meltano.yml here or above: run it in the tap-stripe-dd "
        "project folder"
    ]
