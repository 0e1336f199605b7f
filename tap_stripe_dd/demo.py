"""`stripe-dd demo`: the main job end to end, with no Stripe account and no network.

The emulator serves a deterministic Stripe account on a free loopback port, Meltano runs
`stripe-to-duckdb` in the `dev` environment against it (whose warehouse, output/dev/, is not
production's), and the query tool answers the six sample queries and prints the warehouse's tree.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from tap_stripe_dd import cli
from tap_stripe_dd.emulator import StripeEmulator
from tap_stripe_dd.errors import UserError
from tap_stripe_dd.query import warehouse

BIN = Path(sys.executable).parent
ENVIRONMENT = warehouse.EMULATOR_ENVIRONMENT  # its own warehouse: fake data never meets Stripe's
MAX_OBJECTS = 1_000_000  # the emulator holds them in memory


def project_root(start: Path) -> Path:
    root = warehouse.project_root(start)
    if root is None:
        msg = "no meltano.yml here or above: run it in the tap-stripe-dd project folder"
        raise UserError(msg)
    return root


def whole_number(name: str, text: str, low: int | None = None, high: int | None = None) -> int:
    """An option's value, or one line that says what it takes (argparse would print its usage)."""
    try:
        number = int(text.replace("_", ""))
    except ValueError:
        number = None
    if number is None or (low is not None and number < low) or (high is not None and number > high):
        bounds = f" from {low:,} to {high:,}" if low is not None and high is not None else ""
        raise UserError(f"{name} takes a whole number{bounds}, not {text!r}")
    return number


def meltano(root: Path, *args: str, env: dict[str, str] | None = None) -> None:
    print(f"$ meltano {' '.join(args)}", flush=True)
    result = subprocess.run([str(BIN / "meltano"), *args], cwd=root, env=env, check=False)
    if result.returncode:
        msg = f"`meltano {' '.join(args)}` failed with exit code {result.returncode}"
        raise UserError(msg)


def run(args: argparse.Namespace) -> int:
    seed = whole_number("--seed", args.seed)
    objects = whole_number("--objects", args.objects, 1, MAX_OBJECTS)
    root = project_root(Path.cwd())
    location = warehouse.environment_warehouse(root, ENVIRONMENT)
    if not (root / ".meltano" / "extractors" / "tap-stripe-dd" / "venv").is_dir():
        meltano(root, "install")
    with StripeEmulator(seed=seed, objects=objects) as emulator:
        print(f"Stripe emulator: {emulator.url} ({objects:,} objects per endpoint)")
        env = os.environ | {"TAP_STRIPE_DD_API_URL": emulator.url}
        # From scratch: the previous demo's second sync left bookmarks three weeks ahead.
        meltano(root, *RUN, "--full-refresh", env=env)
        database = str(location.path)
        second_sync(emulator, lambda: meltano(root, *RUN, env=env), database)
    code = cli.main(["samples", "--db", database]) or cli.main(["tables", "--db", database])
    print(f"\nWarehouse: {location}; query it with `stripe-dd query --environment {ENVIRONMENT} …`")
    return code


RUN = ("--environment", ENVIRONMENT, "run", "stripe-to-duckdb")
DAY = 86_400


def second_sync(emulator: StripeEmulator, sync: Callable[[], None], database: str) -> None:
    """Three weeks pass and objects loaded by the first sync change (a refund, evidence on a
    dispute, which is decided later, payouts paid, a customer renamed, one deleted); the second
    sync is incremental, and the changed rows are shown before and after it."""

    def first(objects: Iterable[dict], wanted: Callable[[dict], bool]) -> str:
        """The first such object's id; '' when a small data set has none (its rows are then
        simply not shown)."""
        return next((o["id"] for o in objects if wanted(o)), "")

    charge = first(reversed(emulator.current("charges")), lambda c: c["paid"] and not c["refunded"])
    dispute = first(emulator.current("disputes"), lambda d: d["status"] == "needs_response")
    payout = first(emulator.current("payouts"), lambda p: p["status"] == "pending")
    renamed, deleted = ([c["id"] for c in emulator.current("customers")[-2:]] + ["", ""])[:2]
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
    evidence = {"evidence[uncategorized_text]": "Signed delivery receipt attached."}
    for wanted, method, path, params in (
        (charge, "POST", "/v1/refunds", {"charge": charge}),
        (dispute, "POST", f"/v1/disputes/{dispute}", evidence),
        (renamed, "POST", f"/v1/customers/{renamed}", {"name": "Jenny Rosen (renamed)"}),
        (deleted, "DELETE", f"/v1/customers/{deleted}", None),
    ):
        if wanted:
            emulator.write(method, path, params)
    emulator.advance(21 * DAY)
    print("\nThree weeks later, in the emulator: the second sync (incremental)", flush=True)
    sync()
    print("\nAfter: the same rows", flush=True)
    cli.main(["query", sql, "--db", database])


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="emulator → meltano run → DuckDB → sample queries")
    parser.add_argument("--seed", default="42", help="the emulator's data set (a whole number)")
    parser.add_argument(
        "--objects", default="2000", help=f"objects per endpoint (1 to {MAX_OBJECTS:,})"
    )
    parser.set_defaults(func=run)
