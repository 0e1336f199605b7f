"""A Connect platform in one run: connected accounts as partitions, side by side, in shards;
accounts added, revoked and dropped between runs; a kill mid-run. The tap talks HTTP to an
emulator with connected accounts (`accounts=`); truth is the emulator's own lists."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import time
import typing as t
from collections import Counter

import pytest

from conftest import BIN, STREAMS, TEST_TUNING, TapRun, parse_messages, tap_config
from tap_stripe_dd.accounts import (
    EX_PARTIAL,
    Account,
    AccountWalks,
    Directory,
    parse_shard,
    shard_of,
)
from tap_stripe_dd.emulator import StripeEmulator
from tap_stripe_dd.ratelimit import RateLimiter

ACCOUNTS = 12
OBJECTS = 40
NOW = int(time.time()) - 3_600  # a fixed clock, so that restarted emulators list the same data


def platform(accounts: int | list[str] = ACCOUNTS, **options: object) -> StripeEmulator:
    return StripeEmulator(
        seed=21, objects=OBJECTS, accounts=accounts, now=NOW, frozen=True, **options
    ).start()


@pytest.fixture
def emulator():
    emulator = platform()
    yield emulator
    emulator.stop()


def truth(emulator: StripeEmulator, accounts: list[str] | None = None) -> Counter:
    """(stream, account, id) for every object each account lists."""
    accounts = accounts or [emulator.platform_id, *emulator.connected_accounts]
    return Counter(
        (stream, account, object_id)
        for stream in STREAMS
        for account in accounts
        for object_id in emulator.ids(stream, account)
    )


def rows(run: TapRun) -> Counter:
    return Counter(
        (stream, record["account_id"], record["id"])
        for stream, records in run.records.items()
        for record in records
    )


def partitions(state: dict, stream: str) -> dict[str, str]:
    """account id -> bookmark of one stream's partitions."""
    return {
        p["context"]["account_id"]: p.get("replication_key_value")
        for p in state["bookmarks"][stream].get("partitions", [])
    }


def test_every_account_of_the_platform_exactly_once_with_its_own_bookmark(emulator, run_tap):
    run = run_tap(tap_config(emulator, account_ids="all"))
    assert run.returncode == 0, run.stderr[-2000:]
    assert rows(run) == truth(emulator)
    assert len({account for _, account, _ in rows(run)}) == ACCOUNTS + 1
    connected = {e.account for e in emulator.request_log if e.path == "/v1/charges"}
    assert connected == {None, *emulator.connected_accounts}  # the platform sends none
    for stream in STREAMS:
        assert set(partitions(run.state, stream)) == {
            emulator.platform_id,
            *emulator.connected_accounts,
        }


def test_accounts_are_read_side_by_side(emulators, run_tap):
    """With latency, twelve accounts one after another would take twelve times one's time: the
    request log shows several accounts' requests in flight together."""
    emulator = emulators(objects=30, accounts=6, latency_ms=40)
    run = run_tap(tap_config(emulator, account_ids="all", include_platform=False))
    assert run.returncode == 0, run.stderr[-2000:]
    charges = [e for e in emulator.request_log if e.path == "/v1/charges"]
    first = {entry.account: n for n, entry in reversed(list(enumerate(charges)))}
    # Every account's first request comes before any account has finished its window.
    assert max(first.values()) < len(charges) / 2, first


def test_accounts_side_by_side_cost_few_requests_beyond_their_pages(emulators, run_tap):
    """As a new user runs it (history from 2011, data in 2024-2025): each account's walk reads its
    pages and at most four empty ones (its first turn's empty years, the oldest step, and what
    lies between in two slices at most), never an empty half stolen from a slice already read to
    its end (21 requests for 12 pages before that was fixed)."""
    emulator = emulators(objects=300, accounts=12)
    config = tap_config(emulator, account_ids="all", include_platform=False)
    del config["start_date"]
    run = run_tap(config)
    assert run.returncode == 0, run.stderr[-2000:]
    assert rows(run) == truth(emulator, emulator.connected_accounts)
    pages = 300 // TEST_TUNING["page_size"]
    for stream in STREAMS:
        listed = Counter(e.account for e in emulator.request_log if e.path == f"/v1/{stream}")
        assert set(listed) == set(emulator.connected_accounts)
        assert max(listed.values()) <= pages + 4, (stream, sorted(listed.values()))


def test_many_accounts_send_a_state_per_stream_at_most_every_second(emulators, run_tap):
    """Every STATE holds every account's partitions: one at each account's change-feed sweep
    (58 STATEs in 2.8 s here) cost a tenth of a 20-account run's time. The cursors wait for
    the stream's next STATE, as its bookmarks do: one a second, and the last (19 in 2.3 s)."""
    emulator = emulators(objects=5, accounts=40)
    began = time.monotonic()
    run = run_tap(tap_config(emulator, account_ids="all", include_platform=False))
    seconds = time.monotonic() - began
    assert run.returncode == 0, run.stderr[-2000:]
    assert rows(run) == truth(emulator, emulator.connected_accounts)
    # Per stream: one a second, its last two (the tap's, the SDK's); and the run's first.
    assert len(run.states) <= len(STREAMS) * (seconds + 3) + 1, (len(run.states), seconds)
    swept = {p["context"]["account_id"] for p in run.state["bookmarks"]["charges"]["partitions"]}
    assert swept == set(emulator.connected_accounts)


