"""Shared fixtures: an emulator on loopback, and the real tap run as a process against it."""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path

import duckdb
import pytest

from tap_stripe_dd.emulator import StripeEmulator
from tap_stripe_dd.postgres import Server, postgres_server
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

    def entry(self, stream: str) -> dict:
        return self.state.get("bookmarks", {}).get(stream, {})

    def bookmark(self, stream: str) -> str | None:
        return self.entry(stream).get("replication_key_value")


def parse_messages(run: TapRun) -> TapRun:
    for line in run.stdout.splitlines():
        message = json.loads(line)
        if message["type"] == "RECORD":
            run.records.setdefault(message["stream"], []).append(message["record"])
        elif message["type"] == "STATE":
            run.states.append(message["value"])
    return run


# Small pages and slices, so that every sync crosses many; Stripe's limits would make each run
# last seconds (the limiter has its own tests).
TEST_TUNING = {
    "page_size": 25,
    "slice_days": 90,
    "rate_limit_per_account": 1000,
    "rate_limit_per_endpoint": 1000,
}


def tap_config(emulator: StripeEmulator, **overrides: object) -> dict:
    """A config for the emulator, tuned for tests."""
    return {
        "api_key": TEST_KEY,
        "api_url": emulator.url,
        "start_date": START_DATE,
        "retry_initial_wait_ms": 10,
        **TEST_TUNING,
        **overrides,
    }


def meltano_env(key: str) -> dict[str, str]:
    """Settings for `warehouse(...)`: a test file's own key (a leak found is that file's), the
    tests' tuning, no lookback (a resumed run re-reads nothing before its bookmark, so an
    off-by-one would show) and small batches."""
    tuning = {f"TAP_STRIPE_DD_{name.upper()}": str(value) for name, value in TEST_TUNING.items()}
    return {
        "TAP_STRIPE_DD_API_KEY": key,
        **tuning,
        "TAP_STRIPE_DD_LOOKBACK_SECONDS": "0",
        "TARGET_DUCKDB_BATCH_SIZE_ROWS": "200",
    }


@pytest.fixture
def emulators() -> Iterator[Callable[..., StripeEmulator]]:
    """Emulators shaped per scenario (size, latency, faults, key), all stopped afterwards."""
    started: list[StripeEmulator] = []

    def make(**options: object) -> StripeEmulator:
        # The data set of 2024-2025 that these scenarios' figures assume (the default ends now).
        defaults = {"seed": 11, "created_to": 1_767_225_599}
        emulator = StripeEmulator(**{**defaults, **options}).start()  # type: ignore[arg-type]
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def run_tap(tmp_path: Path) -> Callable[..., TapRun]:
    """Runs `tap-stripe-dd` as users do: a process with --config and --state files."""
    counter = iter(range(1_000))

    def run(
        config: dict,
        state: dict | None = None,
        timeout: float = 120,
        catalog: dict | None = None,
    ) -> TapRun:
        n = next(counter)
        config_path = tmp_path / f"config-{n}.json"
        config_path.write_text(json.dumps(config))
        command = [str(BIN / "tap-stripe-dd"), "--config", str(config_path)]
        for flag, document in (("--state", state), ("--catalog", catalog)):
            if document is not None:
                path = tmp_path / f"{flag[2:]}-{n}.json"
                path.write_text(json.dumps(document))
                command += [flag, str(path)]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        return parse_messages(TapRun(result.returncode, result.stdout, result.stderr))

    return run


@pytest.fixture
def emulator() -> Iterator[StripeEmulator]:
    # acct_1Emulated: the connected account test_tap's header test names.
    with StripeEmulator(seed=7, objects=300, accounts=["acct_1Emulated"]) as emulator:
        yield emulator


# The main job through Meltano: one isolated system database and warehouse per test.

ROOT = Path(__file__).resolve().parents[1]


