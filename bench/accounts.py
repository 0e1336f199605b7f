"""P6: a Connect platform's accounts side by side (issue #13).

Wall time of 20 connected accounts (six streams, `objects` each) ÷ that of one account with the
same data, under Stripe's live limits per account and 200 ms latency: accounts read one after
another would give 20, side by side about 1. Also CPU per object, the accounts per core that
rate leaves room for, and peak RSS with 1,000 small accounts beside one small account's.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

from bench.harness import LIVE_KEY, ROOT, STREAMS, UNLIMITED, Row, emulator, run_tap

ALL = {"account_ids": "all", "include_platform": False}


def p6_accounts(objects: int, accounts: int, workdir: Path) -> list[Row]:
    live = ("--latency-ms", "200", "--rate-limit", "live")
    runs = {}
    for count in (1, accounts):
        with emulator(objects, "--accounts", str(count), *live) as url:
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


def p6_memory(small: int, objects: int, workdir: Path) -> Row:
    """Peak RSS of the tap with `small` accounts and with 1, a few objects each."""
    peaks = {count: account_rss(count, objects, workdir) for count in (1, small)}
    return Row(
        f"P6 peak RSS {small:,} accounts ÷ 1 account ({objects} objects per stream each)",
        peaks[small] / peaks[1],
        "≤ 1.5",
        f"{peaks[1]:.0f} MiB vs {peaks[small]:.0f} MiB",
    )


def account_rss(accounts: int, objects: int, workdir: Path) -> float:
    """In a fresh child: RUSAGE_CHILDREN keeps the largest peak so far."""
    code = (
        "import resource;from pathlib import Path;from bench.accounts import measure_rss;"
        f"measure_rss({accounts}, {objects}, Path({str(workdir)!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip())


def measure_rss(accounts: int, objects: int, workdir: Path) -> None:
    with emulator(objects, "--accounts", str(accounts)) as url:
        run_tap(url, STREAMS, workdir, **ALL, **UNLIMITED)
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
