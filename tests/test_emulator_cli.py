"""`stripe-dd emulator` as a real process: URL first, serving, clean stops, one-line errors."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_emulator import NOW, RESOURCES, pages, walk

from tap_stripe_dd.emulator import StripeEmulator

STRIPE_DD = str(Path(sys.executable).parent / "stripe-dd")
JANUARY_2023 = (1_672_531_200, 1_675_209_599)


class Url:
    """A stand-in for StripeEmulator where only the URL is known: what `walk` needs."""

    def __init__(self, url: str) -> None:
        self.url = url


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_prints_its_url_first_serves_and_stops_cleanly(signum):
    command = [STRIPE_DD, "emulator", "--port", "0", "--seed", "3", "--objects", "40",
               "--created-from", "2023-01-01", "--created-to", "2023-01-31"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(30, process.kill)  # a hung emulator fails the test, not the run
    watchdog.start()
    try:
        url = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), url
        created = [o["created"] for o in walk(Url(url), "customers", limit=15)]
        assert len(created) == 40
        assert all(JANUARY_2023[0] <= c <= JANUARY_2023[1] for c in created)
        process.send_signal(signum)
        assert process.wait(timeout=10) == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        watchdog.cancel()
        process.kill()
        process.communicate()


def test_prewarm_builds_before_the_url_and_serves_the_same_bytes():
    command = [STRIPE_DD, "emulator", "--port", "0", "--seed", "3", "--objects", "50",
               "--prewarm", "--cache-size", "10", "--now", str(NOW)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(30, process.kill)
    watchdog.start()
    try:
        url = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), url
        with StripeEmulator(seed=3, objects=50, now=NOW) as built:
            for resource in RESOURCES:
                assert pages(Url(url), resource) == pages(built, resource)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        stdout, stderr = process.communicate()
        assert stdout == "" and "built in" in stderr and "Traceback" not in stderr
    finally:
        watchdog.cancel()
        process.kill()
        process.communicate()


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # a process that ended while we looked
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(
    sys.platform != "linux" or (os.cpu_count() or 1) < 2, reason="prewarms in one process"
)
def test_prewarm_workers_die_with_an_emulator_killed_while_prewarming():
    command = [STRIPE_DD, "emulator", "--port", "0", "--objects", "30000", "--prewarm"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 20
        while not (workers := children(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert workers, "no worker processes"
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=10)  # the workers hold the pipes open too
        assert stdout == ""
    finally:
        for pid in (process.pid, *workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.communicate()


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [STRIPE_DD, "emulator", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--faults", "boom=0.1"], "unknown fault kind 'boom'"),
        (["--faults", "500=0.7,502=0.7"], "add up to more than 1"),
        (["--created-from", "2025-01-01", "--created-to", "2024-01-01"], "must not be after"),
        (["--api-key", "hunter2"], "api_key must look like"),
        (["--objects", "-5"], "must not be negative"),
        (["--cache-size", "-1"], "cache_size must not be negative"),
        (["--port", "99999"], "port must be 0 to 65535"),
        (["--port", "-1"], "port must be 0 to 65535"),
        (["--port", "http"], "argument --port: invalid int value"),
        (["--objects", "many"], "argument --objects: invalid int value"),
        (["--activity", "-1"], "activity must be 0 to 3600"),
        (["--activity", "1000000"], "activity must be 0 to 3600"),
        (["--accounts", "-2"], "accounts must be 0 to 10000"),
        (["--events-lag", "-1"], "events_lag must not be negative"),
        (["--account-api-version", "latest"], "API version must look like 2024-06-20"),
        (["--now", "-5"], "now must be a Unix time"),
        (["--latency-ms", "-1"], "must not be negative"),
    ],
)
def test_bad_settings_are_one_line_errors(args, message):
    result = run("--port", "0", *args)
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("stripe-dd emulator: error: ") and message in line


def test_a_bad_date_is_a_usage_error():
    result = run("--created-from", "2025-13-45")
    assert result.returncode == 2 and "is not YYYY-MM-DD or a Unix time" in result.stderr


def test_a_busy_port_is_a_one_line_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run("--port", str(busy.getsockname()[1]))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("stripe-dd emulator: error: cannot listen on 127.0.0.1:")
