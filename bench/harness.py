"""The benchmark harness: each measure side by side in one run, against the emulator, as ratios.

`python -m bench [--quick]` runs E (the emulator's speed), P1..P5, I and P6 (accounts,
bench/accounts.py), prints a table and adds it atop bench/RESULTS.md, above the earlier runs'
(whose notes say what changed between them).
The emulator runs as its own process, so that it never shares the tap's interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import msgspec
import requests

from tap_stripe_dd.batches import ENCODER as BATCH_ENCODER
from tap_stripe_dd.client import STRIPE_VERSION
from tap_stripe_dd.emulator import StripeEmulator
from tap_stripe_dd.streams import STREAM_TYPES

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEY = "sk_test_benchmark0000"
AUTH = {"Authorization": f"Bearer {KEY}"}
LIVE_KEY = "sk_live_benchmark0000"
STREAMS = [stream.name for stream in STREAM_TYPES]
# The emulator's data spans 2024-2025, given explicitly (its default may change). A new user sets
# no window: history from 2011 up to now. The tuned window is exactly where the data lies.
DATA_FROM, DATA_TO = 1_704_067_200, 1_767_225_599  # 2024-01-01T00:00:00Z, 2025-12-31T23:59:59Z
DATA = ["--created-from", str(DATA_FROM), "--created-to", str(DATA_TO)]
WINDOW = {"start_date": "2024-01-01T00:00:00Z", "end_date": "2026-01-01T00:00:00Z"}
WAYS = {"as a new user runs it": {}, "tuned window": WINDOW}
# Measures without Stripe's limits (P1, P3, P4) lift the tap's own limiter out of the way.
RUN_JOB = ["run", "stripe-to-duckdb"]
UNLIMITED = {"rate_limit_per_account": 100_000, "rate_limit_per_endpoint": 100_000}


@dataclass(frozen=True)
class Tree:
    """A checkout of the project and its venv: this one, or a baseline (bench/baseline.py)."""

    root: Path
    bin: Path


HERE = Tree(ROOT, BIN)


@dataclass
class Row:
    measure: str
    ratio: float
    goal: str
    detail: str

    def line(self) -> str:
        return f"| {self.measure} | {self.ratio:.2f} | {self.goal} | {self.detail} |"


@contextlib.contextmanager
def emulator(objects: int, *extra: str, prewarm: bool = True) -> Iterator[str]:
    """Prewarmed: every object is built before serving, so the server is not what is measured
    (without: objects are built as they are asked for, as the emulator starts by default)."""
    command = ["emulator", "--port", "0", "--seed", "11", "--objects", str(objects)]
    command += [*(["--prewarm"] if prewarm else []), *DATA]
    process = subprocess.Popen(
        [str(BIN / "stripe-dd"), *command, *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:  # busy with many accounts' connections
            process.kill()
            process.wait()


class Listed(msgspec.Struct):
    id: str


class Page(msgspec.Struct):
    """A list page as a client that needs only the cursor reads it: every other field skipped."""

    has_more: bool
    data: list[Listed]


PAGE = msgspec.json.Decoder(Page)


def decoded(session: requests.Session, url: str, params: dict) -> tuple[list, bool]:
    """requests + json: what any client pays to read a page."""
    body = session.get(url, params=params, timeout=60).json()
    return body["data"], body["has_more"]


def cursor_only(session: requests.Session, url: str, params: dict) -> tuple[list, bool]:
    page = PAGE.decode(session.get(url, params=params, timeout=60).content)
    return [{"id": listed.id} for listed in page.data], page.has_more


def bare_walk(
    url: str, streams: list[str], read: Callable[..., tuple[list, bool]] = decoded
) -> tuple[int, float]:
    """Limit 100, one page after the other: with requests + json (`decoded`), the ceiling any
    client can reach."""
    session = requests.Session()
    session.headers.update(AUTH)
    session.headers["Stripe-Version"] = STRIPE_VERSION  # as the tap pins it: the same shapes
    began, count = time.perf_counter(), 0
    for stream in streams:
        params: dict[str, str | int] = {"limit": 100}
        while True:
            data, has_more = read(session, f"{url}/v1/{stream}", params)
            count += len(data)
            if not has_more:
                break
            params["starting_after"] = data[-1]["id"]
    return count, time.perf_counter() - began


def catalog_for(streams: list[str], workdir: Path, config: Path, tree: Tree = HERE) -> Path:
    discovered = subprocess.run(
        [str(tree.bin / "tap-stripe-dd"), "--config", str(config), "--discover"],
        capture_output=True,
        text=True,
        check=True,
    )
    catalog = json.loads(discovered.stdout)
    for entry in catalog["streams"]:
        for meta in entry["metadata"]:
            if not meta["breadcrumb"]:
                meta["metadata"]["selected"] = entry["tap_stream_id"] in streams
    path = workdir / "catalog.json"
    path.write_text(json.dumps(catalog))
    return path


def children_cpu() -> float:
    """CPU seconds of every child process waited for so far (Meltano waits for its plugins)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


