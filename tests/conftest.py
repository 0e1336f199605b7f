"""Shared fixtures: an emulator on loopback, and the real tap run as a process against it."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest

from tap_stripe_dd.emulator import StripeEmulator
from tap_stripe_dd.streams import STREAM_TYPES

BIN = Path(sys.executable).parent
STREAMS = [stream.name for stream in STREAM_TYPES]
TEST_KEY = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"
START_DATE = "2024-01-01T00:00:00Z"


@dataclass
class TapRun:
    """What one tap process printed, split into Singer messages."""

    returncode: int
    stdout: str
    stderr: str
    records: dict[str, list[dict]] = field(default_factory=dict)
    states: list[dict] = field(default_factory=list)

    def ids(self, stream: str) -> list[str]:
        return [record["id"] for record in self.records.get(stream, [])]

    @property
    def state(self) -> dict:
        return self.states[-1] if self.states else {}

    def bookmark(self, stream: str) -> str | None:
        return self.state.get("bookmarks", {}).get(stream, {}).get("replication_key_value")


def parse_messages(run: TapRun) -> TapRun:
    for line in run.stdout.splitlines():
        message = json.loads(line)
        if message["type"] == "RECORD":
            run.records.setdefault(message["stream"], []).append(message["record"])
        elif message["type"] == "STATE":
            run.states.append(message["value"])
    return run


def tap_config(emulator: StripeEmulator, **overrides: object) -> dict:
    """A config for the emulator: small pages and slices, so that every sync crosses many."""
    return {
        "api_key": TEST_KEY,
        "api_url": emulator.url,
        "start_date": START_DATE,
        "page_size": 25,
        "slice_days": 90,
        "retry_initial_wait_ms": 10,
        # Stripe's limits would make each run last seconds; the limiter has its own tests.
        "rate_limit_per_account": 1000,
        "rate_limit_per_endpoint": 1000,
        **overrides,
    }


@pytest.fixture
def run_tap(tmp_path: Path) -> Callable[..., TapRun]:
    """Runs `tap-stripe-dd` as users do: a process with --config and --state files."""
    counter = iter(range(1_000))

    def run(config: dict, state: dict | None = None, timeout: float = 120) -> TapRun:
        n = next(counter)
        config_path = tmp_path / f"config-{n}.json"
        config_path.write_text(json.dumps(config))
        command = [str(BIN / "tap-stripe-dd"), "--config", str(config_path)]
        if state is not None:
            state_path = tmp_path / f"state-{n}.json"
            state_path.write_text(json.dumps(state))
            command += ["--state", str(state_path)]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        return parse_messages(TapRun(result.returncode, result.stdout, result.stderr))

    return run


@pytest.fixture
def emulator() -> Iterator[StripeEmulator]:
    with StripeEmulator(seed=7, objects=300) as emulator:
        yield emulator


# The main job through Meltano: one isolated system database and warehouse per test.

ROOT = Path(__file__).resolve().parents[1]


def meltano(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Meltano writes each plugin's run files under .meltano/run/: one process at a time."""
    (ROOT / ".meltano").mkdir(exist_ok=True)
    with (ROOT / ".meltano" / "tests.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return subprocess.run(
            [str(BIN / "meltano"), *args], cwd=ROOT, env=env, capture_output=True, text=True
        )


@pytest.fixture(scope="session")
def meltano_installed() -> None:
    """Plugins are installed once into the project's .meltano/, as a user's first run does."""
    result = meltano("install")
    assert result.returncode == 0, result.stderr[-3000:]


@dataclass
class Warehouse:
    """One isolated Meltano system database, DuckDB file and log, for one test."""

    path: Path
    env: dict[str, str]

    def meltano(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = meltano(*args, env=self.env)
        if check:
            assert result.returncode == 0, result.stderr[-3000:]
        return result

    def run_job(self, check: bool = True) -> subprocess.CompletedProcess:
        return self.meltano("--environment", "dev", "run", "stripe-to-duckdb", check=check)

    def query(self, sql: str) -> list[tuple]:
        with duckdb.connect(str(self.path), read_only=True) as conn:
            return conn.execute(sql).fetchall()

    def ids(self, stream: str) -> list[str]:
        return [row[0] for row in self.query(f"SELECT id FROM mystripeapi.{stream}")]

    def bookmark(self, stream: str) -> str:
        state = json.loads(
            self.meltano("state", "get", "dev:tap-stripe-dd-to-target-duckdb").stdout
        )
        return state["singer_state"]["bookmarks"][stream]["replication_key_value"]


@pytest.fixture
def warehouse(tmp_path: Path, meltano_installed: None) -> Callable[..., Warehouse]:
    def make(emulator: StripeEmulator, **settings: str) -> Warehouse:
        env = os.environ | {
            "MELTANO_DATABASE_URI": f"sqlite:///{tmp_path}/meltano.db",
            "TAP_STRIPE_DD_API_URL": emulator.url,
            "TAP_STRIPE_DD_API_KEY": TEST_KEY,
            "TAP_STRIPE_DD_RETRY_INITIAL_WAIT_MS": "10",
            "TARGET_DUCKDB_PATH": str(tmp_path / "stripe.duckdb"),
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            **settings,
        }
        return Warehouse(tmp_path / "stripe.duckdb", env)

    return make
