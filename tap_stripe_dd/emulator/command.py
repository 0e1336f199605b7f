"""`stripe-dd emulator`: serve the emulator until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import calendar
import gc
import signal
import sys
import threading
import time
from typing import Any, NoReturn

from tap_stripe_dd.emulator.emulator import StripeEmulator
from tap_stripe_dd.emulator.versions import DEFAULT_ACCOUNT_VERSION
from tap_stripe_dd.errors import UserError

DAY = 86_400
DESCRIPTION = """\
Serve a living Stripe account on 127.0.0.1 until stopped. The first line printed is the URL.

It lists and retrieves balance_transactions, charges, customers, disputes, payouts, refunds
(with expand[]), serves /v1/events, /v1/account and /v1/accounts, and takes Stripe's writes.
It has its own clock (--now, the Date header): as it runs or is advanced, payouts get paid (or
fail), balance transactions become available, disputes and refunds move on, and --activity
creates and changes more. Events are kept 30 days and listed --events-lag seconds late; objects
render in Stripe-Version, else in --account-api-version (so does every event's data.object).

  URL=http://127.0.0.1:12111; KEY=sk_test_emulator0000000
  curl -u $KEY: "$URL/v1/events?type=charge.*&limit=100"      # or types[]=...&types[]=...
  curl -u $KEY: "$URL/v1/charges?expand[]=data.customer" -H "Stripe-Version: 2024-06-20"
  curl -u $KEY: $URL/v1/customers -d email=jenny@example.com -d "metadata[plan]=pro"
  curl -u $KEY: $URL/v1/customers/cus_... -d name="Jenny Rosen" -d "metadata[plan]="
  curl -u $KEY: -X DELETE $URL/v1/customers/cus_...
  curl -u $KEY: $URL/v1/charges -d amount=2000 -d currency=usd -d customer=cus_...
  curl -u $KEY: $URL/v1/charges/ch_... -d description="Order 42" -d "metadata[order]=42"
  curl -u $KEY: $URL/v1/refunds -d charge=ch_... -d amount=500
  curl -u $KEY: $URL/v1/disputes/dp_... -d "evidence[customer_name]=Jenny"
  curl -u $KEY: -X POST $URL/v1/disputes/dp_.../close
  curl -u $KEY: $URL/v1/payouts -d amount=5000 -d currency=usd
  curl -u $KEY: -X POST $URL/v1/payouts/po_.../cancel
  curl -X POST $URL/_emulator/clock -d advance=86400           # a day passes: {"now": ...}
"""


def unix_time(end_of_day: bool) -> Any:
    """An argparse type: a Unix time, or a UTC date (its first second, or its last)."""

    def parse(text: str) -> int:
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            day = calendar.timegm(time.strptime(text, "%Y-%m-%d"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not YYYY-MM-DD or a Unix time") from None
        return day + DAY - 1 if end_of_day else day

    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "emulator",
        help="serve a local Stripe-compatible API",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DESCRIPTION,
    )
    parser.error = one_line_error  # type: ignore[method-assign]
    parser.add_argument("--port", type=int, default=12111, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=0, help="the same seed serves the same data")
    parser.add_argument("--objects", type=int, default=1_000, help="objects per endpoint")
    parser.add_argument("--api-key", help="accept only this key (default: any well-formed key)")
    parser.add_argument("--latency-ms", type=float, default=0, help="delay of every response")
    parser.add_argument("--jitter-ms", type=float, default=0, help="random extra delay, up to")
    parser.add_argument(
        "--faults", metavar="SPEC", help="random faults, e.g. 429=0.2@2,500=0.05,drop=0.01"
    )
    parser.add_argument("--rate-limit", choices=("live", "test", "off"), default="off")
    parser.add_argument(
        "--created-from",
        type=unix_time(end_of_day=False),
        metavar="DATE",
        help="first creation time, YYYY-MM-DD (UTC) or Unix time (default 2024-01-01)",
    )
    parser.add_argument(
        "--created-to",
        type=unix_time(end_of_day=True),
        metavar="DATE",
        help="last creation time, YYYY-MM-DD (whole day, UTC) or Unix time (default 2025-12-31)",
    )
    parser.add_argument(
        "--now",
        type=unix_time(end_of_day=False),
        metavar="DATE",
        help="the clock's start, YYYY-MM-DD (UTC) or Unix time (default: the machine's time); "
        "it runs with real time from there",
    )
    parser.add_argument(
        "--activity",
        type=int,
        default=0,
        metavar="N",
        help="objects created or changed per emulated hour, in the last 30 days and from now on "
        "(default 0: only lifecycles move)",
    )
    parser.add_argument(
        "--accounts",
        type=int,
        default=0,
        metavar="N",
        help="connected accounts, listed by GET /v1/accounts, each with its own data (default 0)",
    )
    parser.add_argument(
        "--events-lag",
        type=float,
        default=2,
        metavar="SECONDS",
        help="how long after its `created` an event is listed (default 2)",
    )
    parser.add_argument(
        "--account-api-version",
        default=DEFAULT_ACCOUNT_VERSION,
        metavar="VERSION",
        help="the accounts' default API version, for events and requests without "
        f"Stripe-Version (default {DEFAULT_ACCOUNT_VERSION})",
    )
    parser.add_argument(
        "--cache-size",
        type=int,
        default=20_000,
        metavar="N",
        help="built objects kept per endpoint, so that serving them again is cheap (default 20000)",
    )
    parser.add_argument(
        "--prewarm",
        action="store_true",
        help="build every object before serving and keep its JSON, so that serving costs "
        "little CPU: for benchmarks (6 x 100,000 objects take ~15 s on two cores)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        emulator = StripeEmulator(
            seed=args.seed,
            objects=args.objects,
            api_key=args.api_key,
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
            faults=args.faults,
            rate_limit=args.rate_limit,
            created_from=args.created_from,
            created_to=args.created_to,
            port=args.port,
            cache_size=args.cache_size,
            prewarm=args.prewarm,
            now=args.now,
            activity=args.activity,
            accounts=args.accounts,
            events_lag=args.events_lag,
            account_api_version=args.account_api_version,
        )
        began = time.monotonic()
        if args.prewarm:
            say(f"building {args.objects} objects per endpoint before serving...")
        if args.activity:
            say(f"running the last 30 days of activity ({args.activity} per hour)...")
        emulator.start()
        # What is built stays: the cycle collector, which would scan it all again and again
        # while serving, looks at what is made from now on only (this process is the emulator's).
        gc.freeze()
    except ValueError as error:
        raise UserError(str(error)) from None
    except OSError as error:
        raise UserError(f"cannot listen on 127.0.0.1:{args.port}: {error.strerror}") from None
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(emulator.url, flush=True)
    prewarmed = f", built in {time.monotonic() - began:.1f} s" if args.prewarm else ""
    living = f", activity {args.activity}/h" if args.activity else ""
    accounts = f", {args.accounts} connected accounts" if args.accounts else ""
    say(
        f"{args.objects} objects per endpoint{prewarmed}, seed {args.seed}{living}{accounts}, "
        f"platform {emulator.platform_id}; Ctrl-C to stop"
    )
    while not stop.wait(0.5):
        pass
    emulator.stop()
    return 0


def one_line_error(message: str) -> NoReturn:
    """argparse's errors as the rest of the CLI's: one line, exit code 2, no usage block."""
    print(f"stripe-dd emulator: error: {message} (see --help)", file=sys.stderr)
    sys.exit(2)


def say(message: str) -> None:
    """Progress goes to stderr: stdout's first line is the URL, which scripts wait for."""
    print(f"stripe-dd emulator: {message}", file=sys.stderr, flush=True)