def meltano(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Meltano writes each plugin's run files under .meltano/run/: one process at a time."""
    with meltano_lock():
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


# Reliability helpers (tests/test_reliability.py, tests/test_soak.py).

SECRET_PIECE = 5
"""Stripe shows the last four characters of a key; any five in a row are a leak."""


def secret_pieces(key: str) -> set[str]:
    """Every run of `SECRET_PIECE` characters of the key's secret part (after `sk_test_`)."""
    secret = re.sub(r"^(?:sk|rk|pk)_(?:test|live)_", "", key)
    return {secret[i : i + SECRET_PIECE] for i in range(len(secret) - SECRET_PIECE + 1)}


def _readable(item: object) -> Iterator[tuple[str, bytes]]:
    """(label, bytes) of whatever a test hands over: text, a run, a file, a folder, a warehouse.

    A DuckDB file is read table by table too, since its strings are stored compressed; a SQLite
    file (Meltano's system database) is read with its write-ahead log."""
    if isinstance(item, bytes):
        yield "bytes", item
    elif isinstance(item, str):
        yield "text", item.encode()
    elif isinstance(item, (TapRun, subprocess.CompletedProcess)):
        yield "stdout", str(item.stdout or "").encode()
        yield "stderr", str(item.stderr or "").encode()
    elif isinstance(item, Path):
        if item.is_dir():
            for path in sorted(item.rglob("*")):
                if path.is_file():
                    yield from _readable(path)
            return
        for path in sorted(item.parent.glob(glob_escape(item.name) + "*")):
            if path.is_file():  # the file itself and its -wal / -shm / .wal siblings
                yield str(path), path.read_bytes()
        if item.suffix == ".duckdb" and item.is_file():
            with duckdb.connect(str(item), read_only=True) as conn:
                tables = conn.execute("SELECT schema_name, table_name FROM duckdb_tables()")
                for schema, table in tables.fetchall():
                    rows = conn.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()
                    yield f"{item}:{schema}.{table}", repr(rows).encode()
    else:
        yield type(item).__name__, json.dumps(item, default=str).encode()


def assert_no_secret(key: str, *items: object) -> None:
    """No more of `key` than its last four characters in any output, state, log or warehouse."""
    pieces = [piece.encode() for piece in secret_pieces(key)]
    assert pieces, "a key too short to check"
    checked = 0
    for item in items:
        for label, data in _readable(item):
            checked += 1
            leaked = [piece.decode() for piece in pieces if piece in data]
            assert not leaked, f"the API key leaked into {label}: {leaked[:3]}"
    assert checked, "nothing was checked for the key"


_meltano_lock_held = False


@contextmanager
def meltano_lock() -> Iterator[None]:
    """The lock `meltano()` takes, for a Meltano process a test starts itself (and may kill).
    Reentrant, so that a test can keep it across helpers that take it too (a kill, then what
    runs next), and no other test touches .meltano/run/ in between."""
    global _meltano_lock_held
    if _meltano_lock_held:
        yield
        return
    (ROOT / ".meltano").mkdir(exist_ok=True)
    with (ROOT / ".meltano" / "tests.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _meltano_lock_held = True
        try:
            yield
        finally:
            _meltano_lock_held = False


def start_meltano(
    *args: str, env: dict[str, str], log: Path, program: str = "meltano", umask: int = -1
) -> subprocess.Popen:
    """`meltano ARGS` (or `program ARGS`, e.g. `stripe-dd sync`, which runs Meltano) in its own
    process group (so that killing the group kills the tap and the target too), output to `log`,
    not a pipe that nobody reads, with `umask` if given. Call it under `meltano_lock()`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(BIN / program), *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=umask,
        )


def group_members(pgid: int) -> list[tuple[int, str]]:
    """Live (not zombie) processes of a process group, with their command lines."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        state, _, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            members.append((int(entry.name), command))
    return members


def kill_group(proc: subprocess.Popen, who: str = "group", *, gone_ok: bool = False) -> bool:
    """SIGKILL the whole process group, or only its `tap-stripe-dd` or `target-duckdb` process,
    then wait for the run to end. With `gone_ok`, a process that already ended is no error (the
    tap ends before the target, which still loads its last batch files): returns False then."""
    if who == "group":
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        for pid, command in group_members(proc.pid):
            program = command.split(" ")[1:2]  # python <script>: the script names the plugin
            if program and Path(program[0]).name.startswith(who):
                os.kill(pid, signal.SIGKILL)
                break
        else:
            assert gone_ok, f"no {who} process to kill in {group_members(proc.pid)}"
            proc.wait(timeout=60)
            return False
    proc.wait(timeout=60)
    return True


def saved_state(meltano_db: Path) -> dict:
    """The Meltano state of the job (complete merged with partial), read while Meltano may run;
    {} before Meltano saved any."""
    try:
        with sqlite3.connect(f"file:{meltano_db}?mode=ro", uri=True, timeout=5) as conn:
            rows = conn.execute("SELECT completed_state, partial_state FROM state").fetchall()
    except sqlite3.Error:
        return {}
    state: dict = {}
    for completed, partial in rows:
        for part in (completed, partial):
            bookmarks = json.loads(part or "{}").get("singer_state", {}).get("bookmarks", {})
            state.setdefault("bookmarks", {}).update(bookmarks)
    return state


RUN_JOB = ("--environment", "dev", "run", "stripe-to-duckdb")


def assert_warehouse_exact(wh: Warehouse, emulator: StripeEmulator) -> None:
    """DuckDB holds each listed object exactly once: count(*) == count(distinct id) == listed."""
    for stream in STREAMS:
        ((rows, distinct),) = wh.query(
            f"SELECT count(*), count(DISTINCT id) FROM mystripeapi.{stream}"
        )
        expected = emulator.ids(stream)
        assert rows == distinct, f"{stream}: {rows - distinct} duplicate rows"
        assert sorted(wh.ids(stream)) == sorted(expected), f"{stream}: ids differ"
        assert rows == len(expected)


@dataclass
class Killed:
    """A `meltano run` killed at some point, and what Meltano had saved by then."""

    returncode: int
    output: str
    state: dict
    leftovers: list[Path]  # files the run left in .meltano/run/ and .meltano/batches/
    killed: bool = True  # False: the run ended before the kill point (allowed with `force`)


def mentions(path: Path, *needles: str) -> bool:
    text = path.read_text(errors="ignore")
    return any(needle in text for needle in needles)


def kill_meltano_run(
    wh: Warehouse,
    emulator: StripeEmulator,
    when: Callable[[], bool],
    who: str = "group",
    *,
    force: bool = False,
    timeout: float = 120,
) -> Killed:
    """Starts the job (`--force`: past a stale job), SIGKILLs `who` ("group", "tap-stripe-dd",
    "target-duckdb") once `when()`, and checks that no process of the group survives. With
    `force`, the run may also end before the kill point (a soak's last attempts may finish), or
    `who` before it (the tap, while the target loads the last batch files)."""
    run_dir, batch_dir = ROOT / ".meltano" / "run", ROOT / ".meltano" / "batches"
    log = wh.path.with_name(f"killed-meltano-{time.monotonic_ns()}.log")
    args = (*RUN_JOB[:3], "--force", RUN_JOB[3]) if force else RUN_JOB
    killed = True
    with meltano_lock():
        before = set(run_dir.rglob("*")) | set(batch_dir.rglob("*"))
        proc = start_meltano(*args, env=wh.env, log=log)
        try:
            deadline = time.monotonic() + timeout
            while killed and not when():
                if proc.poll() is not None:
                    assert force, f"the run ended before the kill point: {log.read_text()[-2000:]}"
                    killed = False
                assert time.monotonic() < deadline, "the kill point never came"
                time.sleep(0.01)
            if killed:
                killed = kill_group(proc, who, gone_ok=force)
            survivors = wait_for_group_to_end(proc.pid)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        new = sorted(p for p in set(run_dir.rglob("*")) - before if p.is_file())
        # Read under the lock: a `stripe-dd sync` (tests/test_sync.py) removes leftovers. Batch
        # files written meanwhile are this run's: Meltano runs one at a time under the lock.
        ours = [p for p in new if mentions(p, emulator.url, str(wh.path.parent))]
        ours += sorted(p for p in set(batch_dir.rglob("*")) - before if p.is_file())
    assert not survivors, f"processes outlived the kill: {survivors}"
    state = saved_state(wh.path.with_name("meltano.db"))
    return Killed(proc.returncode, log.read_text(), state, ours, killed)


def fetching(wh: Warehouse, emulator: StripeEmulator) -> bool:
    return bool(emulator.request_log)


def kill_first_run(
    emulators: Callable[..., StripeEmulator],
    warehouse: Callable[..., Warehouse],
    when: Callable[[Warehouse, StripeEmulator], bool],
    env: dict[str, str],
    **options: object,
) -> tuple[Warehouse, StripeEmulator, Killed]:
    """A user's first `meltano run` of the job, its whole process group killed once `when`."""
    emulator = emulators(**options)
    wh = warehouse(emulator, **env)
    return wh, emulator, kill_meltano_run(wh, emulator, lambda: when(wh, emulator))


def wait_for_group_to_end(pgid: int, seconds: float = 10) -> list[tuple[int, str]]:
    """SIGKILL is delivered asynchronously: give the group a moment before calling survivors."""
    deadline = time.monotonic() + seconds
    while (members := group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return members


def remove_files(paths: Iterable[Path]) -> None:
    """Run files a killed Meltano left behind (one holds the key): not left in the repo."""
    for path in paths:
        path.unlink(missing_ok=True)


@contextmanager
def read_only_folder(folder: Path) -> Iterator[Path]:
    """`folder`, with what it holds, made read-only for the processes a test starts: by its
    mode for a plain user; for root, whom modes do not stop, as a read-only tmpfs mounted over
    it (skipped where root may not mount)."""
    if os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in [folder, *folder.rglob("*")]}
        for path in modes:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield folder
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    copy = folder.with_name(folder.name + ".copy")
    folder.rename(copy)
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(folder)], check=False).returncode:
        folder.rmdir()
        copy.rename(folder)
        pytest.skip("root may not mount here: no read-only folder to test with")
    try:
        subprocess.run(["cp", "-a", f"{copy}/.", str(folder)], check=True)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
        folder.rmdir()
        copy.rename(folder)


