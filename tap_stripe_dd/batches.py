"""Singer BATCH files: a stream's records as JSON lines on local disk, so that they reach the
loader without Meltano relaying them line by line (the most CPU a `meltano run` spent).

The files hold Stripe data (customers' names, e-mails), so none outlives its run. A run's files
are named after it (`<prefix>tap-stripe-dd-<run>--<stream>-<n>.jsonl`) and it holds a shared
`flock` on `<prefix>tap-stripe-dd-<run>.lock` while it writes them; the loader takes the same lock
when it first hears of the run, deletes each file once read, and the lock file when it is the last
one out (or its tap does, having written none). Whatever a run killed with -9 left (nobody holds
its lock) is deleted by the next run that writes batch files in the folder, before it writes any.
A stop (signal, error) deletes the file being written, which was never announced.
"""

from __future__ import annotations

import fcntl
import gzip
import os
import time
import typing as t
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse
from uuid import uuid4

import msgspec

from tap_stripe_dd.errors import UserError

if t.TYPE_CHECKING:
    from singer_sdk.helpers._batch import BatchConfig

ENCODER = msgspec.json.Encoder()
LOCK_SUFFIX = ".lock"
#: A loader that has read its input to the end waits this long for its tap, which is exiting
#: then, to let go of the run's lock: else neither removes the lock file, and the next run
#: finds it and takes it for a killed run's.
TAP_EXIT_SECONDS = 5.0
RUN_SEPARATOR = "--"  # between a run's name and a file's stream; stream names have none


class BatchFolderError(UserError):
    """The batch folder cannot be written (full disk, read-only, no permission): one line."""

    exit_code = 1

    def __init__(self, folder: Path, exc: OSError) -> None:
        super().__init__(f"cannot write batch files in {folder}: {exc.strerror or exc}")


def local_folder(root: str) -> Path | None:
    """The folder of a `file://` URL or a plain path; None for anything else (s3://, …)."""
    parsed = urlparse(root)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return Path(root) if not parsed.scheme else None


def batch_config_errors(raw: dict) -> list[str]:
    """What the tap cannot honour, said before anything is fetched."""
    errors = []
    encoding = raw.get("encoding") or {}
    if encoding.get("format", "jsonl") != "jsonl":
        errors.append("batch_config.encoding.format: tap-stripe-dd writes jsonl batch files")
    root = (raw.get("storage") or {}).get("root")
    if not root or local_folder(str(root)) is None:
        errors.append("batch_config.storage.root must be a local folder (a path or a file:// URL)")
    return errors


def run_of(path: Path) -> Path:
    """The lock file of the run that wrote a batch file."""
    return path.with_name(path.name.rsplit(RUN_SEPARATOR, 1)[0] + LOCK_SUFFIX)


def files_of(lock: Path) -> list[Path]:
    """The batch files of a run that are still there."""
    return list(lock.parent.glob(lock.name.removesuffix(LOCK_SUFFIX) + RUN_SEPARATOR + "*"))


def take_if_free(lock: Path) -> int | None:
    """An exclusive lock on a run's lock file if neither its tap nor its loader holds it (or
    the file is gone), as an open descriptor; else None."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def lock_exclusive(fd: int, seconds: float) -> bool:
    """Whether an exclusive lock on `fd` was had, within `seconds` of waiting for the others."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        else:
            return True


def remove_run(lock: Path, fd: int) -> None:
    """Deletes a run's files and lock file, holding its lock exclusively (then releases it)."""
    for path in files_of(lock):
        path.unlink(missing_ok=True)
    lock.unlink(missing_ok=True)
    if fd >= 0:
        os.close(fd)


def remove_dead_runs(folder: Path, pattern: str) -> None:
    """Deletes the files of runs whose lock nobody holds: runs killed with -9 (a crash, the OOM
    killer), which could not clean up after themselves."""
    runs = {
        path if path.name.endswith(LOCK_SUFFIX) else run_of(path)
        for path in folder.glob(pattern)
        if path.name.endswith(LOCK_SUFFIX) or RUN_SEPARATOR in path.name
    }
    for lock in runs:
        fd = take_if_free(lock)
        if fd is not None:
            remove_run(lock, fd)


