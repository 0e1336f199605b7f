"""A user's config mistakes: a message naming the problem, a failing exit code, no traceback,
no records, no state, and never the key."""

from __future__ import annotations

import pytest

from conftest import START_DATE, TEST_KEY

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
]


@pytest.mark.parametrize(
    ("overrides", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_config_mistake_is_refused_clearly(run_tap, overrides, expected):
    config = {k: v for k, v in (VALID | overrides).items() if v is not None}
    run = run_tap(config)
    assert run.returncode != 0
    assert expected in run.stderr
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
