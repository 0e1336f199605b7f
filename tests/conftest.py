"""Shared fixtures: an emulator on loopback, and the real tap run as a process against it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

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