#: The tap's last line (progress.py): "done: 60,000 objects from 6 streams, 667 requests in …".
DONE = re.compile(rb"done: [\d,]+ objects? from \d+ streams?, ([\d,]+) requests? in")


def timed(
    command: list[str],
    stdin: Path | None = None,
    stdout: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> dict:
    """Runs a command to completion: its wall time and the CPU time of its process tree."""
    began, cpu = time.perf_counter(), children_cpu()
    with (
        open(stdin or os.devnull, "rb") as source,
        open(stdout or os.devnull, "wb") as sink,
    ):
        result = subprocess.run(
            command, stdin=source, stdout=sink, stderr=subprocess.PIPE, cwd=cwd, env=env
        )
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr.decode()[-4000:]}")
    return {
        "seconds": time.perf_counter() - began,
        "cpu": children_cpu() - cpu,
        "requests": sum(int(n.replace(b",", b"")) for n in DONE.findall(result.stderr)),
    }


def run_tap(
    url: str,
    streams: list[str],
    workdir: Path,
    output: Path | None = None,
    window: dict = WINDOW,
    state: dict | None = None,
    tree: Tree = HERE,
    **settings: object,
) -> dict:
    """The tap as a process to /dev/null (or `output`): wall time, CPU time and peak RSS."""
    config = workdir / "tap.json"
    config.write_text(json.dumps({"api_key": KEY, "api_url": url, **window} | settings))
    command = [str(tree.bin / "tap-stripe-dd"), "--config", str(config)]
    command += ["--catalog", str(catalog_for(streams, workdir, config, tree))]
    if state is not None:
        (workdir / "state.json").write_text(json.dumps(state))
        command += ["--state", str(workdir / "state.json")]
    result = timed(command, stdout=output)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return result | {"peak_mib": peak_kib / 1024}


ACTIVITY = 100  # per emulated hour, as in README's example: the month before now is ~72,000 acts
LIVING = {"off": (), "on": ("--activity", str(ACTIVITY))}
READS = {"requests + json": decoded, "the cursor only": cursor_only}
START_GOAL = 30  # seconds for 100,000 objects per endpoint with a month of activity (issue #10)


def e_emulator(objects: int, workdir: Path) -> list[Row]:
    """Issues #2 and #10: the emulator must not be what a benchmark measures, with background
    activity or without. Its pages/s to a bare walk (requests + json) and to a client that reads
    only the cursor, each against the tap's own rate on the same charges; activity on and off
    side by side (the clock starts where the data ends, so the month of activity is in the
    tap's window), and the living emulator's start (prewarmed, its month of activity run)."""
    rows, rates, starts = [], {}, {}
    for living, extra in LIVING.items():
        began = time.perf_counter()
        with emulator(objects, "--now", str(DATA_TO), *extra) as url:
            starts[living] = time.perf_counter() - began
            walks = {what: bare_walk(url, ["charges"], read) for what, read in READS.items()}
            count = walks["requests + json"][0]
            tap_rate = count / run_tap(url, ["charges"], workdir, **UNLIMITED)["seconds"]
        for what, (count, seconds) in walks.items():
            rates[living, what] = count / seconds
            rows.append(
                Row(
                    f"E emulator, activity {living}: bare walk reading {what} ÷ the tap "
                    "(charges/s)",
                    count / seconds / tap_rate,
                    "several",
                    f"{count:,} charges, {count / 100 / seconds:,.0f} pages/s = "
                    f"{count / seconds:,.0f}/s; the tap {tap_rate:,.0f}/s",
                )
            )
    for what in READS:
        on, off = rates["on", what], rates["off", what]
        rows.append(
            Row(
                f"E emulator: bare walk reading {what}, activity on ÷ off (charges/s)",
                on / off,
                "(ref.)",
                f"{on:,.0f}/s with {ACTIVITY}/h, {off:,.0f}/s without",
            )
        )
    began = time.perf_counter()
    with emulator(objects, "--now", str(DATA_TO), *LIVING["on"], prewarm=False) as url:
        first = requests.get(f"{url}/v1/charges", params={"limit": 100}, headers=AUTH, timeout=600)
        first.raise_for_status()
        started = time.perf_counter() - began
    rows.append(
        Row(
            f"E start: {objects:,} objects per endpoint with a month of activity ({ACTIVITY}/h), "
            f"to its first list page ÷ {START_GOAL} s",
            started / START_GOAL,
            "≤ 1",
            f"{started:.1f} s as it starts by default (process start and the month's history "
            f"included); prewarmed (every object built first): {starts['on']:.1f} s to the URL, "
            f"{starts['off']:.1f} s without activity",
        )
    )
    return rows


