"""The tap against the emulator over HTTP: completeness, schemas, filters, state and errors."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.singerlib import RecordMessage, StateMessage

from conftest import STREAMS, TEST_KEY, tap_config
from tap_stripe_dd.client import STRIPE_EPOCH, schemas_dir, to_unix
from tap_stripe_dd.emulator import StripeEmulator
from tap_stripe_dd.emulator.server import LogEntry
from tap_stripe_dd.records import to_rfc3339
from tap_stripe_dd.tap import StripeWriter


@pytest.fixture
def full_run(emulator, run_tap):
    run = run_tap(tap_config(emulator))
    assert run.returncode == 0, run.stderr
    return run


@pytest.mark.parametrize("stream", STREAMS)
def test_full_sync_emits_every_object_exactly_once(emulator, full_run, stream):
    ids = full_run.ids(stream)
    assert Counter(ids).most_common(1)[0][1] == 1, "an object was emitted twice"
    assert sorted(ids) == sorted(emulator.ids(stream))


def test_sync_crosses_pages_slices_and_same_second_clusters(emulator, full_run):
    created = Counter(record["created"] for record in full_run.records["charges"])
    assert max(created.values()) > 25, "no same-second cluster larger than a page"
    pages = [e for e in emulator.request_log if e.path == "/v1/charges"]
    assert sum("starting_after" in e.params for e in pages) > 5
    assert len({e.params["created[gte]"] for e in pages}) > 3, "fewer slices than expected"


@pytest.mark.parametrize("stream", STREAMS)
def test_records_match_their_schema(full_run, stream):
    schema = json.loads((schemas_dir() / f"{stream}.json").read_text())
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    for record in full_run.records[stream]:
        validator.validate(record)
        assert record["created"].endswith("Z")


def test_state_marks_each_completed_slice(emulator, full_run):
    bookmarks = [
        state["bookmarks"]["charges"]["replication_key_value"]
        for state in full_run.states
        if "replication_key_value" in state.get("bookmarks", {}).get("charges", {})
    ]
    assert len(bookmarks) > 3 and bookmarks == sorted(bookmarks)
    assert to_unix(bookmarks[-1]) >= max(to_unix(r["created"]) for r in full_run.records["charges"])


# Filters: each is sent as Stripe expects, and the result is exactly what Stripe would list.

FIELD_FILTERS = [
    ("balance_transactions", "type"),
    ("balance_transactions", "currency"),
    ("balance_transactions", "source"),
    ("charges", "customer"),
    ("charges", "payment_intent"),
    ("charges", "transfer_group"),
    ("customers", "email"),
    ("disputes", "charge"),
    ("disputes", "payment_intent"),
    ("payouts", "status"),
    ("payouts", "destination"),
    ("refunds", "charge"),
    ("refunds", "payment_intent"),
]


@pytest.mark.parametrize(("stream", "name"), FIELD_FILTERS)
def test_filter_is_sent_and_honoured(emulator, run_tap, stream, name):
    value = next(obj[name] for obj in emulator.objects(stream) if obj.get(name))
    run = run_tap(tap_config(emulator, filters={stream: {name: value}}))
    assert run.returncode == 0, run.stderr
    sent = [e.params.get(name) for e in emulator.request_log if e.path == f"/v1/{stream}"]
    assert sent and set(sent) == {value}
    expected = [obj["id"] for obj in emulator.objects(stream) if obj.get(name) == value]
    assert sorted(run.ids(stream)) == sorted(expected)


def test_payout_filter_lists_that_payouts_balance_transactions(emulator, run_tap):
    payout = next(iter(emulator.ids("payouts")))
    run = run_tap(tap_config(emulator, filters={"balance_transactions": {"payout": payout}}))
    assert run.returncode == 0, run.stderr
    log = [e for e in emulator.request_log if e.path == "/v1/balance_transactions"]
    assert {e.params.get("payout") for e in log} == {payout}
    assert set(run.ids("balance_transactions")) < set(emulator.ids("balance_transactions"))


def test_arrival_date_range_filter(emulator, run_tap):
    dates = sorted(obj["arrival_date"] for obj in emulator.objects("payouts"))
    low, high = dates[len(dates) // 4], dates[3 * len(dates) // 4]
    filters = {"payouts": {"arrival_date": {"gte": low, "lt": high}}}
    run = run_tap(tap_config(emulator, filters=filters))
    assert run.returncode == 0, run.stderr
    expected = [o["id"] for o in emulator.objects("payouts") if low <= o["arrival_date"] < high]
    assert sorted(run.ids("payouts")) == sorted(expected)
    log = [e for e in emulator.request_log if e.path == "/v1/payouts"]
    assert all(e.params["arrival_date[gte]"] == str(low) for e in log)


def test_customer_currency_is_filtered_by_the_tap(emulator, run_tap):
    currency = next(c["currency"] for c in emulator.objects("customers") if c.get("currency"))
    run = run_tap(tap_config(emulator, filters={"customers": {"currency": currency}}))
    assert run.returncode == 0, run.stderr
    assert all("currency" not in e.params for e in emulator.request_log)
    expected = [c["id"] for c in emulator.objects("customers") if c.get("currency") == currency]
    assert expected and sorted(run.ids("customers")) == sorted(expected)


# Incremental runs.


def test_second_run_reads_only_the_lookback_window_and_the_new_objects(emulator, run_tap):
    config = tap_config(emulator, lookback_seconds=600)
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    # Created a second ago: the run ends at the second it starts, exclusive.
    new_ids = emulator.add_objects("charges", 40, created=int(time.time()) - 1)
    emulator.clear_log()
    second = run_tap(config, state=first.state)
    assert second.returncode == 0, second.stderr
    assert set(new_ids) <= set(second.ids("charges"))
    for stream in STREAMS:
        bookmark = to_unix(first.bookmark(stream))
        # Balance transactions are re-read from the oldest still pending (changes.py).
        pending = first.state["bookmarks"][stream].get("pending_from")
        start = min(bookmark - 600, to_unix(pending)) if pending else bookmark - 600
        log = [e for e in emulator.request_log if e.path == f"/v1/{stream}"]
        assert min(int(e.params["created[gte]"]) for e in log) == start
    old = set(first.ids("charges"))
    assert len(set(second.ids("charges")) & old) < 5, "the second run re-read old history"


def test_the_first_pages_are_asked_for_while_the_clock_is_read(emulator, run_tap):
    """Two round trips less before a one-account run is sliced: each stream's newest page, and
    the first of its oldest step (the window is years long), are asked for while Stripe's clock
    (the window's end) is read, here held up for 4 s."""
    emulator.script_fault("/v1/events", nth=1, kind="slow", seconds=4)
    config = tap_config(emulator)
    run = ThreadPoolExecutor(1).submit(run_tap, config)
    first_request(emulator, "/v1/charges", run, count=2)
    clock = first_request(emulator, "/v1/events", run)
    assert clock.status is None, "a first page was asked for only once the clock had answered"
    start, step = to_unix(config["start_date"]), config["slice_days"] * 86_400
    asked = [
        (int(e.params["created[gte]"]), e.params.get("created[lt]"))
        for e in emulator.request_log
        if e.path == "/v1/charges"
    ]
    assert set(asked[:2]) == {(start, None), (start, str(start + step))}, asked[:2]
    assert run.result().returncode == 0, run.result().stderr[-2000:]
    assert sorted(run.result().ids("charges")) == sorted(emulator.ids("charges"))


def test_a_window_from_stripes_opening_spends_no_probe_on_its_oldest_step(emulator, run_tap):
    """No start_date: history from 2011, where no account's begins, so its first step is not
    asked for (it is with a start_date, above); where history does begin is found all the same."""
    config = {k: v for k, v in tap_config(emulator).items() if k != "start_date"}
    run = run_tap(config)
    assert run.returncode == 0, run.stderr[-2000:]
    oldest_step = str(STRIPE_EPOCH + config["slice_days"] * 86_400)
    asked = [e.params for e in emulator.request_log if e.path == "/v1/charges"]
    assert not [p for p in asked if p.get("created[lt]") == oldest_step], asked
    assert sorted(run.ids("charges")) == sorted(emulator.ids("charges"))


def first_request(emulator: StripeEmulator, path: str, run: Future, count: int = 1) -> LogEntry:
    """The first request to `path` in the log, once there are `count`."""

    def entries() -> list[LogEntry]:
        return [e for e in emulator.request_log if e.path == path]

    until(lambda: len(entries()) >= count, run, f"no request to {path}")
    return entries()[0]


def until(done: Callable[[], bool], run: Future, failure: str) -> None:
    """Waits for `done` while the tap `run` runs, 30 s at most."""
    deadline = time.monotonic() + 30
    while not done():
        assert time.monotonic() < deadline and not run.done(), failure
        time.sleep(0.01)


def test_a_head_asked_for_early_keeps_to_the_windows_end(emulator, run_tap):
    """The head, asked for without an upper bound, is answered after the clock (held up here
    while charges are created): what it lists from the window's end on is the next run's."""
    emulator.script_fault("/v1/charges", nth=1, kind="slow", seconds=3)
    run = ThreadPoolExecutor(1).submit(run_tap, tap_config(emulator))
    head = first_request(emulator, "/v1/charges", run)
    clock = first_request(emulator, "/v1/events", run)
    until(lambda: clock.status is not None, run, "the clock never answered")
    assert head.status is None, "the head was answered before charges were created"
    late = set(emulator.add_objects("charges", 5))
    first = run.result()
    assert first.returncode == 0, first.stderr[-2000:]
    end = to_unix(first.bookmark("charges"))
    created = {o["id"]: o["created"] for o in emulator.objects("charges")}
    assert all(created[i] >= end for i in late)
    assert sorted(first.ids("charges")) == sorted(set(emulator.ids("charges")) - late)
    second = run_tap(tap_config(emulator), state=first.state)
    assert late <= set(second.ids("charges"))


def test_state_from_a_bookmark_in_the_future_is_refused(emulator, run_tap):
    state = {"bookmarks": {"charges": {"replication_key_value": "2999-01-01T00:00:00Z"}}}
    run = run_tap(tap_config(emulator), state=state)
    assert run.returncode == 2
    assert "in the future" in run.stderr and "Traceback" not in run.stderr
    assert not run.records.get("charges")


# Errors from the API: one line that names the problem, never the key.


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("401", "API key was rejected"),
        ("403", "lacks a permission"),
        ("404", "HTTP 404"),
    ],
)
def test_api_errors_stop_the_run_with_a_clear_message(emulator, run_tap, kind, expected):
    emulator.script_fault("/v1/balance_transactions", nth=1, kind=kind)
    run = run_tap(tap_config(emulator))
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("tap-stripe-dd: error:") and expected in last
    assert "Traceback" not in run.stderr
    assert TEST_KEY[8:] not in run.stderr + run.stdout


