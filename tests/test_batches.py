"""The tap's BATCH mode (`batch_config`, on in meltano.yml): records go to files, and a STATE
never confirms a record whose file has not been announced, so a kill between the two loses
nothing. The main job's tests (test_meltano.py, test_reliability.py) run in this mode end to end."""

from __future__ import annotations

import copy
import gzip
import json
import os
import stat
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import duckdb
import pytest
from singer_sdk.helpers._batch import BatchConfig

from conftest import (
    ROOT,
    RUN_JOB,
    STREAMS,
    TEST_KEY,
    Warehouse,
    assert_warehouse_exact,
    file_size_limit,
    kill_first_run,
    meltano_env,
    meltano_lock,
    read_only_folder,
    remove_files,
    tap_config,
)
from tap_stripe_dd.batches import BatchRun, RunClaims, run_of
from tap_stripe_dd.client import to_unix
from tap_stripe_dd.emulator import StripeEmulator
from tap_stripe_dd.records import to_rfc3339
from tap_stripe_dd.sync import BATCH_FILES
from tap_stripe_dd.tap import TapStripe

BIN = Path(sys.executable).parent


def batch_run(emulator, run_tap, folder: Path, compression: str) -> list[dict]:
    encoding = {"format": "jsonl", "compression": compression}
    config = tap_config(
        emulator, batch_config={"encoding": encoding, "storage": {"root": str(folder)}}
    )
    run = run_tap(config)
    assert run.returncode == 0, run.stderr
    assert not run.records, "RECORD messages in BATCH mode"
    return [json.loads(line) for line in run.stdout.splitlines()]


def read_batch(url: str) -> list[dict]:
    path = Path(urlparse(url).path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "rt") as file:
        return [json.loads(line) for line in file]


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_every_object_is_in_exactly_one_file_announced_before_its_state(
    emulator, run_tap, tmp_path, compression
):
    messages = batch_run(emulator, run_tap, tmp_path / "batches", compression)
    announced: dict[str, list[dict]] = {stream: [] for stream in STREAMS}
    checked = 0
    for message in messages:
        if message["type"] == "BATCH":
            for url in message["manifest"]:
                announced[message["stream"]] += read_batch(url)
        elif message["type"] == "STATE":
            for stream, entry in message["value"]["bookmarks"].items():
                if "replication_key_value" not in entry:
                    continue
                bookmark = to_unix(entry["replication_key_value"])
                covered = {o["id"] for o in emulator.objects(stream) if o["created"] < bookmark}
                assert covered <= {r["id"] for r in announced[stream]}, (
                    f"a STATE confirms {stream} records of no announced file"
                )
                checked += 1
    assert checked > 10
    for stream in STREAMS:
        ids = [record["id"] for record in announced[stream]]
        assert Counter(ids).most_common(1)[0][1] == 1, "an object was written twice"
        assert sorted(ids) == sorted(emulator.ids(stream))
        assert all(record["created"].endswith("Z") for record in announced[stream])


def test_batch_files_are_the_owners_only_and_hold_no_key(emulator, run_tap, tmp_path):
    batch_run(emulator, run_tap, tmp_path / "batches", "none")
    files = list((tmp_path / "batches").iterdir())
    assert len(files) >= len(STREAMS)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert TEST_KEY[8:] not in path.read_text()


def catalog_without(config: dict, stream: str, field: str) -> dict:
    """The tap's own catalog, with one stream selected and one of its properties deselected."""
    catalog = copy.deepcopy(TapStripe(config=config).catalog_dict)
    for entry in catalog["streams"]:
        for meta in entry["metadata"]:
            if meta["breadcrumb"] == []:
                meta["metadata"]["selected"] = entry["tap_stream_id"] == stream
            elif meta["breadcrumb"] == ["properties", field]:
                meta["metadata"]["selected"] = False
    return catalog


@pytest.mark.parametrize("mode", ["records", "batch"])
def test_a_deselected_property_is_left_out(emulator, run_tap, tmp_path, mode):
    config = tap_config(emulator)
    catalog = catalog_without(config, "charges", "metadata")
    if mode == "batch":
        root = str(tmp_path / "batches")
        config["batch_config"] = {"encoding": {"format": "jsonl"}, "storage": {"root": root}}
    run = run_tap(config, catalog=catalog)
    assert run.returncode == 0, run.stderr
    if mode == "batch":
        files = [json.loads(line) for line in run.stdout.splitlines()]
        urls = [url for m in files if m["type"] == "BATCH" for url in m["manifest"]]
        records = [record for url in urls for record in read_batch(url)]
    else:
        records = run.records["charges"]
    assert sorted(record["id"] for record in records) == sorted(emulator.ids("charges"))
    assert all("metadata" not in record and "amount" in record for record in records)
    assert set(run.records) <= {"charges"}


