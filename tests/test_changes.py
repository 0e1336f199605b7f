"""The change feed (changes.py): after every sync, every table equals the emulator's truth,
field by field, whatever happened since (activity, writes, deletions, pauses, kills, skewed
clocks, late events, payloads in the account's older API version)."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import (
    BIN,
    RUN_JOB,
    STREAMS,
    TapRun,
    Warehouse,
    kill_meltano_run,
    meltano_env,
    parse_messages,
    remove_files,
    saved_state,
    tap_config,
)
from tap_stripe_dd.changes import DELETED_AT, DELETION_COLUMNS, RETENTION, SWEPT
from tap_stripe_dd.client import schemas_dir, to_unix
from tap_stripe_dd.emulator import StripeEmulator
from tap_stripe_dd.emulator.protocol import StripeError
from tap_stripe_dd.query.rewrite import to_duckdb
from tap_stripe_dd.query.warehouse import open_warehouse
from tap_stripe_dd.records import apply_plan, datetime_plan

HOUR, DAY = 3_600, 86_400
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
ACTIVITY = 3  # acts per hour: a month of history is ~2,000


def plans() -> dict[str, dict]:
    plans = {}
    for stream in STREAMS:
        schema = json.loads((schemas_dir() / f"{stream}.json").read_text())
        schema["properties"] |= DELETION_COLUMNS if stream == "customers" else {}
        plans[stream] = datetime_plan(schema)
    return plans


PLANS = plans()


class Model:
    """The warehouse as the loader builds it from a tap's output: one row per id (Stripe's
    ids are unique across accounts), a later record replacing the row, a deletion's record
    replacing only the columns it carries. A killed run's records after its last STATE may
    be lost, and are (the worst case)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, dict]] = {stream: {} for stream in STREAMS}
        self.state: dict | None = None

    def load(self, run: TapRun, *, completed: bool) -> None:
        lines = run.stdout.splitlines()
        if not completed:
            last = max((i for i, line in enumerate(lines) if '"STATE"' in line), default=-1)
            lines = lines[: last + 1]
        for line in lines:
            message = json.loads(line)
            if message["type"] == "RECORD":
                record, table = message["record"], self.rows[message["stream"]]
                merged = table.get(record["id"], {}) if record.get(DELETED_AT) else {}
                table[record["id"]] = {**merged, **record}
            elif message["type"] == "STATE":
                self.state = message["value"]

    def differences(self, emulator: StripeEmulator, accounts: tuple[str, ...] = ()) -> list[str]:
        """Every way the tables differ from the truth (the platform's, and `accounts`'): ids,
        and each field of each object. A run covers what was created before the second it
        started: objects created in that very second (the frozen clock's now) are the next
        run's."""
        found = []
        now = int(emulator.now())
        for stream in STREAMS:
            table = self.rows[stream]
            truth, young, deleted = {}, set(), set()
            for account in (emulator.platform_id, *accounts):
                deleted |= set(emulator.deleted(stream, account))
                for obj in emulator.current(stream, account):
                    if obj["created"] >= now:
                        young.add(obj["id"])
                        continue
                    apply_plan(obj, PLANS[stream])
                    obj["account_id"] = account  # every row names its account
                    truth[obj["id"]] = obj
            live = {
                i: row for i, row in table.items() if not row.get(DELETED_AT) and i not in young
            }
            for missing in truth.keys() - live.keys():
                found.append(f"{stream}: {missing} is missing")
            for extra in live.keys() - truth.keys():
                found.append(f"{stream}: {extra} should not be live")
            for object_id in truth.keys() & live.keys():
                if live[object_id] != truth[object_id]:
                    fields = {
                        k
                        for k in truth[object_id].keys() | live[object_id].keys()
                        if truth[object_id].get(k) != live[object_id].get(k)
                    }
                    found.append(f"{stream}: {object_id} differs in {sorted(fields)}")
            if not (flagged := table.keys() - live.keys() - young) <= deleted:
                found.append(f"{stream}: flagged but not deleted: {flagged - deleted}")
        return found


def make_emulator(**options: object) -> StripeEmulator:
    defaults = {"seed": 5, "objects": 200, "now": NOW, "frozen": True, "activity": ACTIVITY}
    return StripeEmulator(**{**defaults, **options}).start()  # type: ignore[arg-type]