def test_wrong_key_is_reported_without_echoing_it(run_tap):
    with StripeEmulator(seed=1, objects=10, api_key="sk_test_theRightKey123456") as emulator:
        run = run_tap(tap_config(emulator))
    assert run.returncode == 1
    assert "API key was rejected" in run.stderr
    assert TEST_KEY[8:] not in run.stderr + run.stdout


@pytest.mark.parametrize("kind", ["500", "503", "429", "drop", "truncate", "nonjson"])
def test_transient_faults_are_retried_to_a_complete_sync(emulator, run_tap, kind):
    emulator.script_fault("/v1/charges", nth=2, kind=kind, count=3)
    run = run_tap(tap_config(emulator))
    assert run.returncode == 0, run.stderr
    assert sorted(run.ids("charges")) == sorted(emulator.ids("charges"))
    assert "Backing off" in run.stderr


def test_should_retry_false_is_not_retried(emulator, run_tap):
    emulator.script_fault("/v1/charges", nth=1, kind="503", should_retry=False)
    run = run_tap(tap_config(emulator, max_concurrency=1))
    assert run.returncode == 1
    assert most_tries(emulator, "/v1/charges") == 1


def most_tries(emulator: StripeEmulator, path: str) -> int:
    """How often the request to `path` tried most was sent (a run asks for a few at once)."""
    asked = Counter(tuple(sorted(e.params.items())) for e in emulator.request_log if e.path == path)
    return max(asked.values())


