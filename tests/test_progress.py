"""What a run prints: a readable line per stream every few seconds and a summary, instead of
the SDK's METRIC JSON, a line per empty slice and an ERROR line per handled retry."""

from __future__ import annotations

import logging

import pytest
import requests
from singer_sdk.exceptions import RetriableAPIError

from conftest import STREAMS, tap_config
from tap_stripe_dd.progress import Progress


def test_a_normal_run_prints_a_few_readable_lines(emulator, run_tap):
    run = run_tap(tap_config(emulator))
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stderr.strip().splitlines()
    assert not [line for line in lines if "METRIC" in line or "Pagination stopped" in line]
    for stream in STREAMS:
        assert any(f"| {stream}: 300 objects, " in line for line in lines), stream
    assert "done: 1,800 objects from 6 streams" in lines[-1]
    assert len(lines) < 30, f"{len(lines)} lines for 1,800 objects"


def test_machine_metrics_are_a_setting_away(emulator, run_tap):
    run = run_tap(tap_config(emulator, log_metrics=True))
    assert run.returncode == 0, run.stderr[-2000:]
    assert '"metric":"record_count"' in run.stderr
    assert '"metric":"http_request_duration"' in run.stderr
    assert "done: 1,800 objects from 6 streams" in run.stderr


def test_handled_retries_are_counted_not_errors(emulator, run_tap):
    emulator.script_fault("/v1/charges", nth=2, kind="429", count=2)
    emulator.script_fault("/v1/refunds", nth=2, kind="503", count=1)
    run = run_tap(tap_config(emulator))
    assert run.returncode == 0, run.stderr[-2000:]
    assert "| ERROR " not in run.stderr
    assert "charges: 300 objects" in run.stderr and "2 rate-limit waits" in run.stderr
    assert "refunds: 300 objects" in run.stderr and "1 retry" in run.stderr


def test_running_streams_report_every_few_seconds(emulators, run_tap):
    emulator = emulators(objects=200, latency_ms=150)  # 9 requests a stream: over 1.3 s
    run = run_tap(tap_config(emulator, progress_seconds=0.3, max_concurrency=1))
    assert run.returncode == 0, run.stderr[-2000:]
    charges = [line for line in run.stderr.splitlines() if "| charges: " in line]
    assert len(charges) >= 3, charges  # a few while it ran, one in the summary
    # The fetch loop tells as it goes: objects and slices left while the stream still runs.
    assert "request" in charges[0]
    assert any(" objects, " in line and " left in " in line for line in charges[:-1]), charges


@pytest.mark.parametrize(("status", "counter"), [(429, "rate_limit_waits"), (503, "retries")])
def test_backoff_handler_counts_by_status(status, counter):
    response = requests.Response()
    response.status_code = status
    progress = Progress(logging.getLogger("test"), log_metrics=False)
    progress.backoff_handler("charges", {"exception": RetriableAPIError("x", response)})
    counts = progress.stream("charges")
    assert (counts.rate_limit_waits, counts.retries) == (
        counter == "rate_limit_waits",
        counter == "retries",
    )


def test_what_the_fetch_loop_tells_shows_at_once():
    """The SDK counts records each minute; a fetch loop that tells is shown live."""
    progress = Progress(logging.getLogger("test"), log_metrics=False)
    for _ in range(3):
        progress.requested("charges")
        progress.fetched("charges", 100)
    progress.count_slices("charges", lambda: 1)
    assert (
        progress.stream("charges")
        .line()
        .startswith("charges: 300 objects, 3 requests, 1 slice left in ")
    )
