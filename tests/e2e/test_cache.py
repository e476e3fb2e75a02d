"""Caching and single-flight against the emulator: counts of real requests on loopback."""

from __future__ import annotations

import time
import warnings
from typing import Any

import anyio
import pytest

from msiv2_async import (
    NO_RETRY,
    FakeClock,
    ImdsError,
    MsiV2Client,
    TokenRequestError,
    aclose_default_clients,
    acquire_token,
)
from msiv2_async._binding import cnf_thumbprint
from msiv2_async.emulator import Emulator, Fault

pytestmark = pytest.mark.anyio

INVALID_CLIENT = Fault(
    status=401,
    body=b'{"error":"invalid_client","error_description":"AADSTS1000613: invalid Jku header",'
    b'"error_codes":[1000613]}',
)


def _network_counts(emulator: Emulator) -> tuple[int, int, int]:
    stats = emulator.stats
    return stats["getplatformmetadata"], stats["issuecredential"], stats["token"]


async def test_ten_thousand_concurrent_cold_callers_share_one_flight(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    results: list[Any] = []
    async with MsiV2Client(**client_kwargs) as client:

        async def call() -> None:
            token = await client.acquire_token("https://vault.azure.net")
            results.append((token.access_token, token.binding_certificate.thumbprint_sha256))

        async with anyio.create_task_group() as group:
            for _ in range(10_000):
                group.start_soon(call)
    assert _network_counts(emulator) == (1, 1, 1)
    assert len(results) == 10_000
    assert len(set(results)) == 1


async def test_thousand_callers_over_ten_scopes_mint_once_and_request_ten_tokens(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    scopes = [f"https://resource{n}.example.com" for n in range(10)]
    tokens: dict[str, set[str]] = {scope: set() for scope in scopes}
    async with MsiV2Client(**client_kwargs) as client:

        async def call(scope: str) -> None:
            token = await client.acquire_token(scope)
            tokens[scope].add(token.access_token)

        async with anyio.create_task_group() as group:
            for n in range(1_000):
                group.start_soon(call, scopes[n % 10])
    assert _network_counts(emulator) == (1, 1, 10)
    assert all(len(values) == 1 for values in tokens.values())


async def test_ten_thousand_warm_sequential_calls_make_no_request(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    async with MsiV2Client(**client_kwargs) as client:
        first = await client.acquire_token()
        before = _network_counts(emulator)
        for _ in range(10_000):
            token = await client.acquire_token()
            assert token.access_token == first.access_token
        assert client.cache_stats["hits"] == 10_000
    assert token.source == "cache"
    assert first.source == "identity_provider"
    assert _network_counts(emulator) == before


async def test_certificate_is_reused_across_scopes(emulator: Emulator, client_kwargs: dict[str, Any]) -> None:
    async with MsiV2Client(**client_kwargs) as client:
        first = await client.acquire_token("https://vault.azure.net")
        second = await client.acquire_token("https://management.azure.com")
    assert first.binding_certificate == second.binding_certificate
    assert _network_counts(emulator) == (1, 1, 2)


async def test_force_refresh_and_claims_bypass_the_token_cache(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    async with MsiV2Client(**client_kwargs) as client:
        first = await client.acquire_token()
        forced = await client.acquire_token(force_refresh=True)
        with_claims = await client.acquire_token(claims='{"access_token":{"xms_cc":{"values":["cp1"]}}}')
        cached = await client.acquire_token()
    assert emulator.stats["token"] == 3
    assert emulator.stats["issuecredential"] == 1
    assert first.access_token != forced.access_token
    assert cached.access_token == forced.access_token
    assert with_claims.access_token not in (first.access_token, forced.access_token)


async def test_cancelled_leader_does_not_cancel_the_flight_for_the_others(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    emulator.inject("getplatformmetadata", Fault(status=200, delay=0.5, body=b""))
    results: list[str] = []
    async with MsiV2Client(**client_kwargs) as client:

        async def leader() -> None:
            with anyio.move_on_after(0.2):
                await client.acquire_token()
            results.append("leader cancelled")

        async def follower() -> None:
            token = await client.acquire_token()
            results.append(token.token_type)

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            async with anyio.create_task_group() as group:
                group.start_soon(leader)
                await anyio.sleep(0.05)
                for _ in range(20):
                    group.start_soon(follower)
    assert results.count("mtls_pop") == 20
    assert "leader cancelled" in results
    assert emulator.stats["getplatformmetadata"] == 2
    assert emulator.stats["issuecredential"] == 1


async def test_outage_is_shared_by_all_waiters_and_then_replayed_without_requests(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    emulator.inject("getplatformmetadata", *[Fault(status=503, delay=0.05)] * 50)
    errors: list[BaseException] = []
    clock = FakeClock(time.time())
    async with MsiV2Client(**client_kwargs, failure_cache_seconds=60, clock=clock) as client:

        async def call() -> None:
            try:
                await client.acquire_token()
            except ImdsError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as group:
            for _ in range(1_000):
                group.start_soon(call)
        assert emulator.stats["getplatformmetadata"] == 4
        assert clock.sleeps == [1.0, 2.0, 4.0] or len(clock.sleeps) == 3
        for _ in range(100):
            with pytest.raises(ImdsError, match="HTTP 503"):
                await client.acquire_token()
    assert len(errors) == 1_000
    assert {exc.status for exc in errors if isinstance(exc, ImdsError)} == {503}
    assert emulator.stats["getplatformmetadata"] == 4


async def test_failure_cache_expires_and_the_next_call_flies_again(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    emulator.inject("getplatformmetadata", Fault(status=500))
    async with MsiV2Client(**client_kwargs, failure_cache_seconds=0.2, retry=NO_RETRY) as client:
        with pytest.raises(ImdsError):
            await client.acquire_token()
        await anyio.sleep(0.25)
        token = await client.acquire_token()
    assert token.token_type == "mtls_pop"
    assert emulator.stats["getplatformmetadata"] == 2


async def test_invalid_client_remints_once_and_retries_the_token_once(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    emulator.inject("token", INVALID_CLIENT)
    async with MsiV2Client(**client_kwargs) as client:
        token = await client.acquire_token()
        assert client.cache_stats["remints_on_rejection"] == 1
    assert emulator.stats["issuecredential"] == 2
    assert emulator.stats["token"] == 2
    issued = emulator.issued_certificates[-1]
    assert cnf_thumbprint(token.access_token) == token.binding_certificate.thumbprint_sha256
    assert token.binding_certificate.der == issued.public_bytes(encoding=_der_encoding())


def _der_encoding() -> Any:
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER


async def test_persistent_invalid_client_stops_after_two_mints_and_two_token_requests(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    emulator.inject("token", INVALID_CLIENT, INVALID_CLIENT, INVALID_CLIENT)
    async with MsiV2Client(**client_kwargs) as client:
        with pytest.raises(TokenRequestError) as caught:
            await client.acquire_token()
    assert caught.value.error == "invalid_client"
    assert caught.value.error_codes == (1000613,)
    assert emulator.stats["issuecredential"] == 2
    assert emulator.stats["token"] == 2


async def test_other_sts_errors_do_not_remint(emulator: Emulator, client_kwargs: dict[str, Any]) -> None:
    emulator.inject(
        "token", Fault(status=400, body=b'{"error":"invalid_scope","error_description":"bad scope"}')
    )
    async with MsiV2Client(**client_kwargs) as client:
        with pytest.raises(TokenRequestError, match="invalid_scope"):
            await client.acquire_token()
    assert emulator.stats["issuecredential"] == 1


async def test_module_level_acquire_token_reuses_one_client_per_event_loop(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    try:
        first = await acquire_token(**client_kwargs)
        for _ in range(100):
            again = await acquire_token(**client_kwargs)
        assert again.access_token == first.access_token
        assert _network_counts(emulator) == (1, 1, 1)
    finally:
        await aclose_default_clients()


async def test_closed_client_refuses_use(client_kwargs: dict[str, Any]) -> None:
    client = MsiV2Client(**client_kwargs)
    await client.aclose()
    await client.aclose()
    with pytest.raises(Exception, match="closed"):
        await client.acquire_token()