def test_a_fault_outlasting_max_retries_fails_clearly(emulator, run_tap):
    emulator.script_fault("/v1/charges", nth=1, kind="nonjson", count=50)
    run = run_tap(tap_config(emulator, max_retries=2, max_concurrency=1))
    assert run.returncode == 1
    assert "not JSON" in run.stderr.strip().splitlines()[-1]
    assert most_tries(emulator, "/v1/charges") == 3


def test_headers_pin_the_version_and_never_log_the_key(emulators, run_tap):
    emulator = emulators(objects=50, accounts=["acct_1Emulated"])
    run = run_tap(tap_config(emulator, account_id="acct_1Emulated", stripe_version="2024-06-20"))
    assert run.returncode == 0, run.stderr
    headers = emulator.request_log[0].headers
    assert headers["Stripe-Version"] == "2024-06-20"
    assert headers["Stripe-Account"] == "acct_1Emulated"
    assert TEST_KEY[8:] not in run.stdout + run.stderr


def test_records_are_written_as_the_sdks_own_record_messages(capsysbinary):
    """The fast path (no deselection, no stream map) writes the very lines the SDK writes."""
    records = list(StripeEmulator(seed=3, objects=5).objects("charges"))
    extracted = datetime.now(timezone.utc)
    writer = StripeWriter()
    for record in records:
        writer.write_message(RecordMessage("charges", record, time_extracted=extracted))
    sdk_lines = capsysbinary.readouterr().out
    writer.write_records("charges", records, extracted)
    assert capsysbinary.readouterr().out == sdk_lines
    state = StateMessage({"bookmarks": {"charges": {"replication_key_value": None}}})
    writer.write_message(state)  # without the SDK's copy of the state, the SDK's line
    assert capsysbinary.readouterr().out == MsgSpecWriter().serialize_message(state)
    assert [json.loads(line)["record"]["id"] for line in sdk_lines.splitlines()] == [
        record["id"] for record in records
    ]


