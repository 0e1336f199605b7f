"""SIGINT and SIGTERM stop a run within 5 s, as `docker stop`, `systemctl stop` and Ctrl-C send
them: non-zero (130/143), every STATE the loader confirmed kept, no batch file left, and the next
run exact. Real Meltano, tap, target and emulator, as in tests/test_reliability.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import (
    ROOT,
    RUN_JOB,
    assert_no_secret,
    assert_warehouse_exact,
    group_members,
    meltano_env,
    meltano_lock,
    remove_files,
    saved_state,
    start_meltano,
    wait_for_group_to_end,
)
from tap_stripe_dd.client import to_unix
from tap_stripe_dd.sync import BATCH_FILES

KEY = "sk_test_SignalK3yThatN3v3rL3aksAnywh3re"
# One request at a time, 100 ms each: a run lasts long enough to be stopped in its middle.
MELTANO_ENV = meltano_env(KEY) | {"TAP_STRIPE_DD_MAX_CONCURRENCY": "1"}
SYNC = ("sync", "--environment", "dev")

# How each sender delivers the signal: to the first process only (`docker stop`: PID 1), or to
# the whole process group (`systemctl stop`'s control group, Ctrl-C's foreground group).
SENDERS = {
    "docker stop": (signal.SIGTERM, False),
    "systemctl stop": (signal.SIGTERM, True),
    "ctrl-c": (signal.SIGINT, True),
}


def bookmarks(state: dict) -> dict[str, int]:
    return {
        stream: to_unix(entry["replication_key_value"])
        for stream, entry in state.get("bookmarks", {}).items()
        if "replication_key_value" in entry
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sender", "program"),
    [
        ("docker stop", "meltano"),
        ("ctrl-c", "meltano"),
        ("docker stop", "stripe-dd"),
        ("systemctl stop", "stripe-dd"),
        ("ctrl-c", "stripe-dd"),
    ],
)
def test_a_signal_stops_the_run_at_once_and_the_next_run_resumes_exact(
    emulators, warehouse, sender, program
):
    signum, to_group = SENDERS[sender]
    emulator = emulators(objects=1_500, latency_ms=100)
    wh = warehouse(emulator, **MELTANO_ENV)
    db = wh.path.with_name("meltano.db")
    log = wh.path.with_name("stopped.log")
    args = SYNC if program == "stripe-dd" else RUN_JOB
    batches = ROOT / BATCH_FILES
    with meltano_lock():
        before = set(batches.glob("*"))
        proc = start_meltano(*args, env=wh.env, log=log, program=program)
        try:
            deadline = time.monotonic() + 90
            while not bookmarks(saved_state(db)):  # the loader confirmed a first STATE
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "no STATE was ever saved"
                time.sleep(0.05)
            time.sleep(0.5)
            confirmed = bookmarks(saved_state(db))
            sent, sent_at = time.monotonic(), datetime.now(timezone.utc).time()
            (os.killpg if to_group else os.kill)(proc.pid, signum)
            returncode = proc.wait(timeout=30)
            took = time.monotonic() - sent
            survivors = wait_for_group_to_end(proc.pid, seconds=1)
        finally:
            if proc.poll() is None or group_members(proc.pid):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        left = sorted(set(batches.glob("*")) - before)
        remove_files(left)
    output = log.read_text()
    assert took < 5, f"the run took {took:.1f} s to stop (sent at {sent_at}): {output[-3000:]}"
    assert not survivors, f"processes outlived the run: {survivors}"
    # Meltano itself exits 1 after Ctrl-C ("Aborted!", click's KeyboardInterrupt); its plugins
    # 130, and so does stripe-dd sync.
    expected = 1 if (sender, program) == ("ctrl-c", "meltano") else 128 + signum
    assert returncode == expected, output[-3000:]
    assert f"tap-stripe-dd: stopped by {signal.Signals(signum).name}" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert not left, f"batch files left behind: {left}"
    kept = bookmarks(saved_state(db))
    assert all(kept.get(stream, 0) >= mark for stream, mark in confirmed.items()), (confirmed, kept)
    with meltano_lock():
        wh.meltano(*RUN_JOB)  # a plain run: the stopped job is not left RUNNING
    assert_warehouse_exact(wh, emulator)
    assert_no_secret(KEY, output, wh.path, db, Path(log))


PENDING_SIGNALS = """
import os, signal, sys, time
from tap_stripe_dd.signals import Stopped, stop_on_signals
both = {signal.SIGINT, signal.SIGTERM}
stop_on_signals()
signal.pthread_sigmask(signal.SIG_BLOCK, both)
os.kill(os.getpid(), signal.SIGINT)
os.kill(os.getpid(), signal.SIGTERM)
try:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, both)
    time.sleep(0.5)
except Stopped as stopped:
    print(stopped.name)
"""


def test_a_second_signal_already_pending_while_stopping_raises_nothing():
    """Meltano sends SIGTERM right after Ctrl-C's SIGINT: both pending, the first handler stops
    the program and the second is ignored, not "OSError: Signal 15 ignored due to race
    condition" (a traceback in the run's log, "Exception ignored in" the cleanup). In a
    process of its own: a signal sent to pytest's would reach its workers' handlers."""
    run = subprocess.run(
        [sys.executable, "-c", PENDING_SIGNALS], capture_output=True, text=True, timeout=30
    )
    assert (run.returncode, run.stdout, run.stderr) == (0, "SIGINT\n", "")
