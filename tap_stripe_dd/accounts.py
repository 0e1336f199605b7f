"""Connect platforms: which accounts a run reads (settings, discovery, shards), and how a stream
walks them: side by side, in turns, each account with its own rate budget and bookmark.

One account's speed is capped by Stripe's per-account rate limit, so a platform's accounts are
read concurrently (`account_concurrency` of them per stream), each account's window by `Walk`s
of its own (fetching.py). When more accounts wait than run, an account's walk covers a turn, a
part of its window sized to about `TURN_PAGES` pages, and then goes to the back of the queue, so
that no account waits for the whole history of another. A turn ends on a completed bookmark:
nothing is read twice. Once an account's window is read, its last turn runs what follows the
scan (the change feed's sweep of that account, changes.py), so every account's change cursor
moves in every run. Memory is bounded by the accounts in flight, not by the accounts listed.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import typing as t
from collections import deque
from contextlib import closing
from dataclasses import dataclass, field, replace

from singer_sdk import typing as th

from tap_stripe_dd.errors import UserError
from tap_stripe_dd.fetching import Channel, Page, PageRequest, Walk
from tap_stripe_dd.ratelimit import RateLimiter
from tap_stripe_dd.settings import choice

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tap_stripe_dd.client import StripeStream

LOGGER = logging.getLogger("tap-stripe-dd")
SHARD = re.compile(r"^([1-9][0-9]*)/([1-9][0-9]*)$")
ACCOUNT = re.compile(r"^acct_[A-Za-z0-9]+$")
LISTED = re.compile(r"^(all|acct_[A-Za-z0-9]+(,acct_[A-Za-z0-9]+)*)$")
# Statuses that mean "this key may not act as this account (any more)": the account is named,
# the others go on.
ACCOUNT_REFUSED = (401, 403, 404)
#: A turn of an account's walk reads about this many pages per stream before others get theirs.
TURN_PAGES = 50
#: Accounts side by side share about this many times one walk's fetchers (`max_concurrency`),
#: at least `MIN_FETCHERS` each: the run's requests are then bounded by what one process can
#: handle, not multiplied by the accounts in flight (each thread, even idle, costs memory and
#: wake-ups). One account alone gets them all. With many, the accounts are the concurrency: a
#: second fetcher per walk mostly stole the empty older halves of slices whose objects begin
#: late (P6, 20 accounts: 1,989 requests and 29 s with two, 1,562 and 17 s with one).
SHARED_FETCHERS = 1
MIN_FETCHERS = 1
#: STATE messages hold every partition: with many accounts, at most one per stream this often
#: (seconds per 100 accounts, at least one second). A kill re-reads what was not confirmed.
STATE_SECONDS_PER_100_ACCOUNTS = 1.0
EX_PARTIAL = 3

SETTINGS = (
    th.Property(
        "account_ids",
        # "all", ids separated by commas (an environment variable), or a list: `pattern` binds
        # strings only, `items` arrays only.
        th.CustomType(
            {"type": ["string", "array"], "pattern": LISTED.pattern, "items": {"type": "string"}}
        ),
        description="Connected accounts to read (acct_…, a list or separated by commas), or "
        '"all": every account that GET /v1/accounts lists, discovered at each run. Each '
        "(stream, account) keeps its own bookmark; every row gets `account_id`.",
    ),
    th.Property(
        "include_platform",
        th.BooleanType,
        default=True,
        description="With account_ids: read the platform's own data too.",
    ),
    th.Property(
        "account_shard",
        th.StringType,
        description='"k/K": read only the accounts whose stable hash falls in shard k of K '
        "(K runs, each with its own state id, cover every account once).",
    ),
    choice(
        "account_errors",
        ("fail", "skip"),
        "An account that refuses access (401/403/404) is named in one line and the others "
        "finish; `fail` then exits with code 3 (partial), `skip` with 0.",
    ),
    th.Property(
        "account_concurrency",
        th.IntegerType(minimum=1, maximum=256),
        default=10,
        description="Accounts read side by side per stream.",
    ),
    choice(
        "rate_limit_scope",
        ("account", "platform"),
        "`account`: each account has its own rate budget (Stripe counts per account); "
        "`platform`: all accounts share one (a platform throttled as a whole).",
    ),
)


def parse_shard(value: str) -> tuple[int, int]:
    match = SHARD.match(value)
    if not match or int(match[1]) > int(match[2]):
        msg = f"account_shard {value!r} must be k/K with 1 <= k <= K, e.g. 2/3"
        raise ValueError(msg)
    return int(match[1]), int(match[2])


def shard_of(account_id: str, shards: int) -> int:
    """The shard (1..shards) of an account: a hash of its id, the same on every machine."""
    digest = hashlib.sha256(account_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards + 1


def setting_errors(config: t.Mapping[str, t.Any]) -> list[str]:
    errors = []
    ids = config.get("account_ids")
    if ids is not None and config.get("account_id"):
        errors.append("set account_id (one account) or account_ids (many), not both")
    if isinstance(ids, list):
        bad = [str(i) for i in ids if not ACCOUNT.match(str(i))]
        if bad:
            errors.append(f"account_ids must look like acct_…: {', '.join(bad[:3])}")
    if shard := config.get("account_shard"):
        try:
            parse_shard(str(shard))
        except ValueError as exc:
            errors.append(str(exc))
    return errors


@dataclass
class Account:
    """One account a run reads: its id, whether requests name it (`Stripe-Account`), and the
    rate budget its requests draw from."""

    id: str
    connected: bool
    limiter: RateLimiter


class AccountEndpoint:
    """A stream's endpoint as one account sees it: what a `Walk` fetches through."""

    def __init__(self, stream: StripeStream, account: Account) -> None:
        self.stream = stream
        self.account = account

    def fetch_page(self, request: PageRequest) -> Page:
        return self.stream.fetch_page(request, self.account)

    def saturated(self) -> bool:
        return self.account.limiter.saturated(self.stream.path)


