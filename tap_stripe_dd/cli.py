"""`stripe-dd`: the project's one helper command (emulator, query tool, demo)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tap_stripe_dd.errors import UserError

# Each module registers its own subcommands with `register(subparsers)`; imported lazily
# so that `stripe-dd emulator` does not pay for DuckDB and `stripe-dd query` not for the emulator.
SUBCOMMAND_MODULES = {
    "emulator": "tap_stripe_dd.emulator",
    "query": "tap_stripe_dd.query",
    "samples": "tap_stripe_dd.query",
    "tables": "tap_stripe_dd.query",
    "demo": "tap_stripe_dd.demo",
    "sync": "tap_stripe_dd.sync",
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stripe-dd", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = (
        {SUBCOMMAND_MODULES[command]}
        if command in SUBCOMMAND_MODULES
        else dict.fromkeys(SUBCOMMAND_MODULES.values())
    )
    for module in modules:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"stripe-dd {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
