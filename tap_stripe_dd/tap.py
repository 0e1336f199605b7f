"""The tap: its settings, their checks, and its six streams."""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import json
import logging
import queue
import re
import sys
import threading
import time
import typing as t
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse

import requests
import simplejson
from singer_sdk import Stream, Tap
from singer_sdk import typing as th
from singer_sdk.contrib.msgspec import MsgSpecWriter, encoder
from singer_sdk.exceptions import ConfigValidationError, FatalAPIError, RetriableAPIError
from singer_sdk.helpers._state import StateWriter
from singer_sdk.singerlib import Message, RecordMessage

from tap_stripe_dd.accounts import SETTINGS as ACCOUNT_SETTINGS
from tap_stripe_dd.accounts import Directory
from tap_stripe_dd.accounts import setting_errors as account_setting_errors
from tap_stripe_dd.batches import BatchRun, batch_config_errors
from tap_stripe_dd.client import (
    DEFAULT_API_URL,
    STRIPE_VERSION,
    StripeStream,
    mask_secret,
    masked_url,
    network_error_message,
    to_unix,
)
from tap_stripe_dd.errors import UserError
from tap_stripe_dd.progress import DEFAULT_INTERVAL, Progress
from tap_stripe_dd.ratelimit import RateLimiter
from tap_stripe_dd.settings import choice
from tap_stripe_dd.signals import Stopped, exit_stopped, stop_on_signals
from tap_stripe_dd.streams import STREAM_TYPES, AccountsLookup

if t.TYPE_CHECKING:
    from singer_sdk.helpers._batch import BatchConfig


class InvalidConfig(UserError):
    """Settings the run cannot start with: every problem, on one line (exit code 1, as the
    SDK's), rather than the SDK's warning, one line per problem and a summary."""

    exit_code = 1


class StripeWriter(MsgSpecWriter):
    """msgspec encodes large Stripe objects several times faster than simplejson; and records
    are flushed with the next STATE (or a full buffer), not one system call each: a STATE
    still leaves only after every record before it."""

    def write_message(self, message: Message) -> None:
        sys.stdout.buffer.write(self.format_message(message))
        if not isinstance(message, RecordMessage):
            sys.stdout.flush()

    def write_line(self, line: bytes) -> None:
        """A STATE's line (`StateLines`), written at once with every record before it."""
        sys.stdout.buffer.write(line)
        sys.stdout.flush()

    def write_records(self, stream: str, records: list[dict], time_extracted: datetime) -> None:
        """The lines `write_message` writes for `RecordMessage(stream, record, time_extracted)`
        (a UTC time) of each record, in one write, without a message object for each."""
        lines = bytearray()
        for record in records:
            message = {
                "type": "RECORD",
                "stream": stream,
                "record": record,
                "time_extracted": time_extracted,
            }
            encoder.encode_into(message, lines, -1)
            lines.extend(b"\n")
        sys.stdout.buffer.write(lines)


def state_line(state: dict) -> bytes:
    """The line `format_message` writes for a STATE, without the copy of the whole state (every
    account's partitions) that its `dataclasses.asdict` makes first; a line of its own, not
    the SDK's shared buffer that `serialize_jsonl` returns (the next line overwrites it)."""
    return encoder.encode({"type": "STATE", "value": state}) + b"\n"


class StateLines(StateWriter):
    """A STATE goes out when it differs from the last one: compared as its line, where the
    SDK keeps a deep copy of the whole state to compare with (5 MiB for 1,000 accounts)."""

    _message_writer: StripeWriter

    def __init__(self, writer: StripeWriter) -> None:
        super().__init__(writer)
        self._last: bytes | None = None

    def write_state(self, state: dict) -> None:
        line = state_line(state)
        if line != self._last:
            self._message_writer.write_line(line)
            self._last = line


