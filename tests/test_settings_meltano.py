"""Settings as Meltano passes them: what a user writes in meltano.yml or the environment is
what the tap checks, and reaches it as the tap's own checks expect."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_relative_start_date_is_refused_not_guessed(emulator, warehouse):
    """Meltano's `date_iso8601` kind turned 'last tuesday' (and '02/01/2024', month first)
    into a date the tap then synced from; as a string, the tap refuses it in one line."""
    wh = warehouse(emulator, TAP_STRIPE_DD_START_DATE="last tuesday")
    result = wh.meltano("--environment", "dev", "invoke", "tap-stripe-dd", check=False)
    assert result.returncode != 0
    assert "start_date 'last tuesday' is not a date-time" in result.stderr
    assert result.stdout.strip() == ""


def test_fractional_numbers_reach_the_tap(emulator, warehouse):
    """Settings that take fractions were of kind `integer`: Meltano died on '0.5'."""
    wh = warehouse(emulator, TAP_STRIPE_DD_SLICE_DAYS="0.5", TAP_STRIPE_DD_REQUEST_TIMEOUT="2.5")
    result = wh.meltano("--environment", "dev", "invoke", "--dump=config", "tap-stripe-dd")
    config = json.loads(result.stdout)
    assert (config["slice_days"], config["request_timeout"]) == ("0.5", "2.5")
