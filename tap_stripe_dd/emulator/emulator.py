"""StripeEmulator: the in-process handle that tests, the demo and the benchmarks use."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from types import TracebackType

from tap_stripe_dd.emulator.api import KEY_SHAPE, Api
from tap_stripe_dd.emulator.dataset import HIGHEST, LOWEST, Dataset
from tap_stripe_dd.emulator.faults import Fault, Faults, RateLimiter
from tap_stripe_dd.emulator.objects import RESOURCES
from tap_stripe_dd.emulator.server import LogEntry, Server, Service

DEFAULT_CREATED_FROM = 1_704_067_200  # 2024-01-01T00:00:00Z
DEFAULT_CREATED_TO = 1_767_225_599  # 2025-12-31T23:59:59Z


class StripeEmulator:
    """A Stripe-compatible API on 127.0.0.1 serving `objects` deterministic objects per endpoint.

    Objects are built when first asked for; the last `cache_size` of each resource stay built.
    `prewarm` renders all of the platform's objects in start() instead, before it listens, so
    that a benchmark measures the client rather than the building of objects.
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
    ) -> None:
        self.seed = seed
        self.count = objects
        self.created_from = DEFAULT_CREATED_FROM if created_from is None else created_from
        self.created_to = DEFAULT_CREATED_TO if created_to is None else created_to
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
        self._cache_size = max(cache_size, objects) if prewarm else cache_size
        self._prewarm = prewarm
        self._datasets: dict[str | None, Dataset] = {}
        self._lock = threading.Lock()
        api = Api(self._dataset, api_key)
        self._faults = Faults(seed, faults)
        self._service = Service(api, self._faults, RateLimiter(rate_limit), latency_ms, jitter_ms)
        self._port = port
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle -------------------------------------------------------------------------------

    def start(self) -> StripeEmulator:
        if self._prewarm:
            self._dataset(None).prewarm()
            self._prewarm = False  # a restart after stop() serves what is rendered already
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

    # Data ------------------------------------------------------------------------------------

    def _dataset(self, account: str | None) -> Dataset:
        """The data set of the platform (None) or of a connected account, made on first use."""
        dataset = self._datasets.get(account)
        if dataset is None:
            with self._lock:
                dataset = self._datasets.get(account)
                if dataset is None:
                    dataset = Dataset(
                        self.seed,
                        account,
                        self.count,
                        self.created_from,
                        self.created_to,
                        self._cache_size,
                    )
                    self._datasets[account] = dataset
        return dataset

    @staticmethod
    def _check(resource: str) -> None:
        if resource not in RESOURCES:
            raise ValueError(
                f"unknown resource {resource!r}; expected one of {', '.join(RESOURCES)}"
            )

    def _listed(self, resource: str, account: str | None) -> Iterator[int]:
        self._check(resource)
        return self._dataset(account).scan(resource, LOWEST, HIGHEST, True, time.time())

    def ids(self, resource: str, account: str | None = None) -> list[str]:
        """Every id the list endpoint would list now, newest first."""
        dataset = self._dataset(account)
        return [dataset.id(resource, index) for index in self._listed(resource, account)]

    def objects(self, resource: str, account: str | None = None) -> Iterator[dict]:
        """The objects the list endpoint would list now, newest first, as fresh dicts."""
        dataset = self._dataset(account)
        for index in self._listed(resource, account):
            (body,) = dataset.json(resource, [index])
            yield json.loads(body)

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
        truncates to), as Stripe's list endpoints lag behind writes. Returns their ids."""
        self._check(resource)
        if count < 0 or visible_after < 0:
            raise ValueError("count and visible_after must not be negative")
        dataset = self._dataset(account)
        now = time.time()
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