def _filter_type(stream: type[StripeStream]) -> th.ObjectType:
    """One object per stream, closed: a misspelt filter is an error, never silently ignored."""
    values = th.CustomType(
        {"type": ["string", "integer", "object"], "additionalProperties": {"type": "integer"}}
    )
    sent = (th.Property(n, values, description=f"Stripe's `{n}` parameter") for n in stream.filters)
    local = (
        th.Property(n, values, description=f"Keeps records whose `{n}` equals it (tap-side)")
        for n in stream.local_filters
    )
    return th.ObjectType(*sent, *local, additional_properties=False)


#: Shorter slices gain nothing (dense slices are split as they are read) and cost a request each.
MIN_SLICE_DAYS = 0.1

# Young objects the cyclic collector lets pile up before it runs (Python's default: 700).
GC_THRESHOLD = 20_000
# On a stop (signal, failed stream), how long the streams get to reach a page edge.
STOP_SECONDS = 2.0


def quiet_collector() -> None:
    """Each page decodes into thousands of dicts, and every 700 of them the cyclic collector
    ran, walking the SDK's own long-lived objects again and again: it took most of the decoding
    time (measured: 24,000 records/s decoded, 90,000 without it). Records hold no cycles, so it
    now runs rarely, and never through what start-up built."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


class TapStripe(Tap):
    """Stripe's balance transactions, charges, customers, disputes, payouts and refunds."""

    name = "tap-stripe-dd"
    message_writer_class = StripeWriter

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_key",
            th.StringType,
            required=True,
            secret=True,
            description="Stripe secret key (sk_live_…, sk_test_…) or restricted key (rk_live_…, "
            "rk_test_…) with read access to the six resources.",
        ),
        th.Property(
            "start_date",
            th.DateTimeType,
            description="Sync objects created at or after this time (RFC 3339, e.g. "
            "2024-01-01T00:00:00Z; not before 1970); default: all.",
        ),
        th.Property(
            "end_date",
            th.DateTimeType,
            description="Sync objects created before this time; default: when the run starts.",
        ),
        th.Property(
            "api_url",
            th.StringType,
            default=DEFAULT_API_URL,
            description="Base URL of the API; plain http:// is allowed only for loopback hosts "
            "(the local emulator).",
        ),
        th.Property(
            "account_id",
            th.StringType,
            description="A connected account (acct_…) to read, sent as the Stripe-Account header.",
        ),
        *ACCOUNT_SETTINGS,  # account_ids, include_platform, account_shard, … (accounts.py)
        th.Property(
            "stripe_version",
            th.StringType,
            default=STRIPE_VERSION,
            description="The Stripe-Version header, pinned so that object shapes do not drift.",
        ),
        th.Property(
            "page_size",
            th.IntegerType(minimum=1, maximum=100),
            default=100,
            description="Objects per list request (Stripe's `limit`, 1 to 100).",
        ),
        th.Property(
            "request_timeout",
            th.NumberType(exclusive_minimum=0),
            default=60,
            description="Seconds to wait for one response before retrying it.",
        ),
        th.Property(
            "max_retries",
            th.IntegerType(minimum=0),
            default=8,
            description="Retries of a request that failed with 429, 5xx, a timeout or a bad body.",
        ),
        th.Property(
            "retry_initial_wait_ms",
            th.IntegerType(minimum=0),
            default=1000,
            description="Milliseconds before the first retry, doubled each time; Retry-After wins.",
        ),
        th.Property(
            "lookback_seconds",
            th.IntegerType(minimum=0),
            default=600,
            description="Each incremental run re-reads this many seconds before the bookmark, "
            "for objects that Stripe lists only some time after their `created`.",
        ),
        # The change feed (changes.py).
        choice(
            "events_gap",
            ("resync", "fail"),
            "When a stream's changes were last swept more than 30 days ago (Stripe keeps "
            "events 30 days): `resync` re-reads the stream from start_date, `fail` stops.",
        ),
        th.Property(
            "events_lookback_seconds",
            th.IntegerType(minimum=0),
            default=600,
            description="Each run re-reads events this many seconds before the last sweep, for "
            "events that Stripe lists only some time after their `created`.",
        ),
        th.Property(
            "slice_days",
            th.NumberType(minimum=MIN_SLICE_DAYS),
            default=30,
            description="Length of a `created` slice (sparse ones are merged once the run knows "
            "the density, dense ones split); the bookmark moves after each slice. At least "
            f"{MIN_SLICE_DAYS} (2.4 hours).",
        ),
        th.Property(
            "max_concurrency",
            th.IntegerType(minimum=1, maximum=32),
            description="Requests in flight per stream (slices fetched side by side); default "
            "8 for live keys, 4 for test keys.",
        ),
        th.Property(
            "rate_limit_per_endpoint",
            th.NumberType(exclusive_minimum=0),
            default=25,
            description="Requests per second to one endpoint, shared by all fetchers.",
        ),
        th.Property(
            "rate_limit_per_account",
            th.NumberType(exclusive_minimum=0),
            description="Requests per second across all streams; default 100 for live keys, "
            "25 for test keys (Stripe's limits).",
        ),
        th.Property(
            "filters",
            th.ObjectType(
                *(
                    th.Property(
                        stream.name, _filter_type(stream), description=f"Filters of {stream.path}"
                    )
                    for stream in STREAM_TYPES
                ),
                additional_properties=False,
            ),
            description="Stripe's optional list parameters, per stream, e.g. "
            '{"charges": {"customer": "cus_…"}, "payouts": {"arrival_date": {"gte": 1700000000}}}. '
            "customers.currency is applied by the tap to each record (Stripe cannot filter by it).",
        ),
        th.Property(
            "progress_seconds",
            th.NumberType(minimum=0),
            default=DEFAULT_INTERVAL,
            description="Seconds between a running stream's progress lines (objects, requests, "
            "slices left, rate-limit waits); 0 shows only the summary at the end.",
        ),
        th.Property(
            "log_metrics",
            th.BooleanType,
            default=False,
            description="Also log the SDK's machine-readable `METRIC: {...}` lines (record "
            "counts, request durations), e.g. for a log pipeline.",
        ),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        state = kwargs.get("state")
        if state is not None and not isinstance(state, dict | str | Path):
            msg = "the state is not a JSON object of bookmarks: fix or remove the state file"
            raise UserError(msg)
        #: Stripe's clock at the run's start (StripeStream.stripe_clock), read once.
        self.stripe_now: int | None = None
        self.clock_lock = threading.Lock()
        self.thread_local = threading.local()
        self.aborted = threading.Event()
        self._sdk_lock = threading.Lock()
        self._batch_run: BatchRun | None = None
        super().__init__(*args, **kwargs)
        self._state_writer = StateLines(t.cast("StripeWriter", self.message_writer))
        self.progress = Progress(
            self.logger,
            interval=float(self.config.get("progress_seconds", DEFAULT_INTERVAL)),
            log_metrics=bool(self.config.get("log_metrics", False)),
        )
        live = "_live_" in str(self.config.get("api_key", ""))
        self.default_concurrency = 8 if live else 4
        per_account = float(self.config.get("rate_limit_per_account") or (100 if live else 25))
        self.directory = Directory(
            self.config,
            lambda: RateLimiter(
                per_endpoint=float(self.config.get("rate_limit_per_endpoint", 25)),
                per_account=per_account,
            ),
            lambda: AccountsLookup(tap=self),
        )

    def discover_streams(self) -> list[StripeStream]:
        return [stream_type(tap=self) for stream_type in STREAM_TYPES]

    def sync_all(self) -> None:
        """All selected streams sync side by side, each in its own thread.

        The SDK's messages and state are not thread-safe, so everything a stream does with
        them runs under one lock, which a stream releases only while it waits for its fetchers
        (`wait_for`). Output stays a single stream of whole Singer messages.
        """
        streams = [stream for stream in self.streams.values() if stream.selected]
        quiet_collector()
        # Progress counts from the first request (Stripe's clock, read by `sync_window`).
        with self.progress.running(stream.name for stream in streams):
            if streams:  # the run's clock, its accounts and its heads: side by side
                for stream in streams:
                    stream.ask_ahead()
                with ThreadPoolExecutor(max_workers=1) as lookup:
                    accounts = lookup.submit(lambda: self.directory.accounts)
                    streams[0].stripe_clock()  # first: it proves the key may read events
                    accounts.result()
            for stream in streams:
                # Checks each bookmark before anything is written, and creates each stream's
                # state entry now, so that no thread resizes the shared state later.
                stream.sync_window()
            self._reset_state_progress_markers()
            self._set_compatible_replication_methods()
            if self.state:
                self._state_writer.write_state(self.state)
            with ThreadPoolExecutor(max_workers=max(1, len(streams))) as pool:
                futures = [pool.submit(self._sync_stream, stream) for stream in streams]
                try:
                    done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                except Stopped as stopped:
                    self._stop()
                    exit_stopped(
                        self.name, stopped, "the next run resumes from the last STATE sent"
                    )
                failed = [future for future in done if future.exception()]
                if failed:
                    self.aborted.set()
                    wait(futures, timeout=STOP_SECONDS)
                    if self._batch_run:
                        self._batch_run.discard_unannounced()
                    raise t.cast("BaseException", failed[0].exception())
            if self._batch_run:
                self._batch_run.finish()
        for stream in streams:
            stream.log_sync_costs()
        self.directory.finish()

    def _setup_signal_handlers(self) -> None:
        """SIGINT and SIGTERM stop the run (see signals.py), not the SDK's sync to the end."""
        if threading.current_thread() is threading.main_thread():
            stop_on_signals()

    def _stop(self) -> None:
        """On a stop signal: once no stream is writing a message (they let go of the SDK's lock
        at every page; and then wait for it), the files being written, never announced, are
        deleted, and what was written goes out as whole lines."""
        self.aborted.set()
        self._sdk_lock.acquire(timeout=STOP_SECONDS)
        if self._batch_run:
            self._batch_run.stop()
        with contextlib.suppress(OSError):
            sys.stdout.flush()

    def batch_run(self, config: BatchConfig) -> BatchRun:
        """This run's batch files (one name, one lock), set up by the first stream to write."""
        if self._batch_run is None:
            self._batch_run = BatchRun(config, self.name)
        return self._batch_run

    def _sync_stream(self, stream: Stream) -> None:
        with self._sdk_lock:
            self.thread_local.holds_sdk_lock = True
            try:
                stream.sync()
                stream.finalize_state_progress_markers()
                self.progress.finished(stream.name)
            finally:
                self.thread_local.holds_sdk_lock = False

    def wait_for(self, pages: queue.Queue) -> t.Any:
        """A stream's next item from its fetchers; other streams may write meanwhile.

        A stream synced on its own (`stream.sync()`, as the SDK's test helpers do) holds no
        lock and has none to release."""
        if not getattr(self.thread_local, "holds_sdk_lock", False):
            return self._next_item(pages)
        self._sdk_lock.release()
        try:
            return self._next_item(pages)
        finally:
            self._sdk_lock.acquire()

    def _next_item(self, pages: queue.Queue) -> t.Any:
        while True:
            try:
                return pages.get(timeout=0.5)
            except queue.Empty:
                if self.aborted.is_set():
                    msg = "stopped: another stream failed"
                    raise RuntimeError(msg) from None

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """JSON-schema checks first, then what a schema cannot say; no message echoes the key.

        The SDK calls this once, with the config merged from files and the environment, before
        anything reads it: so it is where the config is normalised too (`normalised_config`)."""
        self._config = normalised_config(self._config, self.config_jsonschema)
        key = self.config.get("api_key")
        secret = str(key) if key is not None else None
        try:  # raising, the SDK logs nothing: the errors are shown once, by `main`
            schema_errors = super()._validate_config(raise_errors=True)
        except ConfigValidationError as exc:
            schema_errors = list(exc.errors)
        errors = [mask_secret(e, secret) for e in schema_errors + self._semantic_errors()]
        if errors and raise_errors:
            raise InvalidConfig("; ".join(errors))
        for warning in [] if errors else self._semantic_warnings():
            self.logger.warning(warning)
        return errors

    def _semantic_errors(self) -> list[str]:
        config = self.config
        errors = []
        key = config.get("api_key")
        if isinstance(key, str) and (problem := key_problem(key)):
            errors.append(problem)
        dates = {}
        for name in ("start_date", "end_date"):
            if value := config.get(name):
                try:
                    dates[name] = to_unix(str(value))
                except ValueError:
                    errors.append(
                        f"{name} {value!r} is not a date-time such as 2024-01-01T00:00:00Z"
                    )
                    continue
                if dates[name] < 0:  # and a bookmark before year 1000 would not parse again
                    hint = " (leave it out to sync all history)" if name == "start_date" else ""
                    errors.append(
                        f"{name} {value!r} is before 1970-01-01: Stripe has nothing that old{hint}"
                    )
        if len(dates) == 2 and dates["end_date"] <= dates["start_date"]:
            errors.append("end_date must be after start_date")
        errors += api_url_errors(str(config.get("api_url", DEFAULT_API_URL)))
        if (account := config.get("account_id")) and not ACCOUNT_SHAPE.match(str(account)):
            errors.append("account_id must look like acct_… (letters and digits)")
        if (version := config.get("stripe_version")) and not VERSION_SHAPE.match(str(version)):
            errors.append("stripe_version must look like 2024-06-20 (or 2024-09-30.acacia)")
        if isinstance(batch := config.get("batch_config"), dict):
            errors += batch_config_errors(batch)
        errors += account_setting_errors(config)
        return errors

    def _semantic_warnings(self) -> list[str]:
        """Settings that are valid but make the run do nothing."""
        start = self.config.get("start_date")
        if start and to_unix(str(start)) > time.time():
            return [f"start_date {start} is in the future: this run syncs nothing"]
        return []