def test_without_the_platform_and_with_ids_separated_by_commas(emulator, run_tap):
    chosen = emulator.connected_accounts[:3]
    run = run_tap(tap_config(emulator, account_ids=",".join(chosen), include_platform=False))
    assert run.returncode == 0, run.stderr[-2000:]
    assert rows(run) == truth(emulator, chosen)


def test_the_platform_alone_gets_its_id_on_every_row(emulator, run_tap):
    run = run_tap(tap_config(emulator))
    assert run.returncode == 0, run.stderr[-2000:]
    assert rows(run) == truth(emulator, [emulator.platform_id])
    assert "partitions" not in run.state["bookmarks"]["charges"]


def test_a_one_account_state_goes_on_as_the_platforms_partition(emulator, run_tap):
    alone = run_tap(tap_config(emulator, lookback_seconds=0))
    assert alone.returncode == 0, alone.stderr[-2000:]
    chosen = emulator.connected_accounts[:2]
    run = run_tap(tap_config(emulator, account_ids=chosen, lookback_seconds=0), alone.state)
    assert run.returncode == 0, run.stderr[-2000:]
    assert rows(run) == truth(emulator, chosen), "the platform's history is not read again"
    assert partitions(run.state, "charges")[emulator.platform_id] >= alone.bookmark("charges")


def test_shards_cover_every_account_once(emulator, run_tap):
    runs = [
        run_tap(tap_config(emulator, account_ids="all", account_shard=f"{k}/3")) for k in (1, 2, 3)
    ]
    assert all(run.returncode == 0 for run in runs), [r.stderr[-500:] for r in runs]
    shards = [rows(run) for run in runs]
    assert sum(shards, Counter()) == truth(emulator)
    accounts = [{account for _, account, _ in shard} for shard in shards]
    assert all(accounts), "a shard with no account: the hash does not spread"
    assert not (accounts[0] & accounts[1] or accounts[1] & accounts[2] or accounts[0] & accounts[2])


def test_shard_hash_is_stable_and_covers_all():
    ids = [f"acct_{n:016d}" for n in range(3_000)]
    counts = Counter(shard_of(account, 4) for account in ids)
    assert set(counts) == {1, 2, 3, 4} and min(counts.values()) > 600
    assert shard_of("acct_1Emulated", 7) == shard_of("acct_1Emulated", 7)
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "3", "a/b", "1/0"):
        with pytest.raises(ValueError, match="k/K"):
            parse_shard(bad)


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"account_ids": ["cus_1"]}, "acct_"),
        ({"account_ids": "some"}, "account_ids"),
        ({"account_ids": "all", "account_id": "acct_1x"}, "not both"),
        ({"account_ids": "all", "account_shard": "4/3"}, "k/K"),
        ({"account_ids": "all", "account_errors": "ignore"}, "account_errors"),
    ],
)
def test_bad_account_settings_fail_in_one_line(emulator, run_tap, settings, needle):
    run = run_tap(tap_config(emulator, **settings))
    assert run.returncode != 0
    assert needle in run.stderr
    assert not run.records


def test_an_account_added_later_gets_its_history_the_others_continue(run_tap):
    with_all = platform()
    ids = with_all.connected_accounts
    with_all.stop()
    before = platform(ids[:-1])
    first = run_tap(tap_config(before, account_ids="all", lookback_seconds=0))
    before.stop()
    assert first.returncode == 0, first.stderr[-2000:]
    after = platform(ids)
    try:
        second = run_tap(tap_config(after, account_ids="all", lookback_seconds=0), first.state)
        assert second.returncode == 0, second.stderr[-2000:]
        assert rows(second) == truth(after, [ids[-1]]), "only the new account's history"
        assert rows(first) + rows(second) == truth(after)
        for stream in STREAMS:
            marks = partitions(second.state, stream)
            assert set(marks) == {after.platform_id, *ids}
    finally:
        after.stop()


