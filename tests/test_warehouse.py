"""The warehouse between the loader and its readers: one per Meltano environment, and readers
(the query tool, an analyst's DuckDB session) that never block a sync, nor a sync them."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import threading
from pathlib import Path

import duckdb
import pytest

from conftest import BIN, ROOT, TEST_KEY, assert_warehouse_exact, meltano, meltano_lock
from tap_stripe_dd import loader
from tap_stripe_dd.query.warehouse import Location, resolve_db

STRIPE_DD = str(BIN / "stripe-dd")
# What this file's tests decide themselves, whatever the shell that runs them has set.
CHOICES = ("STRIPE_DD_DB", "MELTANO_ENVIRONMENT", "TARGET_DUCKDB_PATH")
SCHEMA = {
    "type": "SCHEMA",
    "stream": "charges",
    "key_properties": ["id"],
    "schema": {
        "type": "object",
        "properties": {"id": {"type": "string"}, "amount": {"type": "integer"}},
    },
}


def clean_env(**settings: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in CHOICES} | settings


def lines(first: int, count: int) -> str:
    """A SCHEMA, then charges ch_<first>… with a STATE after every ten, which the loader emits
    at its next flush (a batch is ten rows here)."""
    messages: list[dict] = [SCHEMA]
    for i in range(first, first + count):
        messages.append(
            {"type": "RECORD", "stream": "charges", "record": {"id": f"ch_{i}", "amount": i}}
        )
        if (i + 1 - first) % 10 == 0:
            messages.append({"type": "STATE", "value": {"bookmarks": {"charges": {"last": i}}}})
    return "".join(json.dumps(message) + "\n" for message in messages)


def start_loader(tmp_path: Path, db: Path) -> subprocess.Popen:
    config = tmp_path / "target.json"
    config.write_text(
        json.dumps({"path": str(db), "default_target_schema": "src", "batch_size_rows": 10})
    )
    return subprocess.Popen(
        [str(BIN / "target-duckdb-dd"), "--config", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def query(db: Path, sql: str = "SELECT count(*) FROM src.charges") -> subprocess.CompletedProcess:
    return subprocess.run(
        [STRIPE_DD, "query", sql, "--db", str(db), "--format", "csv"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def count(result: subprocess.CompletedProcess) -> int:
    assert result.returncode == 0, result.stderr
    return int(result.stdout.splitlines()[1].split(",")[0])


def test_readers_and_the_loader_never_block_each_other(tmp_path):
    db = tmp_path / "stripe.duckdb"
    first = start_loader(tmp_path, db)
    _, err = first.communicate(lines(0, 20), timeout=120)
    assert first.returncode == 0, err[-3000:]

    analyst = duckdb.connect(str(db), read_only=True)  # an analyst's session, left open
    assert analyst.execute("SELECT count(*) FROM src.charges").fetchone() == (20,)
    slow = "SELECT count(*), sum(hash(i)) FROM src.charges, range(2000000) t(i)"
    long_query = subprocess.Popen(
        [STRIPE_DD, "query", slow, "--db", str(db), "--format", "csv"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    second = start_loader(tmp_path, db)
    second.stdin.write(lines(20, 30))  # type: ignore[union-attr]
    second.stdin.flush()  # type: ignore[union-attr]  # and kept open: the sync goes on
    state = second.stdout.readline()  # type: ignore[union-attr]
    assert state, second.stderr.read()[-3000:]  # type: ignore[union-attr]
    # Mid-sync, rows committed: readers answer from the last published data.
    assert count(query(db)) == 20
    assert analyst.execute("SELECT count(*) FROM src.charges").fetchone() == (20,)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0 and "Traceback" not in err, err[-3000:]
    long_out, long_err = long_query.communicate(timeout=120)
    assert long_query.returncode == 0, long_err
    assert long_out.splitlines()[1].startswith(f"{20 * 2_000_000},")
    # After the sync: a new reader sees every row, the open session still its snapshot.
    assert count(query(db)) == 50
    assert analyst.execute("SELECT count(*) FROM src.charges").fetchone() == (20,)
    analyst.close()
    assert sorted(p.name for p in tmp_path.iterdir() if "stripe" in p.name) == [
        "stripe.duckdb",
        "stripe.duckdb.loader",
    ]


def test_a_long_sync_publishes_at_bounded_intervals(tmp_path, monkeypatch):
    db = tmp_path / "stripe.duckdb"
    working = duckdb.connect(str(loader.working_file(db)))
    publisher = loader.Publisher(working, db)
    working.execute("CREATE TABLE t AS SELECT 1 AS i")
    publisher.when_due()  # the run has just begun: nothing published yet
    assert not db.exists()
    monkeypatch.setattr(loader, "PUBLISH_EVERY", 0.0)
    publisher.due = 0.0
    publisher.when_due()
    working.execute("INSERT INTO t VALUES (2)")
    with duckdb.connect(str(db), read_only=True) as reader:
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (1,)
    publisher.publish()  # the end of the run
    with duckdb.connect(str(db), read_only=True) as reader:
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (2,)
    published = db.stat().st_mtime_ns
    publisher.publish()  # nothing new: no copy
    assert db.stat().st_mtime_ns == published
    working.close()


def test_rows_a_killed_run_loaded_are_published_by_the_next_run(tmp_path):
    db = tmp_path / "stripe.duckdb"
    first = start_loader(tmp_path, db)
    assert first.communicate(lines(0, 20), timeout=120)[0]
    killed = start_loader(tmp_path, db)
    killed.stdin.write(lines(20, 20))  # type: ignore[union-attr]
    killed.stdin.flush()  # type: ignore[union-attr]
    assert killed.stdout.readline()  # type: ignore[union-attr]  # the STATE Meltano saves
    killed.kill()
    killed.wait()
    assert count(query(db)) == 20  # not published: the run never ended
    nothing_new = start_loader(tmp_path, db)
    _, err = nothing_new.communicate(json.dumps(SCHEMA) + "\n", timeout=120)
    assert nothing_new.returncode == 0, err[-3000:]
    assert count(query(db)) == 40


def test_a_warehouse_from_before_gets_its_working_file(tmp_path):
    """A warehouse the loader wrote itself (before it had a working file) keeps its rows."""
    db = tmp_path / "stripe.duckdb"
    with duckdb.connect(str(db)) as old:
        old.execute("CREATE SCHEMA src; CREATE TABLE src.charges (amount BIGINT, id VARCHAR)")
        old.execute("INSERT INTO src.charges VALUES (7, 'ch_old')")
    proc = start_loader(tmp_path, db)
    _, err = proc.communicate(lines(0, 5), timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert count(query(db)) == 6


def test_the_loader_s_own_file_held_elsewhere_is_one_line(tmp_path):
    db = tmp_path / "stripe.duckdb"
    with duckdb.connect(f"{db}.loader"):  # someone opened the loader's file, not the published
        proc = start_loader(tmp_path, db)
        _, err = proc.communicate(lines(0, 5), timeout=120)
    assert proc.returncode == 1
    assert err == (
        f"target-duckdb: error: {db}.loader is open in another process: only the loader opens it "
        f"(readers: {db})\n"
    )


def test_a_publish_that_fails_is_one_line_and_loses_no_row(tmp_path):
    db = tmp_path / "stripe.duckdb"
    (db / "notes.txt").mkdir(parents=True)  # no file can take the published copy's place
    proc = start_loader(tmp_path, db)
    out, err = proc.communicate(lines(0, 20), timeout=120)
    assert proc.returncode == 1
    assert err.splitlines()[-1] == (
        f"target-duckdb: error: cannot publish {db} (Is a directory); it keeps its previous rows"
    )
    assert "Traceback" not in err
    assert not (tmp_path / "stripe.duckdb.publishing").exists()
    with duckdb.connect(f"{db}.loader", read_only=True) as working:
        assert working.execute("SELECT count(*) FROM src.charges").fetchone() == (20,)
    assert out  # the STATEs of the rows loaded were emitted: those rows are in the working file


def test_a_reader_during_meltano_run(emulator, warehouse):
    """A reader holding the warehouse open, querying all along, during the scheduled job."""
    wh = warehouse(emulator)
    wh.run_job()
    reader = duckdb.connect(str(wh.path), read_only=True)
    answers: list[int] = []
    done = threading.Event()

    def keep_querying() -> None:
        while not done.is_set():
            sql = "SELECT count(*) FROM mystripeapi.charges, range(200000)"
            answers.append(reader.execute(sql).fetchone()[0])

    thread = threading.Thread(target=keep_querying)
    thread.start()
    try:
        emulator.add_objects("charges", 10)
        result = wh.run_job(check=False)
    finally:
        done.set()
        thread.join()
    assert result.returncode == 0, result.stderr[-3000:]
    assert answers and set(answers) == {300 * 200000}
    reader.close()
    assert_warehouse_exact(wh, emulator)


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_each_environment_has_its_own_warehouse_and_the_query_tool_follows(
    meltano_installed, monkeypatch, environment
):
    result = meltano(
        "--environment", environment, "config", "print", "target-duckdb", env=clean_env()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    path = Path(json.loads(result.stdout)["path"])
    assert path == ROOT / "output" / environment / "stripe.duckdb"
    for name in CHOICES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(ROOT / "tap_stripe_dd")  # anywhere in the project
    assert resolve_db(None, environment) == Location(path, environment)
    monkeypatch.setenv("MELTANO_ENVIRONMENT", environment)
    assert resolve_db(None) == Location(path, environment)


def fake_project(root: Path, default: str) -> dict[str, Path]:
    (root / "meltano.yml").write_text(f"project_id: x\ndefault_environment: {default}\n")
    paths = {}
    for environment, rows in (("dev", 3), ("prod", 5)):
        paths[environment] = root / "output" / environment / "stripe.duckdb"
        paths[environment].parent.mkdir(parents=True)
        with duckdb.connect(str(paths[environment])) as con:
            con.execute(f"CREATE SCHEMA src; CREATE TABLE src.charges AS FROM range({rows})")
    return paths


@pytest.mark.parametrize(
    ("default", "args", "env", "expected"),
    [
        ("dev", [], {}, "dev"),
        ("prod", [], {}, "prod"),
        ("prod", ["--environment", "dev"], {}, "dev"),
        ("prod", [], {"MELTANO_ENVIRONMENT": "dev"}, "dev"),
        ("dev", ["--environment", "prod"], {"MELTANO_ENVIRONMENT": "dev"}, "prod"),
    ],
)
def test_the_query_tool_says_which_warehouse_it_reads(tmp_path, default, args, env, expected):
    paths = fake_project(tmp_path, default)
    proc = subprocess.run(
        [STRIPE_DD, "query", "SELECT count(*) AS n FROM src.charges", "--format", "csv", *args],
        cwd=tmp_path / "output",
        env=clean_env(**env),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"n\n{ {'dev': 3, 'prod': 5}[expected] }\n"
    assert proc.stderr == f"stripe-dd query: warehouse {paths[expected]} (environment {expected})\n"


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_the_missing_warehouse_hint_is_a_command_that_works(
    tmp_path, emulators, meltano_installed, environment
):
    """Every command the hint names, run as given from the project folder (the demo on fewer
    objects, and the sync against the emulator, the only differences), then the same query."""
    emulator = emulators(objects=20)
    env = clean_env(
        MELTANO_DATABASE_URI=f"sqlite:///{tmp_path}/meltano.db",
        MELTANO_SEND_ANONYMOUS_USAGE_STATS="false",
        TARGET_DUCKDB_PATH=str(tmp_path / "stripe.duckdb"),
    )
    ask = [
        STRIPE_DD,
        "query",
        "SELECT count(*) FROM mystripeapi.charges",
        "--environment",
        environment,
    ]
    missing = subprocess.run(ask, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 2, missing.stderr
    commands = re.findall(r"`([^`]+)`", missing.stderr.splitlines()[1])
    assert commands, missing.stderr
    for command in commands:
        words = shlex.split(command.replace("sk_…", TEST_KEY))
        settings = dict(word.split("=", 1) for word in words if re.fullmatch(r"[A-Z_]+=.*", word))
        argv = [word for word in words if word.split("=")[0] not in settings]
        if argv[:2] == ["stripe-dd", "demo"]:
            argv += ["--objects", "20"]
        else:  # a sync: Stripe's API is the emulator here
            settings["TAP_STRIPE_DD_API_URL"] = emulator.url
        assert argv[0] == "stripe-dd", command
        with meltano_lock():
            ran = subprocess.run(
                [str(BIN / argv[0]), *argv[1:]],
                cwd=ROOT,
                env=env | settings,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        assert ran.returncode == 0, (command, ran.stdout[-2000:], ran.stderr[-3000:])
    answered = subprocess.run(ask, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.splitlines()[2].strip() == "20"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--objects", "-1"], "--objects takes a whole number from 1 to 1,000,000, not '-1'"),
        (["--objects", "0"], "--objects takes a whole number from 1 to 1,000,000, not '0'"),
        (["--objects", "abc"], "--objects takes a whole number from 1 to 1,000,000, not 'abc'"),
        (["--objects", "2e6"], "--objects takes a whole number from 1 to 1,000,000, not '2e6'"),
        (["--objects", "10000000"], "--objects takes a whole number from 1 to 1,000,000, not "),
        (["--seed", "x"], "--seed takes a whole number, not 'x'"),
        (["--seed", "1.5"], "--seed takes a whole number, not '1.5'"),
    ],
)
def test_the_demo_refuses_nonsense_in_one_line(argv, message):
    proc = subprocess.run(
        [STRIPE_DD, "demo", *argv],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.startswith(f"stripe-dd demo: error: {message}")
    assert proc.stderr.count("\n") == 1
