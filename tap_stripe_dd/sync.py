"""`stripe-dd sync`: `meltano run stripe-to-duckdb` that is safe to start after a crash, from
cron, a systemd timer or by hand.

A `meltano run` killed with -9 (a crash, the OOM killer) leaves things behind: its job marked
RUNNING in Meltano's system database, so that the next plain run is refused for five minutes,
the run's config files in .meltano/run/, the tap's with the API key in it, and batch files the
loader had not read yet in .meltano/batches/. A sync holds an exclusive lock for its whole run.
Holding it proves that no other sync of the project runs, so a job marked RUNNING whose
heartbeat stopped is a dead run (the sync passes `--force`), and files already in those two
folders are dead runs' (the sync deletes them). Meltano runs with umask 077, so that the files
it writes, the key's included, are the owner's only.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
import typing as t
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tap_stripe_dd.demo import project_root
from tap_stripe_dd.errors import UserError

BIN = Path(sys.executable).parent
LOCK = Path(".meltano") / "stripe-dd-sync.lock"
RUN_FILES = Path(".meltano") / "run"
BATCH_FILES = Path(".meltano") / "batches"  # meltano.yml's batch_config root
# What a killed run leaves: its plugins' config files, and batch files the loader never read.
LEFTOVERS = {RUN_FILES: "*/*.config.json", BATCH_FILES: "*"}
EX_TEMPFAIL = 75  # sysexits.h: a temporary failure, try again later
# Meltano records a heartbeat every second, so a job silent for this long has no process left.
# Meltano itself waits five minutes, since it cannot know that no other run is going.
SILENT = timedelta(seconds=5)
# A SIGTERM that reached this process alone reaches Meltano this much later (see stop_with).
FORWARD_AFTER = 0.5

Heartbeats = Callable[[], list[datetime]]


class SyncBusy(UserError):
    """Another run has the project: nothing was done, and a later attempt will go ahead."""

    exit_code = EX_TEMPFAIL


def log(message: str) -> None:
    print(f"stripe-dd sync: {message}", file=sys.stderr, flush=True)


@contextmanager
def sync_lock(root: Path) -> Iterator[int]:
    """The project's sync lock, taken at once or not at all; yields its file descriptor."""
    path = root / LOCK
    path.parent.mkdir(exist_ok=True)
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            msg = f"another stripe-dd sync of this project is running ({LOCK} is locked)"
            raise SyncBusy(msg) from None
        yield lock.fileno()


class RunningJobs:
    """The jobs marked RUNNING in the system database Meltano would use (through Meltano's own
    settings and models, so `MELTANO_DATABASE_URI`, .env and environments all count), those of
    one shard only with `state_id_suffix` (tap_stripe_dd/orchestration.py). Whatever stops the
    reading also stops `meltano run`, which says what it is: then no job is reported here."""

    def __init__(self, root: Path, environment: str | None, state_id_suffix: str = "") -> None:
        from meltano.cli.cli import detect_selected_environment
        from meltano.core.db import project_engine
        from meltano.core.error import Error
        from meltano.core.project import Project
        from sqlalchemy.exc import SQLAlchemyError

        self._sessions: Callable | None = None
        logging.disable(logging.INFO)  # Meltano's lines (project, environment) come from its run
        try:
            project = Project(root)
            selected, _ = detect_selected_environment(
                cli_environment=environment, cli_no_environment=False, project=project
            )
            if selected:
                project.activate_environment(selected)
            _, self._sessions = project_engine(project)
        except (Error, SQLAlchemyError):
            pass
        self._suffix = state_id_suffix

    def _jobs(self, session: t.Any) -> list:
        from meltano.core.job import Job, State

        jobs = session.query(Job).filter(Job.state == State.RUNNING)
        if self._suffix:
            jobs = jobs.filter(Job.job_name.endswith(self._suffix))
        return jobs.all()

    def heartbeats(self) -> list[datetime]:
        """The last heartbeat (or start) of each job marked RUNNING."""
        from sqlalchemy.exc import SQLAlchemyError

        if self._sessions is None:
            return []
        try:
            with self._sessions() as session:
                return [job.last_heartbeat_at or job.started_at for job in self._jobs(session)]
        except SQLAlchemyError:  # no tables yet: the project's first run
            return []

    def fail_silent(self) -> None:
        """Marks the jobs whose heartbeat stopped as failed, as Meltano does with a stale job
        (after five minutes): else the run forced past them leaves them RUNNING, and every
        later sync says so again."""
        assert self._sessions is not None, "only called once dead jobs were found"
        now = datetime.now(timezone.utc)
        with self._sessions() as session:
            for job in self._jobs(session):
                if now - (job.last_heartbeat_at or job.started_at) >= SILENT:
                    job.fail(error="killed: no heartbeat (marked failed by stripe-dd sync)")
            session.commit()


