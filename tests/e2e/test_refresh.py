"""Refresh and renewal decisions, with a fake clock steering the client and the emulator serving real TLS.

The fake clock starts at the real time and moves less than the emulator's 7-day certificate lifetime,
so the real TLS stack still accepts the certificates while the client believes hours or days passed.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import anyio
import pytest

from msiv2_async import FakeClock, MsiV2Client, MtlsPopToken
from msiv2_async.emulator import Emulator, Fault

pytestmark = pytest.mark.anyio
HOUR = 3600.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=time.time())


@pytest.fixture
def client_kwargs(emulator: Emulator, clock: FakeClock) -> dict[str, Any]:
    return {
        "imds_endpoint": emulator.imds_url,
        "ca_bundle": emulator.ca_bundle_path,
        "allowed_token_hosts": [emulator.allowed_token_host],
        "clock": clock,
    }


async def _settle(client: MsiV2Client) -> None:
    """Let background refreshes started by the last call run to completion."""
    for _ in range(200):
        await anyio.sleep(0.01)
        if not client._token_flights._flights and not client._bindings.minting:
            return


async def test_due_token_is_served_at_once_and_refreshed_once_in_the_background(
    emulator: Emulator, clock: FakeClock, client_kwargs: dict[str, Any]
) -> None:
    async with MsiV2Client(**client_kwargs) as client:
        first = await client.acquire_token()
        clock.advance(first.refresh_on - clock.time() + 1)
        served = [await client.acquire_token() for _ in range(50)]
        await _settle(client)
        after = await client.acquire_token()
        assert client.cache_stats["background_refreshes"] == 1
    assert {token.access_token for token in served} == {first.access_token}
    assert after.access_token != first.access_token
    assert emulator.stats["token"] == 2
    assert emulator.stats["issuecredential"] == 1


async def test_failed_refresh_keeps_the_old_token_and_retries_at_most_every_30_seconds(
    emulator: Emulator, clock: FakeClock, client_kwargs: dict[str, Any]
) -> None:
    async with MsiV2Client(**client_kwargs, failure_cache_seconds=0) as client:
        first = await client.acquire_token()
        emulator.inject("token", *[Fault(status=500)] * 10)
        clock.advance(first.refresh_on - clock.time() + 1)
        for _ in range(10):
            assert (await client.acquire_token()).access_token == first.access_token
            await _settle(client)
            clock.advance(1)
        assert emulator.stats["token"] == 3  # the first token, then a 500 and its one retry
        assert client.cache_stats["failed_refreshes"] == 1
        clock.advance(30)
        assert (await client.acquire_token()).access_token == first.access_token
        await _settle(client)
        assert emulator.stats["token"] == 3  # inside the 60 s throttle window of the 5xx: no request
        assert client.cache_stats["failed_refreshes"] == 2
        clock.advance(30)
        assert (await client.acquire_token()).access_token == first.access_token
        await _settle(client)
        assert emulator.stats["token"] == 5
        assert client.cache_stats["failed_refreshes"] == 3


async def test_no_token_is_served_within_five_minutes_of_its_expiry(
    emulator: Emulator, clock: FakeClock, client_kwargs: dict[str, Any]
) -> None:
    emulator.inject("token", *[Fault(status=500)] * 1_000)
    async with MsiV2Client(**client_kwargs, failure_cache_seconds=0) as client:
        emulator.clear_faults()
        first = await client.acquire_token()
        emulator.inject("token", *[Fault(status=500)] * 1_000)
        clock.advance(first.expires_on - 299 - clock.time())
        with pytest.raises(Exception, match="HTTP 500"):
            await client.acquire_token()


async def test_certificate_is_renewed_at_half_life_and_old_tokens_are_not_served(
    emulator: Emulator, clock: FakeClock, client_kwargs: dict[str, Any]
) -> None:
    emulator.certificate_lifetime = timedelta(hours=20)
    try:
        async with MsiV2Client(**client_kwargs) as client:
            first = await client.acquire_token()
            certificate = first.binding_certificate
            half_life = (certificate.not_after - certificate.not_before).total_seconds() / 2
            clock.advance(certificate.not_before.timestamp() + half_life - clock.time() + 1)
            stale = await client.acquire_token()
            await _settle(client)
            renewed = await client.acquire_token()
    finally:
        emulator.certificate_lifetime = timedelta(days=7)
    assert first.refresh_on > clock.time()
    assert stale.access_token == first.access_token
    assert renewed.binding_certificate != certificate
    assert emulator.stats["issuecredential"] == 2
    assert emulator.stats["token"] == 2


async def test_without_a_task_group_the_caller_refreshes_inline_and_falls_back_on_failure(
    emulator: Emulator, clock: FakeClock, client_kwargs: dict[str, Any]
) -> None:
    client = MsiV2Client(**client_kwargs, failure_cache_seconds=0)
    try:
        first = await client.acquire_token()
        clock.advance(first.refresh_on - clock.time() + 1)
        refreshed: MtlsPopToken = await client.acquire_token()
        assert refreshed.access_token != first.access_token
        assert refreshed.source == "identity_provider"
        clock.advance(refreshed.refresh_on - clock.time() + 1)
        emulator.inject("token", Fault(status=503), Fault(status=503))
        fallback = await client.acquire_token()
        assert fallback.access_token == refreshed.access_token
        assert client.cache_stats["failed_refreshes"] == 1
    finally:
        await client.aclose()
    assert emulator.stats["token"] == 4  # first, refreshed, then a 503 and its one retry


async def test_closing_the_client_cancels_a_running_background_refresh(
    emulator: Emulator, clock: FakeClock, client_kwargs: dict[str, Any]
) -> None:
    async with MsiV2Client(**client_kwargs) as client:
        first = await client.acquire_token()
        emulator.inject("token", Fault(status=200, delay=30.0))
        clock.advance(first.refresh_on - clock.time() + 1)
        await client.acquire_token()
        await anyio.sleep(0.1)
        started = time.monotonic()
    assert time.monotonic() - started < 5
    assert client.closed