class BatchRun:
    """One tap run's batch files, under one name and one lock."""

    def __init__(self, config: BatchConfig, tap_name: str) -> None:
        folder = local_folder(config.storage.root)
        assert folder is not None, "checked with the tap's config"
        self.folder = folder
        self.config = config
        prefix = f"{config.storage.prefix or ''}{tap_name}-"
        self.name = f"{prefix}{uuid4().hex}"
        self.files: list[BatchFile] = []
        try:
            folder.mkdir(parents=True, exist_ok=True)
            remove_dead_runs(folder, prefix + "*")
            # Locked before it has its name, so that no other run ever sees it free.
            lock = folder / f"{self.name}{LOCK_SUFFIX}"
            pending = lock.with_name(lock.name + ".new")
            self._lock = os.open(pending, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o600)
            fcntl.flock(self._lock, fcntl.LOCK_SH)
            pending.rename(lock)
        except OSError as exc:
            raise BatchFolderError(folder, exc) from None

    def file(self, stream: str) -> BatchFile:
        batch = BatchFile(self, stream)
        self.files.append(batch)
        return batch

    def stream(self, outputs: list[tuple[str, Transform | None]]) -> StreamBatches:
        return StreamBatches(self, outputs)

    def discard_unannounced(self) -> None:
        """Deletes the files being written: never announced, nobody will read them."""
        for batch in self.files:
            batch.discard()

    def finish(self) -> None:
        """At the run's end: a run that wrote no file has nothing for a loader to claim, so it
        removes its lock file itself (the next run would take it for a killed run's)."""
        if not any(batch.written for batch in self.files):
            remove_run(self.folder / f"{self.name}{LOCK_SUFFIX}", self._lock)

    def stop(self) -> None:
        """On a stop signal: the files being written go, and if the loader has gone already
        (it was stopped too), so does the rest of the run: nobody will read it."""
        self.discard_unannounced()
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # the loader still reads; it removes the run when done
            return
        remove_run(self.folder / f"{self.name}{LOCK_SUFFIX}", self._lock)


Transform = t.Callable[[dict], "dict | None"]


class StreamBatches:
    """A stream's records in one file per stream it goes out as (one per stream map alias, as
    the SDK sends RECORD messages), each through its map's transform (None: as they are)."""

    def __init__(self, run: BatchRun, outputs: list[tuple[str, Transform | None]]) -> None:
        self._outputs = [(alias, transform, run.file(alias)) for alias, transform in outputs]
        self._aliases: dict[str, str] = {}

    @property
    def count(self) -> int:
        return sum(batch.count for _, _, batch in self._outputs)

    def write(self, records: list[dict]) -> None:
        for _, transform, batch in self._outputs:
            if transform is None:
                batch.write(records)
            else:
                batch.write([out for out in map(transform, records) if out is not None])

    def close(self) -> list[str]:
        """Closes the files that hold records; returns their URLs (see `alias_of`)."""
        urls = []
        for alias, _, batch in self._outputs:
            if batch.count:
                urls.append(url := batch.close())
                self._aliases[url] = alias
        return urls

    def alias_of(self, url: str) -> str:
        """The stream a closed file is announced as."""
        return self._aliases.pop(url)


