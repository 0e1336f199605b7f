"""The tap's BATCH mode (`batch_config`, on in meltano.yml): records go to files, and a STATE
never confirms a record whose file has not been announced, so a kill between the two loses
nothing. The main job's tests (test_meltano.py, test_reliability.py) run in this mode end to end."""

from __future__ import annotations

import copy
import gzip
import json
import stat
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import STREAMS, TEST_KEY, tap_config
from tap_stripe_dd.client import to_rfc3339, to_unix
from tap_stripe_dd.tap import TapStripe


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