def test_stream_maps_apply_through_the_sdks_path(emulator, run_tap):
    maps = {"charges": {"amount_doubled": "amount * 2", "metadata": "__NULL__"}}
    run = run_tap(tap_config(emulator, stream_maps=maps))
    assert run.returncode == 0, run.stderr
    charges = run.records["charges"]
    assert sorted(c["id"] for c in charges) == sorted(emulator.ids("charges"))
    assert all(c["amount_doubled"] == 2 * c["amount"] and "metadata" not in c for c in charges)
    assert all("metadata" in refund for refund in run.records["refunds"])


@settings(max_examples=2_000, deadline=None)  # a timing on a shared machine is no check
@given(st.integers(min_value=-(10**10), max_value=10**10))
def test_unix_times_format_as_strftime_formats_them(unix):
    assert to_rfc3339(unix) == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def test_the_environments_proxy_and_no_proxy_are_honoured(emulator, run_tap, monkeypatch):
    """Each connection's session reads HTTP(S)_PROXY and NO_PROXY once: a proxy that refuses
    connections fails the run in one line; the API named in NO_PROXY is reached directly."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    for name in ("NO_PROXY", "no_proxy", "http_proxy", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    config = tap_config(emulator, max_retries=1)
    refused = run_tap(config)
    assert refused.returncode != 0 and not refused.records
    assert "Traceback" not in refused.stderr
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = run_tap(config)
    assert direct.returncode == 0, direct.stderr[-2000:]
    assert direct.records


def test_a_state_goes_out_only_when_it_changed(emulator, run_tap):
    """The SDK asks for a STATE at many points (each page, each stream's end); one equal to
    the last one written is not written again."""
    run = run_tap(tap_config(emulator, account_ids="all", lookback_seconds=0))
    assert run.returncode == 0, run.stderr
    assert len(run.states) > 3
    assert all(a != b for a, b in zip(run.states, run.states[1:], strict=False))