def file_size_limit(size: int) -> Callable[[], None]:
    """A `preexec_fn`: as on a full disk, no file the process writes grows past `size` bytes
    (writes fail with EFBIG, Python ignoring SIGXFSZ). Needs no privilege."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


# PostgreSQL (tests/test_postgres.py, tests/test_accounts.py, tests/test_orchestration.py): one
# private server per test process, a fresh database per test.


DATABASES = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Server]:
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_database(postgres: Server) -> Callable[[str], str]:
    """`pg_database("warehouse")`: the URI of a new empty database, this test's own."""

    def make(name: str) -> str:
        return postgres.create_database(f"{name}_{next(DATABASES)}")

    return make


def pg_meltano_env(emulator: StripeEmulator, warehouse: str, system: str) -> dict[str, str]:
    """`meltano run stripe-to-postgres` into `warehouse`, Meltano's state in `system`."""
    driver = "postgresql+psycopg://"
    return os.environ | {
        **meltano_env(TEST_KEY),
        "MELTANO_DATABASE_URI": system.replace("postgresql://", driver),
        "TAP_STRIPE_DD_API_URL": emulator.url,
        "TAP_STRIPE_DD_RETRY_INITIAL_WAIT_MS": "10",
        "TARGET_POSTGRES_SQLALCHEMY_URL": warehouse.replace("postgresql://", driver),
        "TARGET_POSTGRES_BATCH_SIZE_ROWS": "200",
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