def p1_overhead(objects: int, workdir: Path, rounds: int = 3) -> list[Row]:
    """Walk and tap alternate, `rounds` times each, and each keeps its median: on a shared
    machine one measurement of either moves by 15%. Both ways, side by side."""
    rows = []
    with emulator(objects) as url:
        for way, window in WAYS.items():
            walks, taps = [], []
            for _ in range(rounds):
                count, walk_seconds = bare_walk(url, STREAMS)
                walks.append(count / walk_seconds)
                tap = run_tap(url, STREAMS, workdir, window=window, **UNLIMITED)
                taps.append(count / tap["seconds"])
            walk_rate, tap_rate = statistics.median(walks), statistics.median(taps)
            rows.append(
                Row(
                    f"P1 tap ÷ bare page walk (objects/s), {way}",
                    tap_rate / walk_rate,
                    "≥ 0.6",
                    f"{count:,} objects, median of {rounds}: tap {tap_rate:,.0f}/s "
                    f"({min(taps):,.0f}-{max(taps):,.0f}), bare walk {walk_rate:,.0f}/s "
                    f"({min(walks):,.0f}-{max(walks):,.0f})",
                )
            )
    return rows


def p2_rate_limit(objects: int, workdir: Path) -> list[Row]:
    pages = len(STREAMS) * -(-objects // 100)
    bound = pages / 100  # Stripe's live account limit: 100 requests/s
    runs = [(f"concurrent, {way}", window, {}, "≤ 1.15") for way, window in WAYS.items()]
    runs.append(("one request per stream, as a new user", {}, {"max_concurrency": 1}, "(ref.)"))
    rows = []
    with emulator(objects, "--latency-ms", "200", "--rate-limit", "live") as url:
        for label, window, settings, goal in runs:
            tap = run_tap(url, STREAMS, workdir, window=window, api_key=LIVE_KEY, **settings)
            rows.append(
                Row(
                    f"P2 wall ÷ rate-limit bound ({label})",
                    tap["seconds"] / bound,
                    goal,
                    f"{pages:,} pages, bound {bound:.1f} s, took {tap['seconds']:.1f} s, "
                    f"{tap['requests']:,} requests",
                )
            )
    return rows


def i_incremental(objects: int, new: int, workdir: Path) -> list[Row]:
    """Requests per stream of an incremental run (default settings, no window) with nothing
    new, and with `new` objects per stream created since the last run. The emulator runs in
    this process here, for its request log and to add objects: no speed is measured."""
    rows = []
    data = {"created_from": DATA_FROM, "created_to": DATA_TO}
    with StripeEmulator(seed=11, objects=objects, **data) as emu:
        output = workdir / "first.jsonl"
        run_tap(emu.url, STREAMS, workdir, output, window={}, **UNLIMITED)
        state = last_state(output)
        for label, added in (("nothing new", 0), (f"{new:,} new objects a stream", new)):
            for stream in STREAMS:
                emu.add_objects(stream, added)
            time.sleep(1.1)  # objects of the second a run starts in belong to the next run
            emu.clear_log()
            run_tap(emu.url, STREAMS, workdir, output, window={}, state=state, **UNLIMITED)
            state = last_state(output)
            per_stream = Counter(entry.path.removeprefix("/v1/") for entry in emu.request_log)
            rows.append(
                Row(
                    f"I incremental run, {label}: requests a stream",
                    statistics.mean(per_stream[stream] for stream in STREAMS),
                    f"≤ {2 + added // 100 * 1.2:.0f}" if added else "1",
                    ", ".join(f"{stream} {per_stream[stream]}" for stream in STREAMS),
                )
            )
    return rows


def last_state(output: Path) -> dict:
    lines = [line for line in output.read_bytes().splitlines() if b'"type":"STATE"' in line]
    return json.loads(lines[-1])["value"]


def p3_end_to_end(objects: int, workdir: Path) -> list[Row]:
    """The job as meltano.yml has it (batch files included), on enough data that a long sync's
    pace, not Meltano's start-up, decides; the start-up is its own row: a run with nothing new."""
    env = job_env(workdir / "job")
    meltano("install", env=env)
    messages = workdir / "singer.jsonl"
    batches = {"encoding": {"format": "jsonl"}, "storage": {"root": str(workdir / "batches")}}
    with emulator(objects) as url:
        run = run_job(url, env)
        nothing_new = run_job(url, env)
        tap_only = run_tap(url, STREAMS, workdir, messages, batch_config=batches, **UNLIMITED)
        records = workdir / "records.jsonl"
        dump_records(url, records)
    target_config = workdir / "target.json"
    target_config.write_text(
        json.dumps(
            {
                "path": str(workdir / "alone.duckdb"),
                "default_target_schema": "mystripeapi",
                "batch_size_rows": 10_000,  # as in meltano.yml
                "add_metadata_columns": True,
            }
        )
    )
    target_only = timed([str(BIN / "target-duckdb-dd"), "--config", str(target_config)], messages)
    total = objects * len(STREAMS)
    with duckdb.connect() as conn:
        began = time.perf_counter()
        conn.execute(f"CREATE TABLE t AS SELECT * FROM read_json('{records}', format='array')")
        ceiling = time.perf_counter() - began
    objects = msgspec.json.decode(records.read_bytes())
    began = time.perf_counter()
    BATCH_ENCODER.encode_lines(objects)  # what the tap does to each page for its batch files
    serialising = time.perf_counter() - began
    rate = total / run["seconds"]
    parts_cpu = tap_only["cpu"] + target_only["cpu"]
    return [
        Row(
            "P3 meltano run objects/s ÷ 10,000/s",
            rate / 10_000,
            "≥ 1",
            f"{total:,} objects in {run['seconds']:.1f} s = {rate:,.0f}/s, start-up included",
        ),
        Row(
            "P3 fixed cost: the same job again, nothing new to load (s)",
            nothing_new["seconds"],
            "(info)",
            f"{nothing_new['cpu']:.1f} CPU-s: Meltano's and the plugins' start-up, discovery",
        ),
        Row(
            "P3 where the time goes: the tap alone, to batch files (objects/s ÷ 10,000/s)",
            total / tap_only["seconds"] / 10_000,
            "(info)",
            f"{tap_only['seconds']:.1f} s, {tap_only['cpu']:.1f} CPU-s",
        ),
        Row(
            "P3 where the time goes: serialising the objects as the tap's batch files do",
            total / serialising / 10_000,
            "(info)",
            f"{serialising:.1f} s (msgspec, one thread), part of the tap's time above",
        ),
        Row(
            "P3 where the time goes: the loader alone, on the tap's output",
            total / target_only["seconds"] / 10_000,
            "(info)",
            f"target-duckdb-dd {target_only['seconds']:.1f} s, {target_only['cpu']:.1f} CPU-s",
        ),
        Row(
            "P3 where the time goes: cores busy during meltano run",
            run["cpu"] / run["seconds"],
            "(info)",
            f"{run['cpu']:.1f} CPU-s in {run['seconds']:.1f} s; tap + loader alone "
            f"{parts_cpu:.1f} CPU-s, Meltano the rest; the emulator is not counted",
        ),
        Row(
            "P3 local ceiling: DuckDB read_json",
            total / ceiling / 10_000,
            "(info)",
            f"{total / ceiling:,.0f} objects/s",
        ),
    ]


def job_env(folder: Path) -> dict[str, str]:
    """The main job's environment, limiter lifted, with its own system database (so its own
    state) and warehouse in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    return os.environ | {
        "MELTANO_DATABASE_URI": f"sqlite:///{folder}/meltano.db",
        "TAP_STRIPE_DD_API_KEY": KEY,
        "TAP_STRIPE_DD_START_DATE": WINDOW["start_date"],
        "TAP_STRIPE_DD_END_DATE": WINDOW["end_date"],
        "TAP_STRIPE_DD_RATE_LIMIT_PER_ACCOUNT": str(UNLIMITED["rate_limit_per_account"]),
        "TAP_STRIPE_DD_RATE_LIMIT_PER_ENDPOINT": str(UNLIMITED["rate_limit_per_endpoint"]),
        "TARGET_DUCKDB_PATH": str(folder / "bench.duckdb"),
    }


def run_job(url: str, env: dict[str, str], tree: Tree = HERE) -> dict:
    """`meltano run` of the main job, as meltano.yml has it, against the emulator at `url`."""
    command = [str(tree.bin / "meltano"), "--environment", "dev", *RUN_JOB]
    return timed(command, env=env | {"TAP_STRIPE_DD_API_URL": url}, cwd=tree.root)


def meltano(*args: str, env: dict[str, str], tree: Tree = HERE) -> None:
    result = subprocess.run(
        [str(tree.bin / "meltano"), *args], cwd=tree.root, env=env, capture_output=True, text=True
    )
    if result.returncode:
        sys.exit(f"meltano {' '.join(args)} failed:\n{result.stderr[-4000:]}")


def dump_records(url: str, path: Path) -> None:
    """Every object the emulator lists, as one JSON array: what DuckDB's `read_json` loads."""
    objects: list[dict] = []

    def keep(session: requests.Session, url: str, params: dict) -> tuple[list, bool]:
        data, has_more = decoded(session, url, params)
        objects.extend(data)
        return data, has_more

    bare_walk(url, STREAMS, keep)
    path.write_text(json.dumps(objects))


P4_SMALL = 10_000  # charges: P4's peak RSS on a large data set is compared with this one's


def p4_memory(small: int, large: int, workdir: Path) -> Row:
    peaks = {}
    for objects in (small, large):
        with emulator(objects) as url:
            peaks[objects] = peak_rss(url, workdir)
    return Row(
        f"P4 peak RSS {large:,} ÷ {small:,} objects (charges)",
        peaks[large] / peaks[small],
        "≤ 1.5",
        f"{peaks[small]:.0f} MiB vs {peaks[large]:.0f} MiB",
    )


def peak_rss(url: str, workdir: Path, tree: Tree = HERE) -> float:
    """Each measurement in a fresh child, since RUSAGE_CHILDREN keeps the largest so far."""
    code = (
        "import resource;from pathlib import Path;"
        "from bench.harness import run_tap, Tree, UNLIMITED;"
        f"run_tap({url!r}, ['charges'], Path({str(workdir)!r}), "
        f"tree=Tree(Path({str(tree.root)!r}), Path({str(tree.bin)!r})), **UNLIMITED);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    from bench.accounts import p6_accounts, p6_memory  # which import this module
    from bench.baseline import BASELINE, b_baseline

    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller data sets, same measures")
    parser.add_argument(
        "--only",
        choices=["E", "P1", "P2", "P3", "P4", "P5", "I", "P6", "B"],
        action="append",
        help="run only these measures (repeatable); RESULTS.md is then left as it is. B (this "
        "tree against --baseline, on P1-P4's data) runs only when asked for",
    )
    parser.add_argument("--baseline", default=BASELINE, help="B's git revision (%(default)s)")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    size = {"P1": 20_000, "P2": 20_000, "P3": 50_000, "P4": 1_000_000}
    size = {name: objects // scale for name, objects in size.items()}
    measures: dict[str, Callable[[Path], list[Row]]] = {
        "E": lambda workdir: e_emulator(100_000 // scale, workdir),
        "P1": lambda workdir: p1_overhead(size["P1"], workdir),
        "P2": lambda workdir: p2_rate_limit(size["P2"], workdir),
        "P3": lambda workdir: p3_end_to_end(size["P3"], workdir),
        "P4": lambda workdir: [p4_memory(P4_SMALL, size["P4"], workdir)],
        "I": lambda workdir: i_incremental(10_000 // scale, 1_000 // scale, workdir),
        "P5": lambda workdir: p5_changes(5_000 // scale, 10_000 // scale, workdir),
        "P6": lambda workdir: [
            *p6_accounts(1_000 // scale, 20, workdir),
            p6_memory(1_000 // scale, 3, workdir),
        ],
        "B": lambda workdir: b_baseline(size, workdir, args.baseline),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or [name for name in measures if name != "B"]:
            measured = measures[name](Path(tmp))
            for row in measured:  # as it comes: a long run on a shared machine may not end
                print(row.line(), flush=True)
            rows += measured
    report = render(rows, " ".join(["python -m bench", *(argv or sys.argv[1:])]))
    print(report)
    if not args.only:
        record(report, ROOT / "bench" / "RESULTS.md")
    return 0


from bench.changes import p5_changes  # noqa: E402  (it builds on this module)

RESULTS_TITLE = "# Benchmark results"


def record(report: str, path: Path) -> None:
    """A full run goes atop RESULTS.md: the runs before it stay below, for the spread."""
    earlier = path.read_text().removeprefix(RESULTS_TITLE).lstrip("\n") if path.exists() else ""
    path.write_text(f"{RESULTS_TITLE}\n\n{report}\n{earlier}")


def render(rows: list[Row], command: str) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [
        f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `{command}`",
        "",
        f"On {machine}.",
        "",
        "| measure | ratio | goal | detail |",
        "|---|---:|---|---|",
        *(row.line() for row in rows),
        "",
    ]
    return "\n".join(lines)