def test_records_of_a_window_that_never_moves_the_bookmark_are_announced(
    emulator, run_tap, tmp_path
):
    """A re-read that ends before the bookmark (`end_date` inside the lookback) sends no new
    STATE: its file is still closed and announced, at the end."""
    bookmark = sorted(o["created"] for o in emulator.objects("charges"))[200]
    day = 86_400
    window = (bookmark - 90 * day, bookmark - 30 * day)
    batches = {"encoding": {"format": "jsonl"}, "storage": {"root": str(tmp_path / "batches")}}
    config = tap_config(
        emulator, end_date=to_rfc3339(window[1]), lookback_seconds=90 * day, batch_config=batches
    )
    value = {"replication_key": "created", "replication_key_value": to_rfc3339(bookmark)}
    value["changes_swept_to"] = to_rfc3339(int(emulator.now()))  # else the 30-day rule re-reads
    run = run_tap(config, state={"bookmarks": {"charges": value}})
    assert run.returncode == 0, run.stderr
    messages = [json.loads(line) for line in run.stdout.splitlines()]
    urls = [
        u
        for m in messages
        if m["type"] == "BATCH" and m["stream"] == "charges"
        for u in m["manifest"]
    ]
    expected = {
        o["id"] for o in emulator.objects("charges") if window[0] <= o["created"] < window[1]
    }
    assert expected, "an empty window would prove nothing"
    assert {record["id"] for url in urls for record in read_batch(url)} == expected
    assert run.bookmark("charges") == to_rfc3339(bookmark), "the bookmark moved back"


def batch_config_dict(folder: Path) -> dict:
    return {"encoding": {"format": "jsonl"}, "storage": {"root": folder.as_uri()}}


def batch_config(folder: Path) -> BatchConfig:
    return BatchConfig.from_dict(batch_config_dict(folder))


def test_a_run_removes_the_files_of_dead_runs_only(tmp_path):
    """Files of a run whose lock nobody holds (killed with -9) go when the next run starts; a
    live run's stay, and so do those of a run whose tap has gone while its loader reads."""
    config = batch_config(tmp_path)
    live, reading, dead = (BatchRun(config, "tap-stripe-dd") for _ in range(3))
    files = {}
    for name, run in (("live", live), ("reading", reading), ("dead", dead)):
        batch = run.file("charges")
        batch.write([{"id": f"ch_{name}"}])
        files[name] = Path(urlparse(batch.close()).path)
    claims = RunClaims()
    claims.claim(files["reading"])
    os.close(reading._lock)  # its tap ended; its loader still holds the run
    os.close(dead._lock)  # as the kernel does for a process killed with -9
    legacy = tmp_path / "tap-stripe-dd--refunds-0123abcd-1.jsonl"  # an earlier version's file
    legacy.write_text('{"id": "re_1"}\n')
    BatchRun(config, "tap-stripe-dd")
    assert files["live"].exists() and files["reading"].exists()
    assert not files["dead"].exists() and not legacy.exists()
    assert not run_of(files["dead"]).exists()
    claims.release(discard=False)
    assert not files["reading"].exists() and not run_of(files["reading"]).exists()


def test_a_run_with_nothing_new_leaves_no_lock_file(emulators, run_tap, tmp_path):
    """No file written, no loader will claim the run: the tap removes its lock file itself,
    which the next run (and `stripe-dd sync`) would take for a killed run's. The data ends a
    year ago: no balance transaction is still pending (those are read again at every run)."""
    emulator = emulators(objects=300)
    folder = tmp_path / "batches"
    config = tap_config(emulator, batch_config=batch_config_dict(folder), lookback_seconds=0)
    first = run_tap(config)
    assert first.returncode == 0, first.stderr
    locks = list(folder.glob("*.lock"))
    assert len(locks) == 1, "a run that wrote files keeps its lock for its loader"
    remove_files([*folder.iterdir()])  # as its loader does
    second = run_tap(config, state=first.state)
    assert second.returncode == 0, second.stderr
    assert not any('"type":"BATCH"' in line for line in second.stdout.splitlines())
    assert list(folder.iterdir()) == []


