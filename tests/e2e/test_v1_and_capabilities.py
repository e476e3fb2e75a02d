"""MSI v1 bearer tokens, the capability probe and the binding-strength floor, against the emulator."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from msiv2_async import (
    NO_RETRY,
    BearerToken,
    ImdsV2NotSupportedError,
    ManagedIdentitySource,
    MsiV2Client,
    MsiV2UnavailableError,
)
from msiv2_async._binding import token_claims
from msiv2_async.emulator import Emulator, Fault

pytestmark = pytest.mark.anyio


async def test_bearer_request_goes_to_msi_v1_and_is_cached(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    async with MsiV2Client(**client_kwargs) as client:
        first = await client.acquire_token("https://vault.azure.net", token_type="bearer")
        again = await client.acquire_token("https://vault.azure.net", token_type="bearer")
    assert isinstance(first, BearerToken)
    assert first.authorization_header().startswith("Bearer ")
    assert "cnf" not in token_claims(first.access_token)
    assert again.access_token == first.access_token
    assert again.source == "cache"
    assert emulator.stats["v1_token"] == 1
    assert emulator.stats["issuecredential"] == 0


async def test_bearer_and_mtls_pop_tokens_are_cached_side_by_side(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    async with MsiV2Client(**client_kwargs) as client:
        bearer = await client.acquire_token(token_type="bearer")
        pop = await client.acquire_token()
        assert (await client.acquire_token(token_type="bearer")).access_token == bearer.access_token
        assert (await client.acquire_token()).access_token == pop.access_token
    assert (emulator.stats["v1_token"], emulator.stats["token"]) == (1, 1)


async def test_mtls_pop_never_falls_back_to_v1_on_a_v1_only_host(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    emulator.inject("getplatformmetadata", *[Fault(status=404)] * 4)
    async with MsiV2Client(**client_kwargs, retry=NO_RETRY) as client:
        with pytest.raises(ImdsV2NotSupportedError):
            await client.acquire_token()
    assert emulator.stats["v1_token"] == 0


async def test_probe_reports_imds_v2_with_the_backend_strength(client_kwargs: dict[str, Any]) -> None:
    async with MsiV2Client(**client_kwargs) as client:
        capabilities = await client.get_capabilities()
        assert await client.get_capabilities() is capabilities
    assert capabilities.source is ManagedIdentitySource.IMDS_V2
    assert capabilities.max_binding_strength == "software"
    assert capabilities.mtls_pop_supported


async def test_probe_reports_v1_only_when_v2_does_not_answer_400(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    emulator.inject("getplatformmetadata", Fault(status=404))
    async with MsiV2Client(**client_kwargs) as client:
        capabilities = await client.get_capabilities()
    assert capabilities.source is ManagedIdentitySource.IMDS_V1_ONLY
    assert capabilities.max_binding_strength == "none"
    assert not capabilities.mtls_pop_supported
    assert capabilities.reason is not None
    assert "HTTP 404" in capabilities.reason


async def test_probe_reports_unavailable_when_imds_is_down() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with MsiV2Client(imds_endpoint=f"http://127.0.0.1:{port}", retry=NO_RETRY) as client:
        capabilities = await client.get_capabilities(timeout=10)
    assert capabilities.source is ManagedIdentitySource.UNAVAILABLE
    assert capabilities.reason is not None
    assert "IMDSv1" in capabilities.reason


async def test_binding_strength_floor_fails_before_any_request(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    async with MsiV2Client(**client_kwargs, min_binding_strength="keyguard") as client:
        with pytest.raises(MsiV2UnavailableError, match="below the required minimum 'keyguard'"):
            await client.acquire_token()
        bearer = await client.acquire_token(token_type="bearer")
    assert bearer.token_type == "Bearer"
    assert emulator.stats["getplatformmetadata"] == 0
    assert emulator.stats["issuecredential"] == 0
