"""A local Stripe-compatible API on loopback: a living Stripe account, deterministic per seed.

It serves the list and retrieve endpoints of six resources (with `expand[]`), `/v1/events`,
`/v1/account` and `/v1/accounts`, and Stripe's writes, in Stripe's envelope and order (newest
first), with Stripe's pagination, filters, errors, auth, versions and rate limits, plus faults
on demand. It has its own clock: objects move through Stripe's lifecycles as it runs or is
advanced, and background activity creates and changes more. Stdlib only.

    from tap_stripe_dd.emulator import StripeEmulator

    with StripeEmulator(seed=7, objects=500) as emu:   # also: api_key, latency_ms, jitter_ms,
        emu.url                                         # faults, rate_limit, created_from/_to,
                                                        # cache_size, prewarm, now, frozen,
                                                        # activity, accounts, events_lag,
                                                        # account_api_version
        emu.ids("charges")                # ids the list endpoint shows now, newest first
        emu.current("charges", version="2022-08-01")   # the truth: live objects, as listed
        emu.deleted("customers")          # ids deleted so far
        emu.advance(86_400)               # a day passes (lifecycles, activity), in every account
        emu.write("POST", "/v1/refunds", {"charge": "ch_..."})  # a write, as over HTTP
        emu.events()                      # every event recorded, served yet or not
        emu.platform_id, emu.connected_accounts
        emu.add_objects("charges", 5, visible_after=2)  # imports (no events), listed 2 s later
        emu.script_fault("/v1/charges", nth=3, kind="429", retry_after=0)
        emu.set_faults("500=0.05,drop=0.01")
        emu.request_log, emu.clear_log()

Modules, by concern: clock.py (now), dataset.py / timeline.py / objects.py / keys.py (the
generated "born" objects, lazy, from their index), links.py (which born refunds and disputes
belong to which born charge), state.py (one living account: the overlay
of changed objects and the heap of what happens when), lifecycles.py (how objects change, with
their events), born.py (the born objects' recent history), activity.py (background activity),
events.py (the event log and /v1/events), writes.py (the write endpoints), versions.py (API
versions), expansion.py (expand[]), accounts.py (the platform and connected accounts),
lists.py (list endpoints), api.py (routing), protocol.py (requests, responses, errors),
server.py (HTTP), faults.py (faults and rate limits), emulator.py (the Python handle).

From the shell: `stripe-dd emulator --port 0 --objects 1000` prints its URL, then serves
(`--help` has the rest). Objects are built when first asked for (~25 µs each), and the last
`cache_size` (default 20,000) of each resource stay built. For benchmarks, `prewarm`
(`--prewarm`) builds all of the platform's objects before serving, in a process per CPU if there
are many, and keeps their JSON: serving a page is then list lookups and one join, so the client
is what is measured. A changed object is served from its own cached JSON.
"""

from tap_stripe_dd.emulator.command import register, run
from tap_stripe_dd.emulator.emulator import StripeEmulator
from tap_stripe_dd.emulator.server import LogEntry

__all__ = ["LogEntry", "StripeEmulator", "register", "run"]