class PartialSync(UserError):
    exit_code = EX_PARTIAL


@dataclass
class Directory:
    """The run's accounts, found once (before the streams start, or when a stream synced on
    its own first asks), and those that refused."""

    config: t.Mapping[str, t.Any]
    new_limiter: Callable[[], RateLimiter]
    lookup: Callable[[], AccountLookup]
    refused: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _accounts: list[Account] | None = None
    _shared: RateLimiter | None = None
    #: The key's own account (or `account_id`'s), known before any lookup: the lookups and
    #: the run's clock are its requests, and its budget is the platform's.
    home: Account = field(init=False)

    def __post_init__(self) -> None:
        account = self.config.get("account_id")
        self.home = Account(str(account or ""), bool(account), self.limiter())

    @property
    def accounts(self) -> list[Account]:
        with self.lock:
            if self._accounts is None:
                self._accounts = self._resolve(self.lookup())
            return self._accounts

    @property
    def partitioned(self) -> bool:
        """With `account_ids`, every (stream, account) is a partition of its own in the state."""
        return self.config.get("account_ids") is not None

    @property
    def state_seconds(self) -> float:
        if not self.partitioned:
            return 0.0
        return max(1.0, STATE_SECONDS_PER_100_ACCOUNTS * len(self.accounts) / 100)

    def limiter(self) -> RateLimiter:
        if self.config.get("rate_limit_scope") == "platform":
            if self._shared is None:
                self._shared = self.new_limiter()
            return self._shared
        return self.new_limiter()

    def _resolve(self, lookup: AccountLookup) -> list[Account]:
        """The platform (from GET /v1/account) unless excluded, then the connected accounts
        listed or discovered; only this run's shard of them."""
        config = self.config
        if config.get("account_id"):
            return [self.home]
        platform_limiter = self.home.limiter
        platform = lookup.platform_id(platform_limiter)
        accounts = []
        ids = config.get("account_ids")
        if ids is None or config.get("include_platform", True):
            accounts.append(Account(platform, False, platform_limiter))
        if ids == "all":
            ids = lookup.connected_ids(platform_limiter)
        elif isinstance(ids, str):
            ids = ids.split(",")
        seen = {platform}
        for account in ids or ():
            if account not in seen:
                seen.add(account)
                accounts.append(Account(account, True, self.limiter()))
        if shard := config.get("account_shard"):
            k, shards = parse_shard(str(shard))
            accounts = [a for a in accounts if shard_of(a.id, shards) == k]
        return accounts

    def refuse(self, account: Account, reason: str) -> None:
        self.refused.setdefault(account.id, reason)  # one thread at a time: the SDK's lock

    def finish(self) -> None:
        """After every stream: one line naming the accounts that refused, if any."""
        if not self.refused:
            return
        named = "; ".join(f"{a} ({reason})" for a, reason in sorted(self.refused.items()))
        line = (
            f"{len(self.refused)} of {len(self.accounts)} accounts refused access and were "
            f"skipped, their state kept: {named}"
        )
        if self.config.get("account_errors", "fail") == "skip":
            LOGGER.warning(line)
            return
        raise PartialSync(f"partial sync: {line}")


class AccountLookup(t.Protocol):
    def platform_id(self, limiter: RateLimiter) -> str: ...

    def connected_ids(self, limiter: RateLimiter) -> list[str]: ...


@dataclass
class Turn:
    account: Account
    start: int
    end: int
    span: int
    #: The account's window is read: this turn runs what follows the scan (`after`).
    last: bool = False


#: What runs for an account once its window `[start, end)` is read: `(kind, payload)` items.
After = t.Callable[[Account, int, int], t.Iterator[tuple[str, t.Any]]]
#: The messages of a turn's thread to the stream's: not handed on.
CONTROL = ("turn", "done", "error")


