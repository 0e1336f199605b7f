"""A local Stripe-compatible API: the list and retrieve endpoints of six resources, on loopback.

It serves deterministic objects shaped like today's Stripe objects, in Stripe's list envelope and
order (newest first), with Stripe's pagination, filters, errors, auth and rate limits, plus faults
on demand, so that a sync against it means something. Stdlib only.

    from tap_stripe_dd.emulator import StripeEmulator

    with StripeEmulator(seed=7, objects=500) as emu:   # also: api_key, latency_ms, jitter_ms,
        emu.url                                         # faults, rate_limit, created_from/_to,
                                                        # cache_size, prewarm
        emu.ids("charges")                # ids the list endpoint shows now, newest first
        emu.objects("charges")            # the same objects, as dicts
        emu.add_objects("charges", 5, visible_after=2)  # new objects, listed 2 s later
        emu.script_fault("/v1/charges", nth=3, kind="429", retry_after=0)
        emu.set_faults("500=0.05,drop=0.01")
        emu.request_log, emu.clear_log()

Resources: balance_transactions, charges, customers, disputes, payouts, refunds. A
`Stripe-Account: acct_...` header selects another account's data set (`account=` in the API).
Any well-formed key works unless `api_key` is given; `rk_..._noperm...` keys get 403.
From the shell: `stripe-dd emulator --port 0 --objects 1000` prints its URL, then serves.

Objects are built when first asked for (~25 µs each), and the last `cache_size` (default
20,000) of each resource stay built. For benchmarks, `prewarm` (`--prewarm`) builds all of the
platform's objects before serving, in a process per CPU if there are many, and keeps their
JSON: serving a page is then list lookups and one join, so the client is what is measured.
"""

from tap_stripe_dd.emulator.command import register, run
from tap_stripe_dd.emulator.emulator import StripeEmulator
from tap_stripe_dd.emulator.server import LogEntry

__all__ = ["LogEntry", "StripeEmulator", "register", "run"]