# Both are sent as headers: a stray character would fail each request, not the validation.
ACCOUNT_SHAPE = re.compile(r"acct_[A-Za-z0-9]+\Z")
VERSION_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}(\.[a-z_]+)?\Z")
KEY_PREFIXES = ("sk_live_", "sk_test_", "rk_live_", "rk_test_")
KEY_MIN_LENGTH = 8  # characters after the prefix (Stripe's own keys have 24 or more)


def key_problem(key: str) -> str | None:
    """What is wrong with the key's shape, named (never quoting the key itself)."""
    prefix = next((p for p in KEY_PREFIXES if key.startswith(p)), None)
    if prefix is None:
        kind = " (pk_… is a publishable key)" if key.startswith("pk_") else ""
        return (
            "api_key does not look like a Stripe secret or restricted key: it must start "
            f"with sk_live_, sk_test_, rk_live_ or rk_test_{kind}"
        )
    rest = key[len(prefix) :]
    if bad := sorted(set(re.sub(r"[A-Za-z0-9]", "", rest))):
        shown = ", ".join(repr(c) for c in bad)
        return f"api_key has characters a Stripe key never has after {prefix}: {shown}"
    if len(rest) < KEY_MIN_LENGTH:
        return (
            f"api_key is too short: {len(rest)} characters after {prefix}, "
            f"a Stripe key has at least {KEY_MIN_LENGTH}"
        )
    return None