class AccountWalks:
    """One stream over the run's accounts: `run()` yields `(kind, account, payload)` with the
    kinds of `Walk.run()` (`records`, `bookmark`) and of `after`, from up to `in_flight`
    accounts at once."""

    def __init__(
        self,
        stream: StripeStream,
        windows: list[tuple[Account, int, int]],
        *,
        in_flight: int,
        directory: Directory,
        walk: Callable[[AccountEndpoint, int, int, int], Walk],
        wait: Callable[..., t.Any],
        concurrency: int = 1,
        after: After | None = None,
    ) -> None:
        self.stream = stream
        self.directory = directory
        self.in_flight = in_flight
        self.walk = walk
        self.wait = wait
        self.concurrency = concurrency
        #: The walks of the turns in flight (a finished one is dropped: memory stays flat).
        self.live: set[Walk] = set()
        self.after = after
        self.windows = {account.id: (start, end) for account, start, end in windows}
        self.waiting = deque(
            Turn(account, start, end, max(1, (end - start) // 4), last=start >= end)
            for account, start, end in windows
            if start < end or after is not None
        )

    def run(self) -> Iterator[tuple[str, Account, t.Any]]:
        # Two pages from each account walked at once: a channel sized for `in_flight` accounts
        # held 20 pages (~10 MB) for one account, on top of its walk's (measured: peak RSS
        # 74 MiB at 10,000 charges and 78 at 200,000, both 66 with this).
        channel = Channel(size=2 * max(1, min(self.in_flight, len(self.waiting))))
        running = 0
        try:
            while self.waiting or running:
                while self.waiting and running < self.in_flight:
                    turn = self.waiting.popleft()
                    if turn.account.id in self.directory.refused:
                        continue
                    # Nobody else waits: the account's whole window in one turn.
                    end = turn.end if not self.waiting else min(turn.end, turn.start + turn.span)
                    side_by_side = min(self.in_flight, running + 1 + len(self.waiting))
                    items = self._turn(turn, end, self._fetchers(side_by_side))
                    if running or self.waiting:
                        relay = threading.Thread(target=self._relay, args=(items, channel))
                        relay.daemon = True
                        relay.start()
                        running += 1
                        continue
                    # Alone: read in this thread, without a thread to hand each page on.
                    for kind, _, payload in items:
                        if kind not in CONTROL:
                            yield kind, turn.account, payload
                        else:
                            self._turn_over(kind, turn, payload)
                if not running:  # every turn left was alone, or a refused account's
                    continue
                kind, turn, payload = self.wait(channel.queue)
                if kind not in CONTROL:
                    yield kind, turn.account, payload
                    continue
                running -= 1
                self._turn_over(kind, turn, payload)
        finally:
            channel.close()

    def _turn_over(self, kind: str, turn: Turn, payload: t.Any) -> None:
        """A turn has ended (`kind` in `CONTROL`): the account's next turn waits, if any."""
        if kind == "error":
            self._refused_or_raise(turn.account, payload)
        elif kind == "turn" and payload[0] < turn.end:
            end, pages = payload
            span = (end - turn.start) * TURN_PAGES // max(1, pages)
            self.waiting.append(Turn(turn.account, end, turn.end, max(1, span)))
        elif kind == "turn" and self.after is not None:
            self.waiting.append(replace(turn, last=True))

    def slices_left(self) -> int:
        """Of the walks in flight."""
        return sum(walk.scheduler.left() for walk in list(self.live))

    def _fetchers(self, side_by_side: int) -> int:
        """Each walk's fetchers, with `side_by_side` accounts in flight (see `SHARED_FETCHERS`)."""
        shared = SHARED_FETCHERS * self.concurrency // side_by_side
        return min(self.concurrency, max(MIN_FETCHERS, shared))

    def _turn(self, turn: Turn, end: int, fetchers: int) -> Iterator[tuple[str, Turn, t.Any]]:
        """One account's turn: `[turn.start, end)` through a walk of its own, or its last
        turn's `after`; then how it ended (`CONTROL`)."""
        pages = 0
        walk = None
        try:
            if turn.last and self.after is not None:  # last turns are made only with it
                events = self.after(turn.account, *self.windows[turn.account.id])
            else:
                endpoint = AccountEndpoint(self.stream, turn.account)
                walk = self.walk(endpoint, turn.start, end, fetchers)
                self.live.add(walk)
                events = walk.run()
            with closing(events):
                for kind, payload in events:
                    pages += kind == "records"
                    yield kind, turn, payload
            yield ("done", turn, None) if turn.last else ("turn", turn, (end, pages))
        except Exception as exc:  # the stream's thread decides
            yield "error", turn, exc
        finally:
            self.live.discard(walk)

    @staticmethod
    def _relay(items: Iterator[tuple[str, Turn, t.Any]], channel: Channel) -> None:
        """A turn beside others, in a thread of its own: its items to the stream's thread."""
        with closing(items):
            for item in items:
                if not channel.send(item):
                    return

    def _refused_or_raise(self, account: Account, error: Exception) -> None:
        status = getattr(error, "status", None)
        if self.directory.partitioned and account.connected and status in ACCOUNT_REFUSED:
            self.directory.refuse(account, f"HTTP {status}")
            return
        raise error
