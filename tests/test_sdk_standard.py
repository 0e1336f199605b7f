"""The Meltano SDK's own standard tap tests, against an emulator on loopback.

The SDK builds its test class at import time (it discovers streams to parametrize them), so the
emulator this module uses starts at import and stops when the interpreter exits.
"""

from __future__ import annotations

import atexit

from singer_sdk.testing import SuiteConfig, get_tap_test_class

from conftest import tap_config
from tap_stripe_dd.emulator import StripeEmulator
from tap_stripe_dd.tap import TapStripe

EMULATOR = StripeEmulator(seed=5, objects=150).start()
atexit.register(EMULATOR.stop)

TestTapStripe = get_tap_test_class(
    TapStripe,
    config=tap_config(EMULATOR),
    suite_config=SuiteConfig(ignore_no_records_for_streams=[]),
)