def dead_jobs(heartbeats: Heartbeats) -> int:
    """How many jobs are marked RUNNING with no process left. Waits while one of them may have
    died a moment ago; one that keeps beating is a `meltano run` started without the lock (by
    hand, or by Meltano's scheduler), and is left alone."""
    deadline = time.monotonic() + 2 * SILENT.total_seconds()
    while True:
        beats = heartbeats()
        now = datetime.now(timezone.utc)
        if all(now - beat >= SILENT for beat in beats):
            return len(beats)
        if time.monotonic() > deadline:
            msg = "a `meltano run` started without stripe-dd sync is running in this project"
            raise SyncBusy(msg)
        time.sleep(0.5)


def remove_leftovers(root: Path) -> int:
    """Deletes the files that dead runs left (a run deletes its own as it goes and when it
    ends); returns how many. Their content (the API key, Stripe data) is never read."""
    leftovers = [
        path for folder, files in LEFTOVERS.items() for path in (root / folder).glob(files)
    ]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


def run(args: argparse.Namespace) -> int:
    root = project_root(Path.cwd())
    meltano = BIN / "meltano"
    if not meltano.is_file():
        msg = f"{meltano} not found: install the project with `pip install -e '.[dev]'`"
        raise UserError(msg)
    os.umask(0o077)  # before the lock file, so that everything this run creates is the owner's
    with sync_lock(root) as lock:
        jobs = RunningJobs(root, args.environment)
        dead = dead_jobs(jobs.heartbeats)
        if dead:
            jobs.fail_silent()
            log(
                f"{dead} killed run(s) still marked RUNNING in Meltano's system database: "
                "marked failed, running with --force (a plain `meltano run` is refused for "
                "5 minutes)"
            )
        if removed := remove_leftovers(root):
            places = " and ".join(f"{folder}/" for folder in LEFTOVERS)
            log(f"removed {removed} file(s) that killed runs left in {places}")
        command = [
            str(meltano),
            *(("--environment", args.environment) if args.environment else ()),
            "run",
            *(("--force",) if dead else ()),
            args.job,
            *args.meltano_args,
        ]
        # Meltano gets the lock too: were this process killed alone, it would stay held until
        # Meltano ends.
        with subprocess.Popen(command, cwd=root, pass_fds=(lock,)) as meltano_run:
            stopped_by = stop_with(meltano_run)
            returncode = meltano_run.wait()
    if stopped_by and returncode:  # Meltano says 1 after Ctrl-C: say which signal stopped it
        return 128 + stopped_by[0]
    return returncode if returncode >= 0 else 128 - returncode  # killed by a signal: as a shell


def told_to_stop(pid: int) -> bool:
    """Whether a plugin of the Meltano process `pid` is stopping already: the tap and the loader
    ignore stop signals once they got one (see signals.py)."""
    for entry in Path("/proc").glob("[0-9]*/status"):
        try:
            status = dict(line.split(":\t", 1) for line in entry.read_text().splitlines())
        except (OSError, ValueError):
            continue
        if status.get("PPid", "").strip() == str(pid):
            ignored = int(status.get("SigIgn", "0"), 16)
            if ignored & (1 << (signal.SIGTERM - 1)):
                return True
    return False


def stop_with(meltano_run: subprocess.Popen) -> list[int]:
    """SIGINT and SIGTERM stop the run, and are noted (the returned list). Ctrl-C reaches
    Meltano as well (the terminal's whole process group), so does `systemctl stop` (the
    service's control group); `docker stop` signals only the container's first process, this
    one, and so does a `kill` of it: then the SIGTERM is passed on. A second one would cut
    Meltano's own stopping short (it stops waiting for its plugins), so it is passed on only
    if, a moment later, no plugin is stopping. Meltano stops its plugins; this waits for it."""
    received: list[int] = []

    def note(signum: int, frame: object) -> None:
        received.append(signum)
        if signum == signal.SIGTERM and len(received) == 1:
            time.sleep(FORWARD_AFTER)
            if not told_to_stop(meltano_run.pid):
                meltano_run.send_signal(signal.SIGTERM)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, note)
    return received


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sync",
        help="meltano run, safe after a crash (for cron)",
        description="Runs `meltano run JOB` in the project folder, one sync at a time, past a "
        "killed run's RUNNING job and key file. Exit code: Meltano's, or 75 when another sync "
        "or `meltano run` has the project (nothing was done).",
    )
    parser.add_argument("--environment", help="Meltano environment (default: Meltano's)")
    parser.add_argument("--job", default="stripe-to-duckdb", help="the Meltano job to run")
    parser.add_argument(
        "meltano_args",
        nargs="*",
        metavar="-- MELTANO_RUN_ARG",
        help="more `meltano run` arguments, after --, e.g. -- --full-refresh",
    )
    parser.set_defaults(func=run)