#: Settings whose surrounding whitespace is a typo (a `.env` line's trailing space or newline):
#: a key with a newline must never reach a header.
STRIPPED_SETTINGS = ("api_key", "api_url", "account_id", "stripe_version", "start_date", "end_date")


NUMBER_TYPES: dict[str, t.Callable[[str], float]] = {"number": float, "integer": int}


def normalised_config(config: t.Mapping[str, t.Any], schema: dict) -> dict[str, t.Any]:
    """The config as the streams read it: a null setting (YAML's `filters:` left empty) is
    unset, numbers given as text (Meltano passes settings of kind `string` so; its `decimal`
    kind cannot be written to a config file) are numbers, string settings are stripped, and
    currency codes lower-case, as Stripe writes them."""
    result = {name: value for name, value in config.items() if value is not None}
    for name, spec in schema["properties"].items():
        if isinstance(value := result.get(name), Decimal):
            # The SDK reads a config file's numbers as Decimal, and Decimal("0.1") is less than
            # the float 0.1 of a schema's bound: a setting at its documented minimum failed.
            result[name] = float(value)
            continue
        if not isinstance(value, str):
            continue
        for kind in (k for k in spec.get("type", ()) if k in NUMBER_TYPES):
            with contextlib.suppress(ValueError):
                result[name] = NUMBER_TYPES[kind](value)
                break
    for name in STRIPPED_SETTINGS:
        if isinstance(result.get(name), str):
            result[name] = result[name].strip()
    if isinstance(filters := result.get("filters"), dict):
        result["filters"] = {
            stream: stream_filters(chosen) if isinstance(chosen, dict) else chosen
            for stream, chosen in filters.items()
            if chosen is not None
        }
    return result