def test_a_revoked_account_is_named_the_others_finish_and_keep_their_state(run_tap):
    """Between two runs one account revokes the platform's access: the next run names it in
    one line, reads the others (from a state set back a month, so that each has objects to
    read), keeps the revoked one's bookmarks, and exits with the partial code; `skip` exits 0."""
    full = platform()
    ids = full.connected_accounts
    first = run_tap(tap_config(full, account_ids=ids, lookback_seconds=0))
    full.stop()
    assert first.returncode == 0, first.stderr[-2000:]
    revoked, since = ids[0], NOW - 30 * 86_400
    survivor = platform(ids[1:])
    try:
        config = tap_config(survivor, account_ids=ids, lookback_seconds=0)
        second = run_tap(config, {"bookmarks": rewind(first.state, since)})
        assert second.returncode == EX_PARTIAL, second.stderr[-2000:]
        last = second.stderr.strip().splitlines()[-1]
        assert revoked in last and "partial" in last
        assert sum(revoked in line for line in second.stderr.splitlines()) == 1
        others = [survivor.platform_id, *ids[1:]]
        assert rows(second) == Counter(
            (stream, account, o["id"])
            for stream in STREAMS
            for account in others
            for o in survivor.objects(stream, account)
            if o["created"] >= since
        ), "the others finish"
        for stream in STREAMS:
            marks = partitions(second.state, stream)
            assert marks[revoked] == rewind_mark(since), "the revoked account's state kept"
            assert all(marks[account] > rewind_mark(since) for account in others)
        skipped = run_tap({**config, "account_errors": "skip"}, second.state)
        assert skipped.returncode == 0, skipped.stderr[-2000:]
        assert revoked in skipped.stderr
    finally:
        survivor.stop()


def rewind_mark(unix: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def rewind(state: dict, unix: int) -> dict:
    """Every partition's bookmark set back to `unix`."""
    bookmarks = json.loads(json.dumps(state["bookmarks"]))
    for stream in bookmarks.values():
        for partition in stream.get("partitions", []):
            partition["replication_key_value"] = rewind_mark(unix)
    return bookmarks


def test_a_stream_whose_turns_left_are_a_refused_accounts_ends():
    """Another stream found the account refused first: this one skips its turns and ends,
    rather than waiting for walks it never started (a run hung so)."""
    directory = Directory({"account_ids": "all"}, lambda: RateLimiter(100, 100), lookup=None)
    account = Account("acct_1", True, directory.home.limiter)
    directory.refuse(account, "HTTP 403")
    walks = AccountWalks(
        None, [(account, 0, 100)], in_flight=1, directory=directory, walk=None, wait=no_hang
    )
    assert list(walks.run()) == []


def no_hang(pages: queue.Queue) -> t.Any:
    return pages.get(timeout=5)


@pytest.mark.parametrize("scope", ["account", "platform"])
def test_the_rate_limit_scope_decides_whether_accounts_share_a_budget(emulator, scope):
    """Stripe counts per account; a platform throttled as a whole shares one budget."""

    class Listed:  # the emulator's accounts, as GET /v1/account and /v1/accounts list them
        def platform_id(self, limiter: RateLimiter) -> str:
            return emulator.platform_id

        def connected_ids(self, limiter: RateLimiter) -> list[str]:
            return emulator.connected_accounts

    directory = Directory(
        {"account_ids": "all", "rate_limit_scope": scope}, lambda: RateLimiter(100, 100), Listed
    )
    limiters = {id(account.limiter) for account in directory.accounts}
    assert len(limiters) == (1 if scope == "platform" else ACCOUNTS + 1)


def test_an_account_gone_from_the_list_is_left_as_it_is(run_tap):
    full = platform()
    ids = full.connected_accounts
    first = run_tap(tap_config(full, account_ids="all"))
    full.stop()
    assert first.returncode == 0, first.stderr[-2000:]
    fewer = platform(ids[1:])
    try:
        second = run_tap(tap_config(fewer, account_ids="all"), first.state)
        assert second.returncode == 0, second.stderr[-2000:]
        assert not any(entry.account == ids[0] for entry in fewer.request_log)
        for stream in STREAMS:
            assert (
                partitions(second.state, stream)[ids[0]] == partitions(first.state, stream)[ids[0]]
            )
    finally:
        fewer.stop()


def test_killed_mid_run_then_resumed_nothing_lost_nothing_invented(emulators, tmp_path, run_tap):
    emulator = emulators(objects=150, accounts=ACCOUNTS, latency_ms=15, now=NOW, frozen=True)
    config = tap_config(emulator, account_ids="all", page_size=10, lookback_seconds=0)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    out = tmp_path / "out.jsonl"
    with out.open("w") as stdout:
        tap = subprocess.Popen(
            [str(BIN / "tap-stripe-dd"), "--config", str(path)],
            stdout=stdout,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while out.read_text().count('"STATE"') < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        tap.send_signal(signal.SIGKILL)
        tap.wait()
    complete = out.read_text().rsplit("\n", 1)[0]  # a line cut by the kill is not a message
    killed = parse_messages(TapRun(-9, complete, ""))
    assert killed.states and rows(killed) != truth(emulator), "the kill came too late"
    resumed = run_tap(config, killed.state)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    both = set(rows(killed)) | set(rows(resumed))
    assert both == set(truth(emulator)), "nothing lost, nothing invented"
