"""Rows a resync did not list: objects deleted while no event of it was left to read.

Past Stripe's 30 days of events (changes.py, the 30-day rule) a stream is re-read from
`start_date`. A customer deleted before the oldest event kept has no `customer.deleted` left,
and the list no longer shows it, so its row would stay live. The tap therefore notes in the
account's state when the resync began (`since`, on the tap's clock, the clock that stamps each
row's `_sdc_extracted_at`, less a second for files' coarse modification times) and, once the
account's re-read is complete, when it ended (`listed`, Stripe's clock). A loader that knows
the note (loader.py, loader_postgres.py), once the rows before that STATE are in and before it
confirms it, marks every row of the account that the re-read did not write (extracted before
`since`) deleted as of `listed`, or removes it with `hard_delete`.

Marking is idempotent (marked rows are skipped), so a STATE confirmed twice, or a run killed
before its STATE was confirmed and run again, marks the same rows. The tap's next run drops a
completed note: its STATE was confirmed, so its rows were marked. A loader that ignores the note
leaves those rows live, as the tap's warning says.
"""

from __future__ import annotations

import time
import typing as t
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

RESYNC = "resync"  # the state's key, in a stream's entry or an account's partition
FILE_TIME_MARGIN = 1  # second: a file's modification time is the kernel's coarse clock
COLUMNS = frozenset({"account_id", "_sdc_extracted_at", "deleted", "_sdc_deleted_at"})
"""What a table needs for its unlisted rows to be found and marked."""


def began(account_id: str) -> dict:
    """The note of a resync beginning now."""
    since = datetime.fromtimestamp(time.time() - FILE_TIME_MARGIN, timezone.utc)
    return {"account_id": account_id, "since": since.isoformat()}


@dataclass(frozen=True)
class Resync:
    """A completed resync of one stream and account."""

    stream: str
    account_id: str
    since: str  # rows extracted before it were not re-read
    listed: str  # when the re-read ended: such a row's `_sdc_deleted_at`

    def statement(self, table: str, hard_delete: bool, param: Callable[[str], str]) -> tuple:
        """SQL (with `param(name)` placeholders) and its parameters, marking (or with
        `hard_delete` removing) the account's rows the re-read did not write. Date-times are
        naive UTC, as both loaders store them."""
        unlisted = (
            f"account_id = {param('account')} AND _sdc_extracted_at < "
            f"CAST({param('since')} AS TIMESTAMP)"
        )
        params = {"account": self.account_id, "since": naive_utc(self.since)}
        if hard_delete:
            return f"DELETE FROM {table} WHERE {unlisted}", params
        sql = (
            f"UPDATE {table} SET deleted = true, _sdc_deleted_at = CAST({param('listed')} AS "
            f"TIMESTAMP) WHERE {unlisted} AND _sdc_deleted_at IS NULL"
        )
        return sql, params | {"listed": naive_utc(self.listed)}

    def said(self, loader: str, rows: int, hard_delete: bool) -> str:
        """The loader's line about it."""
        done = "removed" if hard_delete else "marked deleted"
        return f"{loader}: {self.stream} of {self.account_id}: {rows} row(s) unlisted, {done}"


def naive_utc(moment: str) -> str:
    parsed = datetime.fromisoformat(moment.replace("Z", "+00:00")).astimezone(timezone.utc)
    return parsed.replace(tzinfo=None).isoformat(sep=" ")


class OncePerRun:
    """A loader's STATEs: each completed resync they note handed to `mark` once in a run."""

    def __init__(self, mark: Callable[[Resync], None]) -> None:
        self.mark = mark
        self.done: set[Resync] = set()

    def __call__(self, state: t.Any) -> None:
        for resync in completed(state):
            if resync not in self.done:
                self.mark(resync)
                self.done.add(resync)


def completed(state: t.Any) -> Iterator[Resync]:
    """The completed resyncs a STATE's value notes, each stream's entry and partitions."""
    bookmarks = state.get("bookmarks") if isinstance(state, dict) else None
    for stream, entry in (bookmarks or {}).items():
        if not isinstance(entry, dict):
            continue
        for holder in (entry, *entry.get("partitions", ())):
            note = holder.get(RESYNC) if isinstance(holder, dict) else None
            if isinstance(note, dict) and note.get("listed"):
                yield Resync(stream, note["account_id"], note["since"], note["listed"])
