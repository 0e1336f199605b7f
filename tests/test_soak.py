"""The on-demand soak (`make soak`): `meltano run` killed with SIGKILL at 20 random points in a
row, on 100,000 objects per stream, while new objects keep arriving; then a normal run. The
warehouse must hold every object the emulator lists, exactly once, and the key nowhere.

Each attempt resumes from what Meltano saved before the previous kill, so the kills land all
over a sync: mid-page, between pages and slices, while the target loads a batch, in Meltano's
start-up. What is killed is drawn too: the whole process group, only the tap or only the
target. Bounded: each attempt is killed at most 20 s after the tap's first request.

SOAK_OBJECTS, SOAK_KILLS and SOAK_SEED (printed, to replay a failure) override the defaults.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from conftest import (
    RUN_JOB,
    STREAMS,
    assert_no_secret,
    assert_warehouse_exact,
    kill_meltano_run,
    remove_files,
    saved_state,
)
from tap_stripe_dd.client import to_unix
from tap_stripe_dd.emulator import StripeEmulator

pytestmark = [pytest.mark.soak, pytest.mark.slow]

OBJECTS = int(os.environ.get("SOAK_OBJECTS", "100000"))
KILLS = int(os.environ.get("SOAK_KILLS", "20"))
SEED = int(os.environ.get("SOAK_SEED", str(random.SystemRandom().randrange(1_000_000))))
KEY = "sk_test_S0akK3yThatMustN3v3rL3ak"
WHO = ("group", "group", "tap-stripe-dd", "target-duckdb")  # the group most often
LOOKBACK = 600


def bookmarks(state: dict) -> dict[str, int]:
    return {
        stream: to_unix(value["replication_key_value"])
        for stream, value in state.get("bookmarks", {}).items()
        if "replication_key_value" in value
    }


def test_kills_at_random_points_in_a_row_then_a_normal_run_loads_everything_once(warehouse):
    print(f"soak: SOAK_SEED={SEED} SOAK_OBJECTS={OBJECTS} SOAK_KILLS={KILLS}")
    rng = random.Random(SEED)
    with StripeEmulator(seed=SEED, objects=OBJECTS) as emulator:
        wh = warehouse(
            emulator,
            TAP_STRIPE_DD_API_KEY=KEY,
            TAP_STRIPE_DD_LOOKBACK_SECONDS=str(LOOKBACK),
            TAP_STRIPE_DD_RATE_LIMIT_PER_ACCOUNT="10000",
            TAP_STRIPE_DD_RATE_LIMIT_PER_ENDPOINT="10000",
            # Smaller batches than the default 10,000, so that Meltano saves state between kills.
            TARGET_DUCKDB_BATCH_SIZE_ROWS="2000",
        )
        db = wh.path.with_name("meltano.db")
        outputs: list[str] = []
        previous: dict[str, int] = {}
        kept = 0  # killed runs whose progress Meltano kept
        for attempt in range(KILLS):
            # Objects keep arriving, some dated back into the lookback window.
            now = int(time.time())
            for stream in STREAMS:
                emulator.add_objects(stream, rng.randrange(0, 20))
                emulator.add_objects(stream, rng.randrange(0, 20), created=now - rng.randrange(300))
            who, delay = rng.choice(WHO), rng.uniform(0.0, 20.0)
            emulator.clear_log()
            started: list[float] = []

            def due(delay: float = delay, started: list[float] = started) -> bool:
                """`delay` seconds after the tap's first request (Meltano's start-up varies)."""
                if not started and emulator.request_log:
                    started.append(time.monotonic())
                return bool(started) and time.monotonic() - started[0] >= delay

            # --force: a killed group leaves its job RUNNING in Meltano's database for 5 minutes.
            killed = kill_meltano_run(wh, emulator, due, who, force=True)
            reached = bookmarks(saved_state(db))
            for stream, bookmark in previous.items():
                assert reached.get(stream, 0) >= bookmark, f"{stream}: the bookmark went back"
            remove_files(killed.leftovers)
            outputs.append(killed.output)
            if killed.killed:
                kept += reached != previous
                print(f"attempt {attempt}: {who} killed after {delay:.1f} s; bookmarks {reached}")
            else:
                print(f"attempt {attempt}: ended by itself (exit {killed.returncode}) first")
            previous = reached
        assert kept, "no killed run kept any progress"
        final = wh.meltano(*RUN_JOB[:3], "--force", RUN_JOB[3])
        assert_warehouse_exact(wh, emulator)
        assert bookmarks(saved_state(db)).keys() == set(STREAMS)
    assert_no_secret(KEY, final, *outputs, wh.path, db)