def test_the_loader_removes_the_run_once_its_exiting_tap_lets_go(tmp_path):
    """The loader reads a run's last file while its tap is still exiting: the lock file goes
    with the tap, not left for the next run to take for a killed run's."""
    run = BatchRun(batch_config(tmp_path), "tap-stripe-dd")
    batch = run.file("charges")
    batch.write([{"id": "ch_1"}])
    path = Path(urlparse(batch.close()).path)
    claims = RunClaims()
    claims.claim(path)
    threading.Timer(0.3, os.close, [run._lock]).start()  # the tap's process ends
    claims.release(discard=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_next_plain_run_removes_the_batch_files_a_killed_run_left(emulators, warehouse):
    """`kill -9` of a plain `meltano run` while the tap writes a batch file: the next run (here
    with --force, past the job Meltano keeps RUNNING) deletes it and loads every object once."""
    batches = ROOT / BATCH_FILES

    def writing(wh: Warehouse, emulator: StripeEmulator) -> bool:
        return any(path.suffix == ".jsonl" for path in batches.glob("*"))

    with meltano_lock():
        wh, emulator, killed = kill_first_run(
            emulators, warehouse, writing, meltano_env(TEST_KEY), objects=600, latency_ms=50
        )
        left = [path for path in killed.leftovers if path.parent == batches]
        try:
            assert any(path.suffix == ".jsonl" for path in left), killed.leftovers
            wh.meltano(*RUN_JOB[:3], "--force", RUN_JOB[3])
            still = [path for path in left if path.exists()]
        finally:
            remove_files(killed.leftovers)
    assert not still, f"the killed run's batch files are still there: {still}"
    assert_warehouse_exact(wh, emulator)


def run_tap_limited(config: dict, tmp_path: Path, **options: Any) -> subprocess.CompletedProcess:
    """The tap as a process, with `subprocess.run` options (a file size limit)."""
    config_file = tmp_path / "tap.json"
    config_file.write_text(json.dumps(config))
    command = [str(BIN / "tap-stripe-dd"), "--config", str(config_file)]
    return subprocess.run(command, capture_output=True, text=True, check=False, **options)


def assert_tap_failed_in_one_line(result: subprocess.CompletedProcess, folder: Path) -> str:
    """Exit 1, the folder and the system's reason in one line; left in the folder, if
    anything, only files announced before a STATE (never one that was being written)."""
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"tap-stripe-dd: error: cannot write batch files in {folder}: "), last
    messages = [json.loads(line) for line in result.stdout.splitlines()]
    announced = {
        Path(urlparse(url).path).name
        for message in messages
        if message["type"] == "BATCH"
        for url in message["manifest"]
    }
    left = {path.name for path in folder.glob("*.jsonl")} if folder.is_dir() else set()
    assert left <= announced, f"files written but never announced: {left - announced}"
    return last


def test_an_unwritable_batch_folder_fails_in_one_line(emulator, tmp_path):
    parent = tmp_path / "locked"
    parent.mkdir()
    with read_only_folder(parent):
        config = tap_config(emulator, batch_config=batch_config_dict(parent / "batches"))
        result = run_tap_limited(config, tmp_path)
    last = assert_tap_failed_in_one_line(result, parent / "batches")
    assert last.endswith(("Read-only file system", "Permission denied")), last


def test_a_full_disk_fails_in_one_line_and_leaves_no_unannounced_file(emulator, tmp_path):
    folder = tmp_path / "batches"
    config = tap_config(emulator, batch_config=batch_config_dict(folder))
    result = run_tap_limited(config, tmp_path, preexec_fn=file_size_limit(40_000))
    assert assert_tap_failed_in_one_line(result, folder).endswith("File too large")


# Stream maps and flattening: batch files hold exactly the records RECORD messages would.

STREAM_MAPS = {
    "customers": {"email": "md5(email) if email else None"},
    "refunds": "__NULL__",
    "small_charges": {"__source__": "charges", "id": "id", "amount": "amount", "__else__": None},
    "payouts": {"__alias__": "paid_out"},
}


def load(messages: str, db: Path, tmp_path: Path) -> dict[str, list[tuple]]:
    """The tap's output loaded by the project's loader; every table's columns and rows."""
    config = tmp_path / f"{db.stem}.json"
    config.write_text(json.dumps({"path": str(db), "default_target_schema": "src"}))
    loaded = subprocess.run(
        [str(BIN / "target-duckdb-dd"), "--config", str(config)],
        input=messages,
        capture_output=True,
        text=True,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    with duckdb.connect(str(db), read_only=True) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'src'"
        ).fetchall()
        return {
            table: [
                tuple(column[0] for column in conn.execute(f"DESCRIBE src.{table}").fetchall()),
                *sorted(conn.execute(f"SELECT * FROM src.{table}").fetchall(), key=repr),
            ]
            for (table,) in tables
        }


def test_batch_files_hold_the_records_of_stream_maps_and_flattening(emulator, run_tap, tmp_path):
    """Both ways load identical tables under maps (a hashed column, a dropped stream, an alias
    of a stream, a renamed stream) and flattening."""
    config = tap_config(
        emulator, stream_maps=STREAM_MAPS, flattening_enabled=True, flattening_max_depth=1
    )
    tables = {}
    for mode in ("records", "batch"):
        if mode == "batch":
            config["batch_config"] = batch_config_dict(tmp_path / "batches")
        run = run_tap(config)
        assert run.returncode == 0, run.stderr[-3000:]
        assert (mode == "batch") == ('"type":"BATCH"' in run.stdout.replace(" ", ""))
        tables[mode] = load(run.stdout, tmp_path / f"{mode}.duckdb", tmp_path)
    records = tables["records"]
    assert set(records) == {
        "balance_transactions",
        "charges",
        "customers",
        "disputes",
        "paid_out",
        "small_charges",
    }
    customers = records["customers"]
    emails = [row[customers[0].index("email")] for row in customers[1:]]
    assert any(emails) and all(email is None or len(email) == 32 for email in emails)
    assert set(records["small_charges"][0]) == {"id", "amount", "_sdc_extra"}
    charges = records["charges"]
    assert "outcome__type" in charges[0]
    assert any(row[charges[0].index("outcome__type")] for row in charges[1:])
    for table, rows in records.items():
        assert tables["batch"].get(table) == rows, f"{table}: batch mode loads other rows"
    assert tables["batch"].keys() == records.keys()
