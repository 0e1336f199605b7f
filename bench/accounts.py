"""P6: a Connect platform's accounts side by side (issue #13).

Wall time of 20 connected accounts (six streams, `objects` each) ÷ that of one account with the
same data, under Stripe's live limits per account and 200 ms latency: accounts read one after
another would give 20, side by side about 1. Also CPU per object, the accounts per core that
rate leaves room for, and peak RSS with 1,000 small accounts beside one small account's.

The emulator's `--prewarm` builds the platform's objects only: a connected account's are built
when first listed. Each run here reads them once before the tap is timed (`warm`), so that the
server, on the same two cores, is not what the ratio measures (20 accounts' objects are 20 times
the building). Peak RSS is the tap's own process (`LAUNCH`), never the emulator's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench.harness import (
    BIN,
    KEY,
    LIVE_KEY,
    ROOT,
    STREAMS,
    UNLIMITED,
    WINDOW,
    Row,
    catalog_for,
    emulator,
    run_tap,
)
from tap_stripe_dd.client import STRIPE_VERSION

ALL = {"account_ids": "all", "include_platform": False}


def p6_accounts(objects: int, accounts: int, workdir: Path) -> list[Row]:
    live = ("--latency-ms", "200", "--rate-limit", "live")
    runs = {}
    for count in (1, accounts):
        with emulator(objects, "--accounts", str(count), *live) as url:
            warm(url, LIVE_KEY)
            runs[count] = run_tap(url, STREAMS, workdir, api_key=LIVE_KEY, **ALL)
    one, many = runs[1], runs[accounts]
    total = objects * len(STREAMS) * accounts
    cpu_per_object = many["cpu"] / total
    per_account_rate = objects * len(STREAMS) / one["seconds"]  # one account's objects/s
    return [
        Row(
            f"P6 wall {accounts} accounts ÷ 1 account (live limits per account, 200 ms)",
            many["seconds"] / one["seconds"],
            "≤ 3",
            f"{total:,} objects: {many['seconds']:.1f} s vs {one['seconds']:.1f} s; "
            f"CPU {cpu_per_object * 1e6:.0f} µs/object; one core sustains "
            f"{1 / cpu_per_object / per_account_rate:.1f} accounts at one account's "
            f"{per_account_rate:,.0f} objects/s",
        )
    ]


def warm(url: str, key: str) -> None:
    """Every connected account's six lists, read once (see the module's docstring)."""
    headers = {"Authorization": f"Bearer {key}", "Stripe-Version": STRIPE_VERSION}
    lists = [
        (f"{url}/v1/{stream}", {**headers, "Stripe-Account": listed["id"]})
        for listed in objects_of(f"{url}/v1/accounts", headers)
        for stream in STREAMS
    ]
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda args: objects_of(*args), lists))


def objects_of(url: str, headers: dict) -> list[dict]:
    """Every object a list has, newest first; a 429 waits and asks again."""
    session, listed, params = requests.Session(), [], {"limit": 100}
    while True:
        response = session.get(url, params=params, headers=headers, timeout=60)
        if response.status_code == 429:
            time.sleep(1)
            continue
        response.raise_for_status()
        body = response.json()
        listed += body["data"]
        if not body["has_more"]:
            return listed
        params["starting_after"] = body["data"][-1]["id"]


def p6_memory(small: int, objects: int, workdir: Path) -> Row:
    """Peak RSS of the tap with `small` accounts and with 1, a few objects each."""
    peaks = {count: account_rss(count, objects, workdir) for count in (1, small)}
    return Row(
        f"P6 peak RSS {small:,} accounts ÷ 1 account ({objects} objects per stream each)",
        peaks[small] / peaks[1],
        "≤ 1.5",
        f"{peaks[1]:.0f} MiB vs {peaks[small]:.0f} MiB (the tap's process)",
    )


# Forks the tap from a small interpreter and reports its peak RSS (KiB) and exit code to a file:
# Linux keeps the peak of the image a process was forked from across exec (the benchmark's
# own, hundreds of MiB, for a child of this process), so the fork is from a few MiB.
LAUNCH = """import os, sys
pid = os.fork()
if not pid:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def account_rss(accounts: int, objects: int, workdir: Path) -> float:
    """The tap's own peak RSS in MiB."""
    with emulator(objects, "--accounts", str(accounts)) as url:
        config = workdir / "tap.json"
        settings = {"api_key": KEY, "api_url": url, **WINDOW} | ALL | UNLIMITED
        config.write_text(json.dumps(settings))
        command = [str(BIN / "tap-stripe-dd"), "--config", str(config)]
        command += ["--catalog", str(catalog_for(STREAMS, workdir, config))]
        report = workdir / "rss"
        result = subprocess.run(
            [sys.executable, "-S", "-c", LAUNCH, str(report), *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            check=False,
        )
    peak, code = map(int, report.read_text().split())
    if result.returncode or code:
        raise SystemExit(f"the tap failed:\n{result.stderr.decode()[-4000:]}")
    return peak / 1024
