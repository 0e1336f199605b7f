"""A user's config mistakes: a message naming the problem, a failing exit code, no traceback,
no records, no state, and never the key."""

from __future__ import annotations

import pytest

from conftest import START_DATE, STREAMS, TEST_KEY, tap_config

VALID = {"api_key": TEST_KEY, "api_url": "http://127.0.0.1:9", "start_date": START_DATE}

CASES = [
    ("missing key", {"api_key": None}, "api_key"),
    ("malformed key", {"api_key": "pk_test_abcdefghijklmnop"}, "sk_live_, sk_test_"),
    ("key with a typo in its prefix", {"api_key": "sk_tset_abcdefghijklmnop"}, "sk_live_"),
    ("bad start_date", {"start_date": "last tuesday"}, "start_date"),
    ("end_date before start_date", {"end_date": "2023-01-01T00:00:00Z"}, "end_date must be after"),
    ("page_size 0", {"page_size": 0}, "page_size"),
    ("page_size 101", {"page_size": 101}, "page_size"),
    ("unknown stream in filters", {"filters": {"invoices": {"status": "paid"}}}, "invoices"),
    ("unknown filter", {"filters": {"charges": {"status": "paid"}}}, "status"),
    ("api_url that is not a URL", {"api_url": "api.stripe.com"}, "not an http(s) URL"),
    ("plain http to a remote host", {"api_url": "http://api.stripe.com"}, "https://"),
    ("account id not acct_", {"account_id": "cus_123"}, "acct_"),
    ("negative lookback", {"lookback_seconds": -5}, "lookback_seconds"),
    (
        "parquet batch files",
        {"batch_config": {"encoding": {"format": "parquet"}, "storage": {"root": "/tmp/b"}}},
        "writes jsonl batch files",
    ),
    (
        "batch files on s3",
        {"batch_config": {"encoding": {"format": "jsonl"}, "storage": {"root": "s3://b/x"}}},
        "must be a local folder",
    ),
    ("tiny slice_days", {"slice_days": 0.0001}, "minimum of 0.1 in config['slice_days']"),
    ("key too short", {"api_key": "sk_test_abc"}, "api_key is too short"),
    ("key with a quote", {"api_key": 'sk_test_abcdefghijk"'}, "characters a Stripe key never"),
    ("start_date before 1970", {"start_date": "0999-01-01T00:00:00Z"}, "before 1970"),
    ("host name that starts with 127.", {"api_url": "http://127.0.0.1.nip.io"}, "https://"),
    ("port that is not a number", {"api_url": "http://127.0.0.1:port"}, "not an http(s) URL"),
    ("page_size not a number", {"page_size": "lots"}, "config['page_size']"),
    ("account id with a space inside", {"account_id": "acct_12 34"}, "account_id must"),
    ("stripe_version not a date", {"stripe_version": "2024-06-20\nX: y"}, "stripe_version"),
]


@pytest.mark.parametrize(
    ("overrides", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_config_mistake_is_refused_clearly(run_tap, overrides, expected):
    config = {k: v for k, v in (VALID | overrides).items() if v is not None}
    run = run_tap(config)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("tap-stripe-dd: error:")
    assert expected in last
    assert run.stderr.count(expected) == 1, "the error is shown more than once"
    assert "Traceback" not in run.stderr
    assert run.stdout.strip() == "", "records or state written despite a bad config"
    assert TEST_KEY[8:] not in run.stderr


def test_unreachable_host_fails_with_one_line(run_tap):
    run = run_tap(VALID | {"max_retries": 1, "request_timeout": 2})
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("tap-stripe-dd: error:") and "127.0.0.1:9" in last
    assert "Traceback" not in run.stderr
    assert not run.records


@pytest.mark.parametrize(
    "url", ["ftp://stripe:hunter22@example.com", "http://stripe:hunter22@127.0.0.1:9"]
)
def test_credentials_in_api_url_are_never_shown(run_tap, url):
    run = run_tap(VALID | {"api_url": url, "max_retries": 0, "request_timeout": 2})
    assert run.returncode == 1
    assert "hunter22" not in run.stderr
    assert "****@" in run.stderr.strip().splitlines()[-1]
    assert "Traceback" not in run.stderr


def test_untidy_settings_mean_what_they_say(emulators, run_tap):
    """A key with a `.env` line's newline, `filters:` left empty in YAML, numbers as text (as
    Meltano passes settings of kind string): the run syncs everything, with the bare key."""
    emulator = emulators(objects=60, api_key=TEST_KEY)
    config = tap_config(emulator, api_key=f" {TEST_KEY}\n", page_size="25", slice_days="90.5")
    run = run_tap(config | {"filters": None, "request_timeout": "30"})
    assert run.returncode == 0, run.stderr[-2000:]
    for stream in STREAMS:
        assert sorted(run.ids(stream)) == sorted(emulator.ids(stream)), stream


def test_currency_filter_ignores_case(emulator, run_tap):
    run = run_tap(tap_config(emulator, filters={"customers": {"currency": "USD"}, "charges": None}))
    assert run.returncode == 0, run.stderr[-2000:]
    wanted = [c["id"] for c in emulator.objects("customers") if c.get("currency") == "usd"]
    assert wanted
    assert sorted(run.ids("customers")) == sorted(wanted)
    assert sorted(run.ids("charges")) == sorted(emulator.ids("charges"))


def test_start_date_in_the_future_warns(emulator, run_tap):
    run = run_tap(tap_config(emulator, start_date="2999-01-01T00:00:00Z"))
    assert run.returncode == 0, run.stderr[-2000:]
    assert not run.records
    assert "start_date 2999-01-01T00:00:00Z is in the future: this run syncs nothing" in run.stderr


def test_every_mistake_is_named_on_one_line(run_tap):
    run = run_tap(VALID | {"page_size": 0, "account_id": "cus_1", "slice_days": 0.01})
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    for named in ("config['page_size']", "account_id must", "config['slice_days']"):
        assert named in last
    assert last.count("; ") == 2


@pytest.mark.parametrize("host", ["localhost", "[::1]", "127.0.0.2"])
def test_loopback_hosts_may_use_plain_http(run_tap, host):
    run = run_tap(VALID | {"api_url": f"http://{host}:9", "max_retries": 0, "request_timeout": 2})
    assert run.returncode == 1
    assert f"could not reach http://{host}:9" in run.stderr.strip().splitlines()[-1]
