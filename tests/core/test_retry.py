"""The retry policy, as pure decisions and as the flow's exchanges driven step by step (no I/O, no clock)."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from datetime import datetime, timezone
from typing import Any

import pytest

from msiv2_async import _flow, _imds, _sts
from msiv2_async._effects import HttpRequest, HttpResponse, Sleep, TransportFailure
from msiv2_async._errors import (
    ImdsError,
    ImdsThrottledError,
    ImdsUnreachableError,
    ImdsV2NotSupportedError,
    StsThrottledError,
    TokenRequestError,
)
from msiv2_async._models import ManagedIdentity
from msiv2_async._retry import (
    DEFAULT_RETRY,
    GIVE_UP,
    Decision,
    RetryPolicy,
    imds_decision,
    retry_after_seconds,
    sts_decision,
    sts_throttle_window,
)

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
SETTINGS = _flow.FlowSettings(
    imds_endpoint="http://169.254.169.254",
    identity=ManagedIdentity.system_assigned(),
    allowed_token_hosts=_sts.DEFAULT_ALLOWED_TOKEN_HOSTS,
    backend_name="software",
    attestation=False,
)
IMDS_HEADERS = {"server": "IMDS/150.870.65.1854"}


def imds(status: int, body: bytes = b"{}", **headers: str) -> HttpResponse:
    return HttpResponse(
        status, {**IMDS_HEADERS, **{k.replace("_", "-"): v for k, v in headers.items()}}, body
    )


def transport_failure(timed_out: bool = False) -> TransportFailure:
    return TransportFailure(ImdsUnreachableError("no answer", endpoint="getplatformmetadata"), timed_out)


def drive(flow: Generator[Any, Any, Any], answers: Sequence[Any]) -> tuple[list[float], int, Any]:
    """Answer every HttpRequest with the next scripted answer; return the sleeps, requests, result."""
    sleeps: list[float] = []
    requests = 0
    pending = list(answers)
    result: Any = None
    while True:
        try:
            effect = flow.send(result)
        except StopIteration as done:
            return sleeps, requests, done.value
        if isinstance(effect, Sleep):
            sleeps.append(effect.seconds)
            result = None
        else:
            assert isinstance(effect, HttpRequest)
            requests += 1
            result = pending.pop(0)


def metadata_flow() -> Generator[Any, Any, Any]:
    request = _imds.metadata_request(SETTINGS.imds_endpoint, SETTINGS.identity, "cid")
    return _flow.imds_exchange(SETTINGS, request, "cid", NOW)


# --- pure decisions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 408, 429, 500, 502, 503, 504, None])
def test_imds_retries_retryable_statuses_and_transport_errors_after_1_2_4_seconds(status: int | None) -> None:
    delays = [imds_decision(DEFAULT_RETRY, attempt, status, status, None).delay for attempt in (1, 2, 3, 4)]
    assert delays == [1.0, 2.0, 4.0, None]


@pytest.mark.parametrize("status", [400, 401, 403, 409, 422])
def test_imds_never_retries_other_client_errors(status: int) -> None:
    assert imds_decision(DEFAULT_RETRY, 1, status, status, None) == GIVE_UP


def test_imds_410_first_is_retried_every_10_seconds_seven_times() -> None:
    delays = [imds_decision(DEFAULT_RETRY, attempt, 410, 410, None).delay for attempt in range(1, 9)]
    assert delays == [10.0] * 7 + [None]
    assert sum(d for d in delays if d) >= 70


def test_imds_retry_after_within_the_cap_replaces_a_shorter_delay() -> None:
    assert imds_decision(DEFAULT_RETRY, 1, 429, 429, 30.0) == Decision(30.0)
    assert imds_decision(DEFAULT_RETRY, 3, 429, 429, 0.5) == Decision(4.0)


def test_imds_retry_after_beyond_the_cap_is_a_throttle_capped_at_an_hour() -> None:
    assert imds_decision(DEFAULT_RETRY, 1, 429, 429, 61.0) == Decision(None, throttled_for=61.0)
    assert imds_decision(DEFAULT_RETRY, 1, 503, 503, 999_999.0) == Decision(None, throttled_for=3600.0)


def test_retry_after_parses_delta_seconds_and_http_dates() -> None:
    assert retry_after_seconds({"retry-after": "7"}, NOW) == 7.0
    date = {"retry-after": "Thu, 01 Jan 2026 00:02:00 GMT", "date": "Thu, 01 Jan 2026 00:00:00 GMT"}
    assert retry_after_seconds(date, None) == 120.0
    assert retry_after_seconds({"retry-after": "Thu, 01 Jan 2026 00:00:30 GMT"}, NOW) == 30.0
    assert retry_after_seconds({"retry-after": "Wed, 31 Dec 2025 00:00:00 GMT"}, NOW) == 0.0


@pytest.mark.parametrize("value", ["", "soon", "-5", "1.5", "Thu, 99 Foo 2026"])
def test_unparsable_retry_after_is_ignored(value: str) -> None:
    assert retry_after_seconds({"retry-after": value}, NOW) is None


def test_sts_retries_once_after_a_second_on_5xx_without_retry_after_and_on_timeouts() -> None:
    assert sts_decision(DEFAULT_RETRY, 1, 500, None) == Decision(1.0)
    assert sts_decision(DEFAULT_RETRY, 1, None, None) == Decision(1.0)
    assert sts_decision(DEFAULT_RETRY, 2, 500, None) == GIVE_UP


@pytest.mark.parametrize(
    ("status", "retry_after"), [(503, 5.0), (429, None), (429, 5.0), (400, None), (401, None)]
)
def test_sts_does_not_retry_throttling_or_client_errors(status: int, retry_after: float | None) -> None:
    assert sts_decision(DEFAULT_RETRY, 1, status, retry_after) == GIVE_UP


def test_sts_throttle_window_is_retry_after_or_60_seconds_capped_at_an_hour() -> None:
    assert sts_throttle_window(DEFAULT_RETRY, 429, None) == 60.0
    assert sts_throttle_window(DEFAULT_RETRY, 503, 30.0) == 30.0
    assert sts_throttle_window(DEFAULT_RETRY, 429, 7200.0) == 3600.0
    assert sts_throttle_window(DEFAULT_RETRY, 400, None) is None


def test_policy_rejects_jitter_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=1.0)


# --- the flow's exchanges ------------------------------------------------------------------------------


def test_metadata_404_404_200_succeeds_after_exactly_three_requests() -> None:
    sleeps, requests, response = drive(metadata_flow(), [imds(404), imds(404), imds(200)])
    assert (sleeps, requests, response.status) == ([1.0, 2.0], 3, 200)


def test_metadata_404_four_times_is_imds_v2_not_supported_after_four_requests() -> None:
    with pytest.raises(ImdsV2NotSupportedError):
        drive(metadata_flow(), [imds(404)] * 4)


def test_410_eight_times_makes_eight_requests_ten_seconds_apart() -> None:
    flow = metadata_flow()
    flow.send(None)
    sleeps: list[float] = []
    for _ in range(7):
        sleep = flow.send(imds(410))
        assert isinstance(sleep, Sleep)
        sleeps.append(sleep.seconds)
        assert isinstance(flow.send(None), HttpRequest)
    with pytest.raises(ImdsError, match="HTTP 410"):
        flow.send(imds(410))
    assert sleeps == [10.0] * 7


def test_transport_failures_are_retried_and_the_last_error_is_raised() -> None:
    with pytest.raises(ImdsUnreachableError):
        drive(metadata_flow(), [transport_failure()] * 4)
    sleeps, requests, _ = drive(metadata_flow(), [transport_failure(), imds(200)])
    assert (sleeps, requests) == ([1.0], 2)


def test_wrong_server_header_is_never_retried() -> None:
    flow = metadata_flow()
    flow.send(None)
    with pytest.raises(ImdsError, match="did not come from IMDS"):
        flow.send(HttpResponse(503, {"server": "nginx"}, b""))


def test_long_retry_after_raises_a_throttled_error_without_sleeping() -> None:
    flow = metadata_flow()
    flow.send(None)
    with pytest.raises(ImdsThrottledError) as caught:
        flow.send(imds(429, retry_after="7200"))
    assert caught.value.retry_after == 3600.0
    assert caught.value.status == 429


def test_every_sleep_carries_the_error_to_raise_if_the_deadline_comes_first() -> None:
    flow = metadata_flow()
    flow.send(None)
    sleep = flow.send(imds(503))
    assert isinstance(sleep, Sleep)
    assert isinstance(sleep.give_up_with, ImdsError)
    assert sleep.give_up_with.status == 503


def _sts_flow() -> Generator[Any, Any, Any]:
    request = HttpRequest(target="sts", endpoint="token", method="POST", url="https://x", headers={})
    return _flow.sts_exchange(SETTINGS, request, "cid", NOW)


def sts(status: int, body: bytes = b"{}", **headers: str) -> HttpResponse:
    return HttpResponse(status, {k.replace("_", "-"): v for k, v in headers.items()}, body)


def test_sts_500_then_200_makes_two_requests_one_second_apart() -> None:
    sleeps, requests, response = drive(_sts_flow(), [sts(500), sts(200)])
    assert (sleeps, requests, response.status) == ([1.0], 2, 200)


def test_sts_500_twice_fails_with_a_60_second_window() -> None:
    with pytest.raises(TokenRequestError) as caught:
        drive(_sts_flow(), [sts(500), sts(500)])
    assert caught.value.retry_after == 60.0
    assert not isinstance(caught.value, StsThrottledError)


def test_sts_429_with_retry_after_is_throttled_at_once() -> None:
    flow = _sts_flow()
    flow.send(None)
    with pytest.raises(StsThrottledError) as caught:
        flow.send(sts(429, b'{"error":"temporarily_unavailable"}', retry_after="30"))
    assert caught.value.retry_after == 30.0
    assert caught.value.error == "temporarily_unavailable"


def test_sts_connect_failures_are_not_retried_but_timeouts_are_once() -> None:
    refused = TransportFailure(TokenRequestError("refused"), timed_out=False)
    timed_out = TransportFailure(TokenRequestError("timed out"), timed_out=True)
    with pytest.raises(TokenRequestError, match="refused"):
        drive(_sts_flow(), [refused])
    sleeps, requests, _ = drive(_sts_flow(), [timed_out, sts(200)])
    assert (sleeps, requests) == ([1.0], 2)
    with pytest.raises(TokenRequestError, match="timed out"):
        drive(_sts_flow(), [timed_out, timed_out])
