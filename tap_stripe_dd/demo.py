"""`stripe-dd demo`: the main job end to end, with no Stripe account and no network.

The emulator serves a deterministic Stripe account on a free loopback port, Meltano runs
`stripe-to-duckdb` in the `dev` environment against it, and the query tool answers the six
sample queries and prints the warehouse's tree.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tap_stripe_dd import cli
from tap_stripe_dd.emulator import StripeEmulator
from tap_stripe_dd.errors import UserError

BIN = Path(sys.executable).parent


def project_root(start: Path) -> Path:
    for folder in (start, *start.parents):
        if (folder / "meltano.yml").is_file():
            return folder
    msg = "no meltano.yml here or above: run it in the tap-stripe-dd project folder"
    raise UserError(msg)


def meltano(root: Path, *args: str, env: dict[str, str] | None = None) -> None:
    print(f"$ meltano {' '.join(args)}", flush=True)
    result = subprocess.run([str(BIN / "meltano"), *args], cwd=root, env=env, check=False)
    if result.returncode:
        msg = f"`meltano {' '.join(args)}` failed with exit code {result.returncode}"
        raise UserError(msg)


def run(args: argparse.Namespace) -> int:
    root = project_root(Path.cwd())
    if not (root / ".meltano" / "extractors" / "tap-stripe-dd" / "venv").is_dir():
        meltano(root, "install")
    with StripeEmulator(seed=args.seed, objects=args.objects) as emulator:
        print(f"Stripe emulator: {emulator.url} ({args.objects:,} objects per endpoint)")
        env = os.environ | {"TAP_STRIPE_DD_API_URL": emulator.url}
        # From scratch: the previous demo's second sync left bookmarks three weeks ahead.
        meltano(root, *RUN, "--full-refresh", env=env)
        database = str(root / "output" / "stripe.duckdb")
        second_sync(emulator, lambda: meltano(root, *RUN, env=env), database)
    return cli.main(["samples", "--db", database]) or cli.main(["tables", "--db", database])


RUN = ("--environment", "dev", "run", "stripe-to-duckdb")
DAY = 86_400


def second_sync(emulator: StripeEmulator, sync: Callable[[], None], database: str) -> None:
    """Three weeks pass and objects loaded by the first sync change (a refund, evidence on a
    dispute, which is decided later, payouts paid, a customer renamed, one deleted); the second
    sync is incremental, and the changed rows are shown before and after it."""
    charge = next(c["id"] for c in reversed(emulator.current("charges")) if c["paid"])
    dispute = next(d["id"] for d in emulator.current("disputes") if d["status"] == "needs_response")
    payout = next(p["id"] for p in emulator.current("payouts") if p["status"] == "pending")
    renamed, deleted = (c["id"] for c in emulator.current("customers")[-2:])
    sql = (
        "SELECT 'charges' AS \"table\", 'refunded ' || refunded || ', amount_refunded ' || "
        f"amount_refunded AS value FROM mystripeapi.charges WHERE id = '{charge}' UNION ALL "
        "SELECT 'disputes', 'status ' || status FROM mystripeapi.disputes "
        f"WHERE id = '{dispute}' UNION ALL SELECT 'payouts', 'status ' || status "
        f"FROM mystripeapi.payouts WHERE id = '{payout}' UNION ALL SELECT 'customers', "
        "coalesce('deleted at ' || left(_sdc_deleted_at, 16), 'name ' || name) "
        "FROM mystripeapi.customers "
        f"WHERE id IN ('{renamed}', '{deleted}') ORDER BY 1, 2"
    )
    print("\nBefore: rows the next sync will change", flush=True)
    cli.main(["query", sql, "--db", database])
    emulator.write("POST", "/v1/refunds", {"charge": charge})
    evidence = {"evidence[uncategorized_text]": "Signed delivery receipt attached."}
    emulator.write("POST", f"/v1/disputes/{dispute}", evidence)
    emulator.write("POST", f"/v1/customers/{renamed}", {"name": "Jenny Rosen (renamed)"})
    emulator.write("DELETE", f"/v1/customers/{deleted}")
    emulator.advance(21 * DAY)
    print("\nThree weeks later, in the emulator: the second sync (incremental)", flush=True)
    sync()
    print("\nAfter: the same rows", flush=True)
    cli.main(["query", sql, "--db", database])


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="emulator → meltano run → DuckDB → sample queries")
    parser.add_argument("--seed", type=int, default=42, help="the emulator's data set")
    parser.add_argument("--objects", type=int, default=2_000, help="objects per endpoint")
    parser.set_defaults(func=run)
