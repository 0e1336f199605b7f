"""Faults on the wire and Stripe's rate limits, as a client sees them over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import requests
from test_emulator import AUTH, burst, error, get

from tap_stripe_dd.emulator import StripeEmulator


@pytest.fixture
def emu() -> Iterator[StripeEmulator]:
    with StripeEmulator(seed=3, objects=50) as emulator:
        yield emulator


def outcome(emu: StripeEmulator, path: str = "/v1/charges") -> requests.Response | Exception:
    """The response, or the exception a client gets instead of one."""
    try:
        response = get(emu, path)
        response.json()
    except (requests.RequestException, ValueError) as exc:
        return exc
    return response


def stripe_error(status: int, kind: str, code: str | None = None) -> Callable:
    def check(result: requests.Response | Exception) -> None:
        assert isinstance(result, requests.Response), result
        body = error(result, status)
        assert (body["type"], body.get("code")) == (kind, code)

    return check


def raises(exception: type[Exception]) -> Callable:
    def check(result: requests.Response | Exception) -> None:
        assert isinstance(result, exception), result

    return check


def html_page(result: requests.Response | Exception) -> None:
    assert isinstance(result, ValueError), "a 200 HTML page should not parse as JSON"


FAULTS: dict[str, Callable] = {
    "400": stripe_error(400, "invalid_request_error", "parameter_invalid"),
    "401": stripe_error(401, "invalid_request_error"),
    "403": stripe_error(403, "invalid_request_error", "insufficient_permissions"),
    "404": stripe_error(404, "invalid_request_error", "resource_missing"),
    "429": stripe_error(429, "invalid_request_error", "rate_limit"),
    "500": stripe_error(500, "api_error"),
    "502": stripe_error(502, "api_error"),
    "503": stripe_error(503, "api_error"),
    "drop": raises(requests.ConnectionError),
    "truncate": raises(requests.exceptions.ChunkedEncodingError),
    "nonjson": html_page,
}


@pytest.mark.parametrize("kind", FAULTS)
def test_scripted_fault_hits_exactly_the_nth_requests(emu, kind):
    emu.script_fault("/v1/charges", nth=2, kind=kind, count=2)
    results = [outcome(emu) for _ in range(4)]
    assert isinstance(results[0], requests.Response) and results[0].status_code == 200
    FAULTS[kind](results[1])
    FAULTS[kind](results[2])
    assert isinstance(results[3], requests.Response) and results[3].status_code == 200
    logged = [entry.status for entry in emu.request_log]
    assert len(logged) == 4 and logged[0] == logged[3] == 200
    assert (logged[1] is None) == (kind == "drop"), "only a dropped request has no status"


def test_faults_count_requests_per_path(emu):
    emu.script_fault("/v1/refunds", nth=1, kind="500")
    assert get(emu, "/v1/charges").status_code == 200
    assert get(emu, "/v1/refunds").status_code == 500
    assert get(emu, "/v1/refunds").status_code == 200


def test_rate_limit_fault_says_when_to_retry(emu):
    emu.script_fault("/v1/charges", kind="429")
    response = get(emu, "/v1/charges")
    assert (response.headers["Retry-After"], response.headers["Stripe-Should-Retry"]) == (
        "1",
        "true",
    )


def test_fault_headers_can_be_scripted(emu):
    emu.script_fault("/v1/charges", kind="503", retry_after=7, should_retry=False)
    response = get(emu, "/v1/charges")
    assert response.status_code == 503
    assert (response.headers["Retry-After"], response.headers["Stripe-Should-Retry"]) == (
        "7",
        "false",
    )


def test_auth_faults_mask_the_key(emu):
    emu.script_fault("/v1/charges", kind="401")
    response = get(emu, "/v1/charges")
    assert error(response, 401)["message"] == (
        "Invalid API Key provided: sk_test_***************4242"
    )
    assert AUTH["Authorization"][15:] not in response.text


def test_slow_response_outlasts_the_client_and_not_stop():
    with StripeEmulator(seed=1, objects=5) as emu:
        emu.script_fault("/v1/charges", kind="slow", seconds=60)
        with pytest.raises(requests.ReadTimeout):
            requests.get(emu.url + "/v1/charges", headers=AUTH, timeout=0.3)
        started = time.monotonic()
        emu.stop()
        assert time.monotonic() - started < 2


def test_stop_does_not_wait_for_idle_keep_alive_connections():
    with StripeEmulator(seed=1, objects=5) as emu:
        url = emu.url + "/v1/charges"
        session = requests.Session()
        assert session.get(url, headers=AUTH, timeout=5).status_code == 200
        started = time.monotonic()
        emu.stop()
        assert time.monotonic() - started < 2
    with pytest.raises(requests.ConnectionError):
        session.get(url, headers=AUTH, timeout=2)


def test_latency_delays_every_response():
    with StripeEmulator(seed=1, objects=5, latency_ms=150, jitter_ms=50) as emu:
        started = time.monotonic()
        for _ in range(3):
            assert get(emu, "/v1/charges").status_code == 200
        assert time.monotonic() - started >= 0.45


def statuses(emu: StripeEmulator, count: int) -> list[int | None]:
    emu.clear_log()
    for _ in range(count):
        outcome(emu)
    return [e.status for e in emu.request_log]


def test_random_faults_are_deterministic_for_a_seed():
    spec = "500=0.3,429=0.1@0,drop=0.1"
    runs = []
    for _ in range(2):
        with StripeEmulator(seed=5, objects=5, faults=spec) as emu:
            runs.append(statuses(emu, 60))
    assert runs[0] == runs[1]
    assert 10 < sum(s != 200 for s in runs[0]) < 50
    assert {500, 429, None} <= set(runs[0])


def test_set_faults_changes_and_clears_random_faults(emu):
    emu.set_faults("503=1")
    assert set(statuses(emu, 5)) == {503}
    emu.set_faults(None)
    assert set(statuses(emu, 5)) == {200}


@pytest.mark.parametrize(
    "spec", ["500", "500=2", "boom=0.1", "500=0.6,429=0.6", "slow=0.1@-3", "429=x"]
)
def test_bad_fault_spec_is_refused(spec):
    with pytest.raises(ValueError, match=r"fault|probabilit"):
        StripeEmulator(faults=spec)


@pytest.mark.parametrize("kind", ["418", "explode"])
def test_unknown_scripted_kind_is_refused(emu, kind):
    with pytest.raises(ValueError, match="unknown fault kind"):
        emu.script_fault("/v1/charges", kind=kind)


# Rate limits ----------------------------------------------------------------------------------


def test_test_mode_allows_25_requests_a_second_overall():
    with StripeEmulator(seed=1, objects=5, rate_limit="test") as emu:
        codes = burst(emu, ["/v1/charges", "/v1/customers"] * 13)
        assert codes[:25] == [200] * 25 and codes[25] == 429
        body = get(emu, "/v1/payouts").json()["error"]
        assert (body["code"], body["type"]) == ("rate_limit", "invalid_request_error")
        time.sleep(1.1)
        assert get(emu, "/v1/payouts").status_code == 200


def test_live_mode_allows_25_a_second_per_endpoint_and_100_overall():
    endpoints = ["/v1/charges", "/v1/customers", "/v1/refunds", "/v1/payouts"]
    with StripeEmulator(seed=1, objects=5, rate_limit="live") as emu:
        codes = burst(emu, ["/v1/charges"] * 26 + endpoints[1:] * 25 + ["/v1/disputes"])
        assert codes[:25] == [200] * 25 and codes[25] == 429
        assert codes[26:-1] == [200] * 75, "other endpoints have their own 25"
        assert codes[-1] == 429, "the 101st request within a second"


def test_rate_limit_off_by_default(emu):
    assert set(burst(emu, ["/v1/charges"] * 60)) == {200}
