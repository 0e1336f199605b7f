"""P5 (issue #11): an incremental run that captures changes spread over the six resources,
under Stripe's live limits and 200 ms of latency, against the fewest requests that can.

The fewest requests are counted per stream, from the emulator's own event log and data:
its events' pages (100 events a request: no other way tells what changed), one request per
changed object created before the previous run (a re-read by id; a list call returns 100
objects, but changed objects are spread over all of history, so listing them costs more),
its new objects' pages (at least one request: the created scan), and for balance
transactions, which change without events, the pages from the oldest one still pending at
the previous run; plus one for the run's clock. The time bound is the slowest limit they
meet: all of them at the account's 100/s, or one endpoint's at its 25/s (each resource's
list and re-reads count as one endpoint, as on Stripe, events as another).

The emulator runs in this process (its clock, writes and log), frozen: time moves when the
benchmark moves it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from bench.harness import DATA_FROM, LIVE_KEY, STREAMS, Row, last_state, run_tap
from tap_stripe_dd.emulator import StripeEmulator
from tap_stripe_dd.streams import STREAM_TYPES

DAY = 86_400


def p5_changes(objects: int, changes: int, workdir: Path) -> list[Row]:
    data = {"created_from": DATA_FROM, "prewarm": True}  # up to now: lifecycles under way
    settings = {"api_key": LIVE_KEY, "window": {}}
    activity = changes // 100  # acts an hour: new objects, and lifecycles of recent ones
    with StripeEmulator(
        seed=11,
        objects=objects,
        latency_ms=200,
        rate_limit="live",
        frozen=True,
        activity=activity,
        **data,
    ) as emu:
        output = workdir / "p5.jsonl"
        run_tap(emu.url, STREAMS, workdir, output, **settings)
        state = last_state(output)
        before = int(emu.now())
        pending = [t["id"] for t in emu.current("balance_transactions") if t["status"] == "pending"]
        change(emu, changes * 4 // 5)  # with the lifecycles of 3 days: about `changes`
        emu.advance(3 * DAY)  # refunds succeed, payouts are paid, balances become available
        fewest, changed = fewest_requests(emu, before, set(pending))
        emu.clear_log()
        run = run_tap(emu.url, STREAMS, workdir, output, state=state, **settings)
        captured = captured_ids(output)
        missed = sum(len(changed[s] - captured[s]) for s in STREAMS)
        requests = Counter(resource(entry.path) for entry in emu.request_log)
        bound = max(sum(fewest.values()) / 100, *(count / 25 for count in fewest.values()))
        total = sum(len(changed[s]) for s in STREAMS)
        rows = [
            Row(
                f"P5 incremental run capturing {total:,} changes: wall ÷ rate-limit bound",
                run["seconds"] / bound,
                "≤ 1.5",
                f"bound {bound:.1f} s from the {sum(fewest.values()):,} fewest requests "
                f"({', '.join(f'{s} {n}' for s, n in fewest.items())}); took "
                f"{run['seconds']:.1f} s, {sum(requests.values()):,} requests; "
                f"changed: {', '.join(f'{s} {len(changed[s])}' for s in STREAMS)}; "
                f"missed {missed}",
            ),
            Row(
                "P5 requests ÷ fewest",
                sum(requests.values()) / sum(fewest.values()),
                "≈ 1",
                ", ".join(f"{s} {requests[s]}/{fewest[s]}" for s in fewest),
            ),
        ]
    return [*rows, nothing_new(objects, workdir)]


def nothing_new(objects: int, workdir: Path) -> Row:
    """The same account without activity: a run after one that read everything."""
    data = {"created_from": DATA_FROM, "prewarm": True}
    with StripeEmulator(seed=11, objects=objects, latency_ms=200, frozen=True, **data) as emu:
        output = workdir / "p5-quiet.jsonl"
        run_tap(emu.url, STREAMS, workdir, output, api_key=LIVE_KEY, window={})
        emu.advance(2)
        emu.clear_log()
        state = last_state(output)
        run_tap(emu.url, STREAMS, workdir, output, api_key=LIVE_KEY, window={}, state=state)
        quiet = Counter(resource(entry.path) for entry in emu.request_log)
    return Row(
        "P5 incremental run with nothing new: requests a stream",
        sum(quiet.values()) / len(STREAMS),  # events included
        "a handful",
        ", ".join(f"{s} {quiet[s]}" for s in (*STREAMS, "events")) + " (1 of them the clock)",
    )


def change(emu: StripeEmulator, changes: int) -> None:
    """`changes` writes, a third each to customers, charges and disputes, on objects of all
    ages (every n-th one listed); pending payouts are canceled."""
    share = changes // 3
    writes = {
        "customers": lambda i: ("POST", f"/v1/customers/{i}", {"name": "Renamed"}),
        "charges": lambda i: ("POST", f"/v1/charges/{i}", {"description": "Changed"}),
        "disputes": lambda i: ("POST", f"/v1/disputes/{i}", {"metadata[case]": "42"}),
    }
    for resource_name, write in writes.items():
        ids = emu.ids(resource_name)
        step = max(1, len(ids) // share)
        for object_id in ids[::step][:share]:
            emu.write(*write(object_id))
    for payout in emu.current("payouts"):
        if payout["status"] == "pending":
            emu.write("POST", f"/v1/payouts/{payout['id']}/cancel")


def fewest_requests(
    emu: StripeEmulator, before: int, pending: set[str]
) -> tuple[dict[str, int], dict[str, set[str]]]:
    """Per stream: the fewest requests that capture its changes (see the module docstring),
    and the ids changed."""
    created = {s: {o["id"]: o["created"] for o in emu.current(s)} for s in STREAMS}
    events: Counter[str] = Counter()
    changed: dict[str, set[str]] = {s: set() for s in STREAMS}
    for event in emu.events():
        if event["created"] < before:
            continue
        obj = event["data"]["object"]
        for stream in STREAM_TYPES:  # the events the tap asks for: no lower bound can skip them
            field = dict(stream.touched_by).get(event["type"])
            if event["type"] not in stream.event_types and not field:
                continue
            events[stream.name] += 1
            object_id = obj[field] if field else obj["id"]
            if created[stream.name].get(object_id, before) < before:
                changed[stream.name].add(object_id)
    now_pending = {t["id"] for t in emu.current("balance_transactions") if t["status"] == "pending"}
    changed["balance_transactions"] = pending - now_pending
    oldest = min((created["balance_transactions"][i] for i in pending), default=before)
    fewest = {"events": sum(math.ceil(events[s] / 100) or 1 for s in STREAMS[1:])}
    for stream in STREAMS:
        new = sum(1 for c in created[stream].values() if c >= before)
        fewest[stream] = len(changed[stream]) + max(1, math.ceil(new / 100))
    rescan = sum(1 for c in created["balance_transactions"].values() if c >= oldest)
    fewest["balance_transactions"] = max(1, math.ceil(rescan / 100))
    fewest["events"] += 1  # the run's clock
    return fewest, changed


def captured_ids(output: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {s: set() for s in STREAMS}
    for line in output.read_bytes().splitlines():
        message = json.loads(line)
        if message["type"] == "RECORD":
            found[message["stream"]].add(message["record"]["id"])
    return found


def resource(path: str) -> str:
    """`/v1/charges/ch_1` -> charges, as Stripe's per-endpoint limit counts it."""
    return path.split("/")[2]
