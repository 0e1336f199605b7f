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
        meltano(root, "--environment", "dev", "run", "stripe-to-duckdb", env=env)
    database = str(root / "output" / "stripe.duckdb")
    return cli.main(["samples", "--db", database]) or cli.main(["tables", "--db", database])


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="emulator → meltano run → DuckDB → sample queries")
    parser.add_argument("--seed", type=int, default=42, help="the emulator's data set")
    parser.add_argument("--objects", type=int, default=2_000, help="objects per endpoint")
    parser.set_defaults(func=run)
