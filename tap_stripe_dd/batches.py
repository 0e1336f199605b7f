"""Singer BATCH files: a stream's records as JSON lines on local disk, so that they reach the
loader without Meltano relaying them line by line (the most CPU a `meltano run` spent)."""

from __future__ import annotations

import gzip
import os
import typing as t
from pathlib import Path
from urllib.parse import unquote, urlparse
from uuid import uuid4

import msgspec

if t.TYPE_CHECKING:
    from singer_sdk.helpers._batch import BatchConfig

ENCODER = msgspec.json.Encoder()


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


class BatchFile:
    """The records of one stream, appended page by page to a file that only its owner may read
    (it holds Stripe data), and announced once closed. Each close starts a new file."""

    def __init__(self, config: BatchConfig, tap_name: str, stream: str) -> None:
        folder = local_folder(config.storage.root)
        assert folder is not None, "checked with the tap's config"
        folder.mkdir(parents=True, exist_ok=True)
        self.gzip = config.encoding.compression == "gzip"
        suffix = ".jsonl.gz" if self.gzip else ".jsonl"
        self._name = f"{config.storage.prefix or ''}{tap_name}--{stream}-{uuid4().hex}-{{}}{suffix}"
        self._folder = folder
        self._files_open: list[t.BinaryIO] = []  # the file, and the gzip stream over it
        self._path: Path | None = None
        self._files = 0
        self.count = 0

    def write(self, records: list[dict]) -> None:
        if not records:
            return
        if not self._files_open:
            self._files += 1
            self._path = self._folder / self._name.format(self._files)
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self._files_open.append(os.fdopen(fd, "wb"))
            if self.gzip:
                zipped = gzip.GzipFile(fileobj=self._files_open[0], mode="wb", compresslevel=1)
                self._files_open.append(t.cast("t.BinaryIO", zipped))
        self._files_open[-1].write(ENCODER.encode_lines(records))
        self.count += len(records)

    def close(self) -> str:
        """Closes the file and returns its URL, for the BATCH message's manifest."""
        assert self._path is not None
        while self._files_open:  # gzip first: closing it leaves the file under it open
            self._files_open.pop().close()
        url = self._path.resolve().as_uri()
        self._path, self.count = None, 0
        return url
