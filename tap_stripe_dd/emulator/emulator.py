"""StripeEmulator: the in-process handle that tests, the demo and the benchmarks use."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from types import TracebackType

from tap_stripe_dd.emulator import activity as _activity  # noqa: F401  (registers its actions)
from tap_stripe_dd.emulator import disputes as _disputes  # noqa: F401  (registers its actions)
from tap_stripe_dd.emulator.accounts import Accounts
from tap_stripe_dd.emulator.api import KEY_SHAPE, Api
from tap_stripe_dd.emulator.born import adopt
from tap_stripe_dd.emulator.clock import Clock
from tap_stripe_dd.emulator.dataset import INFINITY, LOWEST, Dataset
from tap_stripe_dd.emulator.faults import Fault, Faults, RateLimiter
from tap_stripe_dd.emulator.lifecycles import HOUR
from tap_stripe_dd.emulator.objects import RESOURCES
from tap_stripe_dd.emulator.protocol import Request, StripeError
from tap_stripe_dd.emulator.server import LogEntry, Server, Service
from tap_stripe_dd.emulator.state import State, no_cycle_collection
from tap_stripe_dd.emulator.versions import DEFAULT_ACCOUNT_VERSION, LATEST, valid

DEFAULT_CREATED_FROM = 1_704_067_200  # 2024-01-01T00:00:00Z; the data set ends at `now`
MAX_ACTIVITY = 3_600  # per hour (one a second): a month of history is 2.6 million acts, minutes
MAX_ACCOUNTS = 10_000
HISTORY = 30 * 86_400  # activity has run for this long before the clock's start


class StripeEmulator:
    """A Stripe-compatible API on 127.0.0.1 serving `objects` deterministic objects per endpoint,
    as a living account: a clock (`now`, `advance`), lifecycles, writes, events, activity.

    Objects are built when first asked for; the last `cache_size` of each resource stay built.
    `prewarm` renders all of the platform's objects in start() instead, before it listens, so
    that a benchmark measures the client rather than the building of objects. `frozen` stops
    the clock from running with real time (it moves only by `advance`), for tests that compare
    histories byte for byte.
    """

    def __init__(
        self,
        seed: int = 0,
        objects: int = 1_000,
        api_key: str | None = None,
        latency_ms: float = 0,
        jitter_ms: float = 0,
        faults: str | None = None,
        rate_limit: str = "off",
        created_from: int | None = None,
        created_to: int | None = None,
        *,
        port: int = 0,
        cache_size: int = 20_000,
        prewarm: bool = False,
        now: float | None = None,
        frozen: bool = False,
        activity: int = 0,
        accounts: int | Sequence[str] = 0,
        events_lag: float = 2,
        account_api_version: str = DEFAULT_ACCOUNT_VERSION,
    ) -> None:
        self.seed = seed
        self.count = objects
        if now is not None and not 0 <= now < 1 << 40:
            raise ValueError(f"now must be a Unix time, not {now}")
        self.clock = Clock(now, frozen)
        start = int(self.clock.start)
        self.created_from = DEFAULT_CREATED_FROM if created_from is None else created_from
        self.created_to = start if created_to is None else created_to
        if objects < 0:
            raise ValueError("objects must not be negative")
        if self.created_from > self.created_to:
            raise ValueError("created_from must not be after created_to")
        if api_key is not None and not KEY_SHAPE.fullmatch(api_key):
            raise ValueError(
                "api_key must look like sk_test_..., sk_live_..., rk_test_... or rk_live_..."
            )
        if latency_ms < 0 or jitter_ms < 0:
            raise ValueError("latency and jitter must not be negative")
        if cache_size < 0:
            raise ValueError("cache_size must not be negative")
        if not 0 <= port <= 65_535:
            raise ValueError(f"port must be 0 to 65535 (0 picks a free one), not {port}")
        if not 0 <= activity <= MAX_ACTIVITY:
            raise ValueError(f"activity must be 0 to {MAX_ACTIVITY} per hour, not {activity}")
        if isinstance(accounts, int) and not 0 <= accounts <= MAX_ACCOUNTS:
            raise ValueError(f"accounts must be 0 to {MAX_ACCOUNTS}, not {accounts}")

        if not events_lag >= 0:
            raise ValueError("events_lag must not be negative")
        if not valid(account_api_version):
            raise ValueError(
                f"the account API version must look like {LATEST}, not {account_api_version!r}"
            )
        self.activity = activity
        self._api_key = api_key
        self.events_lag = events_lag
        self.account_api_version = account_api_version
        self.accounts = Accounts(seed, accounts, self.created_from, start)
        self._cache_size = max(cache_size, objects) if prewarm else cache_size
        self._prewarm = prewarm
        self._states: dict[str | None, State] = {}
        self._prewarmed: Dataset | None = None
        self._lock = threading.Lock()
        api = Api(self, api_key)
        self._faults = Faults(seed, faults)
        limiter = RateLimiter(rate_limit)
        self._service = Service(api, self._faults, limiter, latency_ms, jitter_ms, self.clock)
        self._service.platform = self.accounts.platform
        self._port = port
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle -------------------------------------------------------------------------------

    def start(self) -> StripeEmulator:
        if self._prewarm and None in self._states:
            self._states[None].dataset.prewarm()
            self._prewarm = False
        if self._prewarm:
            # Before the platform's history runs, which then reads prewarmed bytes.
            dataset = Dataset(
                self.seed, None, self.count, self.created_from, self.created_to, self._cache_size
            )
            dataset.prewarm()
            self._prewarmed = dataset
            self._prewarm = False  # a restart after stop() serves what is rendered already
        state = self.state(None)  # the platform's history runs before the first request
        if self._prewarmed is not None:
            state.prewarm()
        if self._server is None:
            self._server = Server(self._port, self._service)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},  # how long stop() may wait for the loop
                name="stripe-emulator",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving; requests stalled by latency or a `slow` fault are cut off."""
        if self._server is None:
            return
        self._service.stopping.set()
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._server = None

    def __enter__(self) -> StripeEmulator:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running; use start() or a with block")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # Time ------------------------------------------------------------------------------------

    def now(self) -> float:
        """The emulator's clock, as its `Date` header shows it."""
        return self.clock.now()

    def advance(self, seconds: float) -> float:
        """Moves the clock forward and runs what happens meanwhile (lifecycles, activity) in
        every account made so far; returns the new now."""
        now = self.clock.advance(seconds)
        for state in list(self._states.values()):
            state.catch_up(now)
        return now

    # Data ------------------------------------------------------------------------------------

    @property
    def platform_id(self) -> str:
        """The platform's `acct_` id: `Stripe-Account: <it>` is the platform itself."""
        return self.accounts.platform

    @property
    def connected_accounts(self) -> list[str]:
        """The ids of the connected accounts (`accounts=`), newest first as listed."""
        return list(self.accounts.connected)

    def state(self, account: str | None) -> State:
        """The living account (None or the platform's id: the platform), made on first use:
        its recent history (born objects' lifecycles, a month of activity) runs then."""
        key = None if account == self.accounts.platform else account
        state = self._states.get(key)
        if state is not None:
            return state
        if key is not None and not self.accounts.known(key):
            raise ValueError(f"unknown account {key!r}: not the platform nor a connected one")
        with self._lock:
            state = self._states.get(key)
            if state is None:
                dataset = (
                    self._prewarmed
                    if key is None and self._prewarmed
                    else Dataset(
                        self.seed,
                        key,
                        self.count,
                        self.created_from,
                        self.created_to,
                        self._cache_size,
                    )
                )
                state = State(dataset, self.account_api_version)
                start = int(self.clock.start)
                with state.lock, no_cycle_collection():
                    adopt(state, start)
                    if self.activity:
                        first = (start - HISTORY) // HOUR * HOUR
                        state.schedule(max(first, self.created_from), "hour", self.activity)
                    state.catch_up(self.clock.now())
                self._states[key] = state
        return state

    @staticmethod
    def _check(resource: str) -> None:
        if resource not in RESOURCES:
            raise ValueError(
                f"unknown resource {resource!r}; expected one of {', '.join(RESOURCES)}"
            )

    def _listed(self, resource: str, account: str | None) -> tuple[State, list[int]]:
        self._check(resource)
        state = self.state(account)
        now = self.clock.now()
        state.catch_up(now)
        indexes = state.dataset.scan(resource, LOWEST, (int(now), INFINITY), True, now)
        if resource == "customers":
            return state, [index for index in indexes if index not in state.deleted]
        return state, list(indexes)

    def ids(self, resource: str, account: str | None = None) -> list[str]:
        """Every id the list endpoint would list now, newest first."""
        state, indexes = self._listed(resource, account)
        return [state.dataset.id(resource, index) for index in indexes]

    def objects(self, resource: str, account: str | None = None) -> Iterator[dict]:
        """The objects the list endpoint would list now, newest first, as fresh dicts, in the
        canonical version (that of 2022-11-15 on, which the tap pins)."""
        state, indexes = self._listed(resource, account)
        for index in indexes:  # one at a time: a million objects need not be in memory at once
            (body,) = state.json(resource, [index], LATEST)
            yield json.loads(body)

    def current(
        self, resource: str, account: str | None = None, version: str = LATEST
    ) -> list[dict]:
        """The truth: every live object, newest first, as the list endpoint renders it now in
        `version`, without paging."""
        state, indexes = self._listed(resource, account)
        return [json.loads(body) for body in state.json(resource, indexes, version)]

    def deleted(self, resource: str, account: str | None = None) -> list[str]:
        """The ids deleted so far (only customers can be), in the order of deletion."""
        self._check(resource)
        state = self.state(account)
        state.catch_up(self.clock.now())
        if resource != "customers":
            return []
        order = sorted(state.deleted, key=lambda index: (state.deleted[index], index))
        return [state.dataset.id("customers", index) for index in order]

    def events(self, account: str | None = None) -> list[dict]:
        """Every event recorded so far, oldest first, whether the feed serves it yet or not."""
        state = self.state(account)
        state.catch_up(self.clock.now())
        return [json.loads(state.log.json(event)) for event in state.log.all()]

    def write(
        self,
        method: str,
        path: str,
        params: dict[str, object] | Sequence[tuple[str, object]] | None = None,
        account: str | None = None,
        version: str = LATEST,
    ) -> dict:
        """A write as over HTTP (e.g. `write("POST", "/v1/refunds", {"charge": charge_id})`),
        without HTTP; returns the answer, or raises StripeError with Stripe's error."""
        pairs = params.items() if isinstance(params, dict) else params or ()
        items = [(name, str(value)) for name, value in pairs]
        key = self._api_key or "sk_test_emulatorWrite0000"
        headers = {"Authorization": f"Bearer {key}", "Stripe-Version": version}
        if account is not None:
            headers["Stripe-Account"] = account
        response = self._service.api.respond(
            Request(method.upper(), path, items, headers), self.clock.now()
        )
        body = json.loads(response.body)
        if response.status != 200:
            error = body["error"]
            raise StripeError(
                response.status, error["message"], error.get("code"), error.get("param")
            )
        return body

    def add_objects(
        self,
        resource: str,
        count: int,
        created: int | None = None,
        visible_after: float = 0,
        account: str | None = None,
    ) -> list[str]:
        """Creates `count` objects at `created` (default: now), listed `visible_after` seconds
        after `created` (after now when `created` is left out, not after the whole second it
        truncates to), as Stripe's list endpoints lag behind writes. Returns their ids. They
        are imports, not changes: they record no events."""
        self._check(resource)
        if count < 0 or visible_after < 0:
            raise ValueError("count and visible_after must not be negative")
        dataset = self.state(account).dataset
        now = self.clock.now()
        when = int(now) if created is None else created
        visible_at = (now if created is None else created) + visible_after
        return [dataset.id(resource, i) for i in dataset.add(resource, count, when, visible_at)]

    # Requests and faults ---------------------------------------------------------------------

    @property
    def request_log(self) -> list[LogEntry]:
        """The requests served so far (the last 200,000), oldest first."""
        return list(self._service.log)

    def clear_log(self) -> None:
        self._service.log.clear()

    def script_fault(
        self,
        path: str,
        nth: int = 1,
        kind: str = "500",
        *,
        count: int = 1,
        retry_after: int | None = None,
        should_retry: bool | None = None,
        seconds: float | None = None,
    ) -> None:
        """Requests nth .. nth+count-1 to `path` (counted from now) get fault `kind`."""
        self._faults.script(path, nth, Fault.make(kind, retry_after, should_retry, seconds), count)

    def set_faults(self, spec: str | None) -> None:
        """Random faults from now on, e.g. "429=0.2,500=0.05,drop=0.01"; None for none."""
        self._faults.set_random(spec)