@pytest.fixture
def emulators() -> Callable[..., StripeEmulator]:
    started: list[StripeEmulator] = []

    def make(**options: object) -> StripeEmulator:
        started.append(make_emulator(**options))
        return started[-1]

    yield make
    for emulator in started:
        emulator.stop()


def start_tap(tmp_path: Path, config: dict, state: dict | None) -> subprocess.Popen:
    stamp = time.monotonic_ns()
    config_path = tmp_path / f"config-{stamp}.json"
    config_path.write_text(json.dumps(config))
    command = [str(BIN / "tap-stripe-dd"), "--config", str(config_path)]
    if state is not None:
        state_path = tmp_path / f"state-{stamp}.json"
        state_path.write_text(json.dumps(state))
        command += ["--state", str(state_path)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def sync(
    tmp_path: Path, config: dict, model: Model, kill_after: float | None = None
) -> TapRun | None:
    """A tap run from the model's state into the model; killed with SIGKILL after
    `kill_after` seconds if it still runs (None: the run was killed)."""
    process = start_tap(tmp_path, config, model.state)
    try:
        stdout, stderr = process.communicate(timeout=kill_after if kill_after else 120)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        stdout, stderr = process.communicate()
        model.load(TapRun(-9, stdout, stderr), completed=False)
        return None
    run = parse_messages(TapRun(process.returncode, stdout, stderr))
    assert run.returncode == 0, run.stderr[-3000:]
    model.load(run, completed=True)
    return run


def synced(
    emulators: Callable[..., StripeEmulator],
    tmp_path: Path,
    settings: dict | None = None,
    **options: object,
) -> tuple[StripeEmulator, dict, Model]:
    """An emulator (no activity unless asked), the tap's config for it, and a first sync."""
    emulator = emulators(**{"activity": 0, **options})
    config = tap_config(emulator, **(settings or {}))
    model = Model()
    assert sync(tmp_path, config, model) is not None
    return emulator, config, model


def writes(
    emulator: StripeEmulator, rng: random.Random, account: str | None = None, k: int = 3
) -> None:
    """What a user does between syncs (`k` of these, in `account`), to objects loaded long
    ago as well as new ones."""

    def some(resource: str, test: Callable) -> str:
        found = [o["id"] for o in emulator.current(resource, account)[:300] if test(o)]
        return rng.choice(found) if found else ""

    def write(method: str, path: str, params: dict | None = None) -> None:
        emulator.write(method, path, params, account=account)

    old_charge = emulator.current("charges", account)[-1]["id"]
    actions = [
        lambda: write("POST", f"/v1/charges/{old_charge}", {"description": "seen"}),
        lambda: write(
            "POST",
            "/v1/refunds",
            {"charge": some("charges", lambda c: c["paid"] and not c["refunded"])},
        ),
        lambda: write(
            "POST",
            f"/v1/customers/{some('customers', lambda c: True)}",
            {"name": f"Renamed {rng.randrange(1000)}"},
        ),
        lambda: write("DELETE", f"/v1/customers/{some('customers', lambda c: True)}"),
        lambda: write(
            "POST", f"/v1/disputes/{some('disputes', lambda d: 'response' in d['status'])}/close"
        ),
    ]
    for action in rng.sample(actions, k=k):
        with contextlib.suppress(StripeError):  # nothing fitting to change this round
            action()


def changed_since(emulator: StripeEmulator, since: int, account: str | None = None) -> int:
    return sum(1 for event in emulator.events(account) if event["created"] >= since)


@pytest.mark.parametrize(
    "rounds", [4, pytest.param(40, marks=[pytest.mark.soak, pytest.mark.slow])]
)
def test_rounds_of_activity_writes_and_kills_leave_no_difference(emulators, tmp_path, rounds):
    """Rounds of activity and writes; some runs SIGKILLed at a random moment; after every
    completed sync, every table equals the truth field by field. Events are listed 2 s late,
    payloads are in the account's older version (2022-08-01, not charges' pinned shape)."""
    rng = random.Random(11 + rounds)
    emulator = emulators(events_lag=2)
    config = tap_config(emulator, max_concurrency=2)
    model = Model()
    assert sync(tmp_path, config, model) is not None
    assert model.differences(emulator) == []
    completed = 0
    for _ in range(rounds):
        start = int(emulator.now())
        writes(emulator, rng)
        emulator.advance(rng.choice([5, 600, 5 * HOUR, 2 * DAY]))
        assert changed_since(emulator, start), "a round that changed nothing proves nothing"
        if rng.random() < 0.4:
            sync(tmp_path, config, model, kill_after=rng.uniform(0.3, 1.5))
        emulator.advance(10)  # past the events' lag: a sync then sees every change before it
        assert sync(tmp_path, config, model) is not None
        completed += 1
        assert model.differences(emulator) == []
    assert completed == rounds
    deleted = [i for i, row in model.rows["customers"].items() if row.get("deleted")]
    assert deleted, "no deletion was synced"
    assert all(model.rows["customers"][i][DELETED_AT] for i in deleted)


def test_each_connected_account_is_swept_with_its_own_cursor(emulators, tmp_path):
    """With `account_ids`, every account's changes and deletions reach its rows (its events
    and re-reads sent as that account), each cursor in the account's own partition; a run
    killed with SIGKILL midway (the second round) loses nothing for the next."""
    emulator, config, model = synced(
        emulators, tmp_path, {"account_ids": "all", "max_concurrency": 2}, accounts=3
    )
    accounts = tuple(emulator.connected_accounts)
    rng = random.Random(3)
    for round_ in range(3):
        start = int(emulator.now())
        for account in (None, *accounts):
            writes(emulator, rng, account, k=4)
        emulator.advance(600)
        assert all(changed_since(emulator, start, a) for a in (None, *accounts)), "no change"
        if round_ == 1:
            sync(tmp_path, config, model, kill_after=rng.uniform(0.8, 1.5))
            emulator.advance(10)
        emulator.clear_log()
        assert sync(tmp_path, config, model) is not None
        assert model.differences(emulator, accounts) == [], f"round {round_}"
        swept = {e.account for e in emulator.request_log if e.path == "/v1/events"}
        assert set(accounts) <= swept
    for stream in STREAMS:
        partitions = model.state["bookmarks"][stream]["partitions"]
        cursors = {p["context"]["account_id"]: p.get(SWEPT) for p in partitions}
        assert cursors.keys() == {emulator.platform_id, *accounts}
        assert stream == "balance_transactions" or all(cursors.values()), cursors


def test_changes_to_objects_loaded_long_ago_are_re_read_at_the_pinned_version(emulators, tmp_path):
    emulator, config, model = synced(emulators, tmp_path)
    oldest = emulator.current("charges")[-1]
    emulator.write("POST", "/v1/refunds", {"charge": oldest["id"]})
    emulator.advance(60)
    emulator.clear_log()
    run = sync(tmp_path, config, model)
    assert model.differences(emulator) == []
    (row,) = [r for r in run.records["charges"] if r["id"] == oldest["id"]]
    assert row["refunded"] and "refunds" not in row  # the pinned shape, not the event's
    by_id = [e for e in emulator.request_log if e.path == f"/v1/charges/{oldest['id']}"]
    assert len(by_id) == 1 and by_id[0].headers["Stripe-Version"] == "2024-06-20"


def test_a_run_with_nothing_new_costs_a_few_requests_per_stream(emulators, tmp_path):
    emulator, config, model = synced(emulators, tmp_path)
    emulator.advance(60)
    emulator.clear_log()
    sync(tmp_path, config, model)
    paths = [entry.path for entry in emulator.request_log]
    # The clock (1), and per stream its created window (1) and its sweep (1).
    assert len(paths) <= 1 + 2 * len(STREAMS), paths
    assert model.differences(emulator) == []


@pytest.mark.parametrize("skew", [DAY, -DAY])
def test_a_machine_clock_a_day_off_loses_and_invents_nothing(emulators, tmp_path, skew):
    """The emulator's clock a day behind (skew > 0: the machine is ahead) or ahead of the
    machine's: the run's now is Stripe's Date, so bookmarks stay on Stripe's time."""
    emulator, config, model = synced(emulators, tmp_path, now=time.time() - skew, frozen=False)
    for stream in STREAMS:
        bookmark = to_unix(model.state["bookmarks"][stream]["replication_key_value"])
        assert abs(bookmark - emulator.now()) < 60
    ids = emulator.add_objects("charges", 30)  # created at the emulator's now
    emulator.write("POST", "/v1/refunds", {"charge": emulator.current("charges")[-1]["id"]})
    time.sleep(2.2)  # past the events' lag, on the running clock
    sync(tmp_path, config, model)
    assert set(ids) <= model.rows["charges"].keys()
    assert model.differences(emulator) == []


def test_events_listed_late_are_not_lost(emulators, tmp_path):
    emulator, config, model = synced(
        emulators, tmp_path, {"events_lookback_seconds": 300}, events_lag=120
    )
    customer = emulator.current("customers")[-1]["id"]
    emulator.write("POST", f"/v1/customers/{customer}", {"name": "Late Event"})
    emulator.advance(30)  # the change happened, its event is not listed yet
    sync(tmp_path, config, model)
    assert model.rows["customers"][customer]["name"] != "Late Event"
    emulator.advance(200)
    sync(tmp_path, config, model)
    assert model.rows["customers"][customer]["name"] == "Late Event"
    assert model.differences(emulator) == []


def test_a_deleted_customer_keeps_its_row_flagged_with_its_last_values(emulators, tmp_path):
    emulator, config, model = synced(emulators, tmp_path)
    customer = emulator.current("customers")[-1]
    emulator.write("DELETE", f"/v1/customers/{customer['id']}")
    deleted_at = int(emulator.now())
    emulator.advance(60)
    sync(tmp_path, config, model)
    row = model.rows["customers"][customer["id"]]
    assert row["deleted"] is True and to_unix(row[DELETED_AT]) == deleted_at
    assert row["email"] == customer["email"]  # the loader keeps what a deletion does not set
    assert model.differences(emulator) == []


@pytest.mark.parametrize("pause", [40 * DAY, 45 * DAY])
def test_past_30_days_the_stream_is_re_read_and_says_so(emulators, tmp_path, pause):
    """A paused schedule (40 days), or a state restored from 45 days ago: events in between
    are gone, so each stream is re-read from start_date, with one line each."""
    # No activity: it deletes customers too, some more than 30 days ago.
    emulator, config, model = synced(emulators, tmp_path)
    old_state = model.state
    refunded = emulator.current("charges")[-1]["id"]
    emulator.write("POST", "/v1/refunds", {"charge": refunded})  # its event is gone after 30 days
    emulator.advance(pause - 5 * DAY)
    # Within the events kept: the resync's sweep flags it (an older deletion cannot be seen).
    customer = emulator.current("customers")[-1]["id"]
    emulator.write("DELETE", f"/v1/customers/{customer}")
    emulator.advance(5 * DAY)
    model.state = old_state
    run = sync(tmp_path, config, model)
    assert model.rows["customers"][customer]["deleted"] is True
    assert model.rows["charges"][refunded]["refunded"] is True
    lines = [line for line in run.stderr.splitlines() if "Stripe keeps events for 30 days" in line]
    assert len(lines) == len(STREAMS) - 1  # balance transactions have no events
    assert sum("deleted before" in line for line in lines) == 1  # customers: what is not seen
    assert model.differences(emulator) == []
    for stream in STREAMS:
        if stream != "balance_transactions":
            swept = to_unix(model.state["bookmarks"][stream]["changes_swept_to"])
            assert swept == int(emulator.now())


def test_events_gap_fail_stops_with_one_line(emulators, tmp_path, run_tap):
    emulator, config, model = synced(emulators, tmp_path, {"events_gap": "fail"})
    emulator.advance(RETENTION + DAY)
    run = run_tap(config, state=model.state)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("tap-stripe-dd: error: changes to ")
    assert "30 days" in last and "events_gap" in last
    assert not run.records


def test_an_old_created_only_state_is_upgraded_without_a_full_sync(emulators, tmp_path):
    emulator, config, model = synced(emulators, tmp_path)
    model.state = {
        "bookmarks": {
            stream: {
                "replication_key": "created",
                "replication_key_value": entry["replication_key_value"],
            }
            for stream, entry in model.state["bookmarks"].items()
        }
    }
    charge = emulator.current("charges")[-1]["id"]
    emulator.write("POST", "/v1/refunds", {"charge": charge})
    emulator.advance(60)
    emulator.clear_log()
    sync(tmp_path, config, model)
    assert len(emulator.request_log) < 30  # incremental: no list walked from start_date
    assert model.rows["charges"][charge]["refunded"] is True
    assert model.differences(emulator) == []


def test_a_key_that_cannot_read_events_fails_in_one_line(emulators, run_tap):
    emulator = emulators(activity=0)
    run = run_tap(tap_config(emulator, api_key="rk_test_noperm0000000000"))
    assert run.returncode == 1 and "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert "GET /events" in last and "rak_event_read" in last
    assert not run.records


def test_pending_balance_transactions_are_re_read_until_available(emulators, tmp_path):
    emulator, config, model = synced(emulators, tmp_path)
    emulator.write("POST", "/v1/charges", {"amount": 5000, "currency": "usd", "source": "tok_visa"})
    emulator.advance(3_600)  # the pending one older than the lookback: the next scan's start
    sync(tmp_path, config, model)
    pending = [r for r in model.rows["balance_transactions"].values() if r["status"] == "pending"]
    assert pending, "nothing pending: the test proves nothing"
    emulator.advance(10 * DAY)
    emulator.clear_log()
    state = model.state["bookmarks"]["balance_transactions"]
    scan_from = min(to_unix(state["pending_from"]), to_unix(state["replication_key_value"]) - 600)
    sync(tmp_path, config, model)
    assert all(
        model.rows["balance_transactions"][r["id"]]["status"] == "available" for r in pending
    )
    # The head, asked for while the clock is read, is the scan's: from the oldest pending
    # (or the lookback), not asked for twice.
    heads = [
        int(e.params["created[gte]"])
        for e in emulator.request_log
        if e.path == "/v1/balance_transactions" and "created[lt]" not in e.params
    ]
    assert heads == [scan_from]
    assert model.differences(emulator) == []
    floor = model.state["bookmarks"]["balance_transactions"]["pending_from"]
    assert to_unix(floor) == int(emulator.now())  # nothing pending: the next run starts at now


# Through `meltano run`, into DuckDB: the warehouse itself is compared with the truth.

MELTANO_KEY = "sk_test_Chang3sK3yN0tL3ak3dAnywh3r3x"


def warehouse_differences(wh: Warehouse, emulator: StripeEmulator) -> list[str]:
    """Every live row against the truth, column by column (date-times in RFC 3339, JSON text
    decoded); flagged rows are deleted customers."""
    found = []
    now = int(emulator.now())
    for stream in STREAMS:
        columns = dict(
            wh.query(
                "SELECT column_name, data_type FROM duckdb_columns() "
                f"WHERE schema_name = 'mystripeapi' AND table_name = '{stream}'"
            )
        )
        names = [n for n in columns if not n.startswith("_sdc_")]
        selects = ", ".join(
            f"strftime(\"{n}\", '%Y-%m-%dT%H:%M:%SZ')"
            if columns[n].startswith("TIMESTAMP")
            else f'"{n}"'
            for n in names
        )
        rows = {
            row["id"]: row
            for row in (
                dict(zip(names, values, strict=True))
                for values in wh.query(
                    f"SELECT {selects} FROM mystripeapi.{stream} WHERE _sdc_deleted_at IS NULL"
                )
            )
        }
        truth = {}
        for obj in emulator.current(stream):
            if obj["created"] < now:
                apply_plan(obj, PLANS[stream])  # date-times as the tap writes them
                obj["account_id"] = emulator.platform_id  # every row names its account
                truth[obj["id"]] = obj
        if rows.keys() != truth.keys():
            found.append(f"{stream}: ids differ ({len(rows.keys() ^ truth.keys())})")
        for object_id in rows.keys() & truth.keys():
            row, obj = rows[object_id], truth[object_id]
            for name in names:
                value = row[name]
                if isinstance(value, str) and isinstance(obj.get(name), dict | list):
                    value = json.loads(value)  # JSON text, in a JSON or VARCHAR column
                if value != obj.get(name):
                    found.append(f"{stream}: {object_id}.{name}: {value!r} != {obj.get(name)!r}")
        flagged = {
            i
            for (i,) in wh.query(
                f"SELECT id FROM mystripeapi.{stream} WHERE _sdc_deleted_at IS NOT NULL"
            )
        }
        if not flagged <= set(emulator.deleted(stream)):
            found.append(f"{stream}: flagged rows that are not deleted")
    return found


@pytest.mark.parametrize(
    "rounds", [3, pytest.param(20, marks=[pytest.mark.soak, pytest.mark.slow])]
)
def test_meltano_rounds_some_killed_keep_duckdb_equal_to_the_truth(emulators, warehouse, rounds):
    """Rounds of activity and writes through `meltano run`, the first and then about half of
    them killed with SIGKILL at a random point (the group, the tap or the target); DuckDB
    equals the truth after every completed run, and the Drill-form samples answer as the live
    list: deleted customers left out, newest first."""
    rng = random.Random(5 + rounds)
    emulator = emulators(events_lag=0)
    wh = warehouse(emulator, **meltano_env(MELTANO_KEY))
    wh.run_job()
    assert warehouse_differences(wh, emulator) == []
    forced = (*RUN_JOB[:3], "--force", RUN_JOB[3])  # past a killed job
    for round_ in range(rounds):
        writes(emulator, rng)
        emulator.write("DELETE", f"/v1/customers/{emulator.current('customers')[-1]['id']}")
        emulator.advance(rng.choice([300, HOUR, DAY]))
        if round_ == 0 or rng.random() < 0.5:
            emulator.clear_log()
            due = rng.randint(3, 30)
            who = rng.choice(["group", "tap-stripe-dd", "target-duckdb"])
            killed = kill_meltano_run(
                wh, emulator, lambda due=due: len(emulator.request_log) > due, who, force=True
            )
            remove_files(killed.leftovers)
        wh.meltano(*forced)
        assert warehouse_differences(wh, emulator) == [], f"round {round_}"
    with open_warehouse(wh.path) as connection:
        sql = to_duckdb("SELECT id, created FROM `mystripeapi`.`/customers`", connection)
        listed = [row[0] for row in connection.con.execute(sql).fetchall()]
    created = {obj["id"]: obj["created"] for obj in emulator.current("customers")}
    assert set(listed) == set(created)  # the deleted ones (flagged rows) left out
    assert [created[i] for i in listed] == sorted(created.values(), reverse=True)
    ((flagged,),) = wh.query(
        "SELECT count(*) FROM mystripeapi.customers WHERE deleted AND _sdc_deleted_at IS NOT NULL"
    )
    assert flagged >= 2  # plain SQL sees them


def test_a_first_run_reads_no_events_but_the_clock(emulators, tmp_path):
    """Its scan reads every object after every event before its start: nothing to sweep, and
    the next run sweeps from that start (a change made after the first run is in its rows)."""
    emulator = emulators(activity=0)
    config = tap_config(emulator)
    model = Model()
    assert sync(tmp_path, config, model) is not None
    events = [e for e in emulator.request_log if e.path == "/v1/events"]
    assert [e.params.get("limit") for e in events] == ["1"], "only the clock's request"
    customer = emulator.current("customers")[-1]["id"]
    emulator.write("POST", f"/v1/customers/{customer}", {"name": "After The First Run"})
    emulator.advance(60)
    assert sync(tmp_path, config, model) is not None
    assert model.rows["customers"][customer]["name"] == "After The First Run"
    assert model.differences(emulator) == []


@pytest.mark.parametrize("way", ["marked", "hard_delete", "killed midway"])
def test_a_resync_past_30_days_marks_the_rows_it_no_longer_lists(emulators, warehouse, way):
    """Customers deleted while the schedule was paused 40 days have no event left: the rows
    the completed resync did not write are marked deleted (removed with `hard_delete`) before
    its STATE is confirmed, also when a first try was killed midway; once (the next run drops
    the note, the marks stay as they are)."""
    emulator = emulators(activity=0)
    env = meltano_env(MELTANO_KEY)
    if way == "hard_delete":
        env["TARGET_DUCKDB_HARD_DELETE"] = "true"
    wh = warehouse(emulator, **env)
    wh.run_job()
    gone = [customer["id"] for customer in emulator.current("customers")[-3:]]
    for customer in gone:
        emulator.write("DELETE", f"/v1/customers/{customer}")
    emulator.advance(40 * DAY)
    if way == "killed midway":
        emulator.clear_log()
        killed = kill_meltano_run(wh, emulator, lambda: len(emulator.request_log) > 12)
        remove_files(killed.leftovers)
    forced = (*RUN_JOB[:3], "--force", RUN_JOB[3])  # past the killed job
    run = wh.meltano(*forced)
    done = "removed" if way == "hard_delete" else "marked deleted"
    assert f"customers of {emulator.platform_id}: 3 row(s) unlisted, {done}" in run.stderr
    assert warehouse_differences(wh, emulator) == []
    marks = "SELECT id, deleted, _sdc_deleted_at FROM mystripeapi.customers WHERE deleted"
    marked = sorted(wh.query(marks))
    if way == "hard_delete":
        assert marked == [] and not set(gone) & set(wh.ids("customers"))
    else:
        assert [(i, d) for i, d, _ in marked] == sorted((i, True) for i in gone)
    emulator.advance(60)
    again = wh.meltano(*forced)
    assert "unlisted" not in again.stderr and sorted(wh.query(marks)) == marked
    assert "resync" not in saved_state(wh.path.with_name("meltano.db"))["bookmarks"]["customers"]