class BatchFile:
    """The records of one stream, appended page by page to a file that only its owner may read
    (it holds Stripe data), and announced once closed. Each close starts a new file."""

    def __init__(self, run: BatchRun, stream: str) -> None:
        self.gzip = run.config.encoding.compression == "gzip"
        suffix = ".jsonl.gz" if self.gzip else ".jsonl"
        self._name = f"{run.name}{RUN_SEPARATOR}{stream}-{{}}{suffix}"
        self._folder = run.folder
        self._files_open: list[t.BinaryIO] = []  # the file, and the gzip stream over it
        self._path: Path | None = None
        self._files = 0
        self.count = 0

    @property
    def written(self) -> bool:
        """Whether it has begun a file: a loader may hear of the run."""
        return self._files > 0

    def write(self, records: list[dict]) -> None:
        if not records:
            return
        try:
            self._write(records)
        except OSError as exc:
            self.discard()
            raise BatchFolderError(self._folder, exc) from None
        self.count += len(records)

    def _write(self, records: list[dict]) -> None:
        if not self._files_open:
            self._files += 1
            self._path = self._folder / self._name.format(self._files)
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self._files_open.append(os.fdopen(fd, "wb"))
            if self.gzip:
                zipped = gzip.GzipFile(fileobj=self._files_open[0], mode="wb", compresslevel=1)
                self._files_open.append(t.cast("t.BinaryIO", zipped))
        self._files_open[-1].write(ENCODER.encode_lines(records))

    def close(self) -> str:
        """Closes the file and returns its URL, for the BATCH message's manifest."""
        assert self._path is not None
        try:
            self._close()
        except OSError as exc:  # the last bytes did not fit
            self.discard()
            raise BatchFolderError(self._folder, exc) from None
        url = self._path.resolve().as_uri()
        self._path, self.count = None, 0
        return url

    def _close(self) -> None:
        while self._files_open:  # gzip first: closing it leaves the file under it open
            self._files_open.pop().close()

    def discard(self) -> None:
        """Deletes the file being written, if any (it was never announced)."""
        path, self._path, self.count = self._path, None, 0
        if path is not None:
            path.unlink(missing_ok=True)
            try:
                self._close()
            except OSError:
                self._files_open.clear()


class RunClaims:
    """The loader's side of the lock: each run whose files it reads is locked (shared) from the
    first file it hears of, so that no other run takes the run for dead while it reads."""

    def __init__(self) -> None:
        self._locks: dict[Path, int] = {}

    def claim(self, path: Path) -> None:
        lock = run_of(path)
        if lock not in self._locks:
            try:
                fd = os.open(lock, os.O_RDONLY)
            except FileNotFoundError:  # a tap of another version, or the run was removed
                fd = -1
            else:
                fcntl.flock(fd, fcntl.LOCK_SH)
            self._locks[lock] = fd

    def release(self, *, discard: bool) -> None:
        """At the end. With `discard` (the loader failed or was stopped) the runs' files it did
        not read are deleted: no STATE it sent covers their records, so the next run fetches
        them again. A run whose tap has gone too (or, at the input's end, goes within
        `TAP_EXIT_SECONDS`) is removed, lock file included."""
        for lock, fd in self._locks.items():
            if discard:
                for path in files_of(lock):
                    path.unlink(missing_ok=True)
            if fd < 0:
                continue
            if lock_exclusive(fd, 0 if discard else TAP_EXIT_SECONDS):
                remove_run(lock, fd)
            else:  # its tap still runs, and cleans up after itself
                os.close(fd)
        self._locks.clear()


class UnreadableBatch(UserError):
    """A BATCH message or file the loader cannot read: one line, nothing loaded from it."""


def batch_records(
    message: dict, claims: RunClaims, loads: Callable[[bytes], t.Any]
) -> Iterator[dict]:
    """A BATCH message's files, read (by `loads`) as the RECORD messages they stand for, in
    order, each deleted once read, for the loaders (loader.py, loader_postgres.py). Its records
    were extracted by the time the file was last written."""
    stream = message.get("stream")
    encoding = message.get("encoding") or {}
    if encoding.get("format") != "jsonl":
        msg = f"stream {stream!r}: BATCH files in {encoding.get('format')!r} are not supported"
        raise UnreadableBatch(msg)
    for url in message.get("manifest") or []:
        path = local_folder(str(url))
        if path is None:
            raise UnreadableBatch(f"stream {stream!r}: BATCH file {url} is not on this machine")
        claims.claim(path)
        try:
            extracted = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat()
            zipped = encoding.get("compression") == "gzip" or path.suffix == ".gz"
            with (gzip.open if zipped else open)(path, "rb") as file:
                for number, line in enumerate(file, start=1):
                    try:
                        record = loads(line)
                    except ValueError:
                        msg = f"stream {stream!r}: BATCH file {path}, line {number}: not JSON"
                        raise UnreadableBatch(msg) from None
                    yield {
                        "type": "RECORD",
                        "stream": stream,
                        "record": record,
                        "time_extracted": extracted,
                    }
        except OSError as exc:
            reason = exc.strerror or exc
            msg = f"stream {stream!r}: BATCH file {path} cannot be read ({reason})"
            raise UnreadableBatch(msg) from None
        path.unlink(missing_ok=True)