def stream_filters(chosen: dict[str, t.Any]) -> dict[str, t.Any]:
    """A stream's filters without nulls, currency codes lower-case (the tap compares them with
    the records' own, and Stripe's are lower-case)."""
    return {
        name: value.lower() if name == "currency" and isinstance(value, str) else value
        for name, value in chosen.items()
        if value is not None
    }


def is_loopback_host(host: str) -> bool:
    """`localhost`, or a loopback IP address: a name that merely starts with 127. is neither."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_url_errors(url: str) -> list[str]:
    parsed = urlparse(url)
    try:
        host = parsed.hostname
        parsed.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        host = None
    if parsed.scheme not in ("http", "https") or not host:
        return [f"api_url {masked_url(url)!r} is not an http(s) URL"]
    if parsed.scheme == "http" and not is_loopback_host(host):
        return ["api_url must use https:// unless the host is loopback (127.0.0.1, ::1, localhost)"]
    return []


def main() -> None:
    """The SDK's CLI, with a user's mistake or a dead end at Stripe shown as one line."""
    stop_on_signals()  # from the start: the SDK's handlers come with the tap
    try:
        TapStripe.cli()
    except Stopped as stopped:
        exit_stopped("tap-stripe-dd", stopped, "the next run resumes from the last STATE sent")
    except UserError as exc:
        fail(str(exc), exc.exit_code)
    except (json.JSONDecodeError, simplejson.JSONDecodeError) as exc:
        fail(f"a --config, --state or --catalog file is not valid JSON ({exc})", 2)
    except FileNotFoundError as exc:
        fail(str(exc), 2)
    except (FatalAPIError, RetriableAPIError) as exc:
        fail(str(exc), 1)
    except requests.RequestException as exc:
        fail(network_error_message(exc), 1)


def fail(message: str, exit_code: int) -> t.NoReturn:
    """The error is the last line: fetchers of other streams, still winding down, log no more.

    Taking every handler's lock (and keeping it: the process is about to exit) lets a thread
    that is writing a line finish it, and stops any other from writing after the message."""
    logging.disable(logging.CRITICAL)
    loggers = [logging.getLogger(), *logging.root.manager.loggerDict.values()]
    for handler in {h for lg in loggers if isinstance(lg, logging.Logger) for h in lg.handlers}:
        handler.acquire()
        handler.flush()
    print(f"tap-stripe-dd: error: {message}", file=sys.stderr)
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
