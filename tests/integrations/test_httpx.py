"""httpx helpers against the emulator resource over real loopback TLS (asyncio and trio)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from integration_kit import (
    CLAIMS,
    INVALID_CLIENT,
    PLAIN_401,
    ResourceLog,
    assert_all_bound,
    claims_challenge_fault,
)

from msiv2_async import (
    BindingCertificate,
    ConfigurationError,
    FakeClock,
    MsiV2Client,
    MtlsPopAuth,
    MtlsPopTransport,
    UntrustedEndpointError,
    create_mtls_client,
)
from msiv2_async._httpx import CERTIFICATE_EXTENSION
from msiv2_async.emulator import Emulator

pytestmark = pytest.mark.anyio
SCOPE = "https://graph.microsoft.com/.default"


class RecordingTransport(httpx.AsyncBaseTransport):
    """Wraps an inner mTLS transport and remembers whether it was closed."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        self.closed = True
        await self.inner.aclose()


def record_transports(client: MsiV2Client, monkeypatch: pytest.MonkeyPatch) -> list[RecordingTransport]:
    created: list[RecordingTransport] = []
    original = client.mtls_transport

    async def mtls_transport(certificate: BindingCertificate) -> httpx.AsyncBaseTransport:
        transport = RecordingTransport(await original(certificate))
        created.append(transport)
        return transport

    monkeypatch.setattr(client, "mtls_transport", mtls_transport)
    return created


def record_claims(client: MsiV2Client, monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    seen: list[str | None] = []
    original = client.acquire_token

    async def acquire_token(scope: str, **kwargs: Any) -> Any:
        seen.append(kwargs.get("claims"))
        return await original(scope, **kwargs)

    monkeypatch.setattr(client, "acquire_token", acquire_token)
    return seen


async def test_the_client_presents_the_certificate_its_token_is_bound_to(
    emulator: Emulator, client_kwargs: dict[str, Any], resource_log: ResourceLog
) -> None:
    async with MsiV2Client(**client_kwargs) as client, create_mtls_client(client, SCOPE) as http:
        response = await http.get(emulator.resource_url)
        token = await client.acquire_token(SCOPE)
    assert response.status_code == 200
    assert response.json()["verified"] is True
    assert response.request.headers["Authorization"] == token.authorization_header()
    assert response.request.extensions[CERTIFICATE_EXTENSION] == token.binding_certificate
    assert_all_bound(resource_log.entries())
    assert resource_log.entries()[0]["presented_x5t"] == token.binding_certificate.thumbprint_sha256


async def test_a_claims_challenge_is_answered_with_one_new_token_and_one_retry(
    emulator: Emulator, client_kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with MsiV2Client(**client_kwargs) as client, create_mtls_client(client, SCOPE) as http:
        claims_seen = record_claims(client, monkeypatch)
        emulator.inject("resource", claims_challenge_fault())
        response = await http.get(emulator.resource_url)
    assert response.status_code == 200
    assert emulator.stats["resource"] == 2
    assert emulator.stats["token"] == 2  # the claims token bypasses the cache
    assert claims_seen[0] is None
    assert claims_seen[1] is not None
    assert json.loads(claims_seen[1]) == CLAIMS
    assert len(claims_seen) == 2


async def test_a_repeated_claims_challenge_is_retried_only_once(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    async with MsiV2Client(**client_kwargs) as client, create_mtls_client(client, SCOPE) as http:
        emulator.inject("resource", *[claims_challenge_fault()] * 5)
        response = await http.get(emulator.resource_url)
    assert response.status_code == 401
    assert emulator.stats["resource"] == 2


async def test_a_plain_401_is_returned_as_is(emulator: Emulator, client_kwargs: dict[str, Any]) -> None:
    async with MsiV2Client(**client_kwargs) as client, create_mtls_client(client, SCOPE) as http:
        await http.get(emulator.resource_url)
        emulator.reset()
        emulator.inject("resource", PLAIN_401)
        response = await http.get(emulator.resource_url)
    assert response.status_code == 401
    assert emulator.stats["resource"] == 1
    assert emulator.stats["token"] == 0


async def test_the_transport_refuses_requests_without_a_certificate_or_to_unsafe_urls(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    async with MsiV2Client(**client_kwargs) as client:
        async with httpx.AsyncClient(transport=MtlsPopTransport(client)) as bare:
            with pytest.raises(ConfigurationError, match="names no binding certificate"):
                await bare.get(emulator.resource_url)
        async with create_mtls_client(client, SCOPE) as http:
            for url in ("http://127.0.0.1:9/", "https://169.254.169.254/metadata/identity"):
                with pytest.raises(UntrustedEndpointError):
                    await http.get(url)
    assert emulator.stats["resource"] == 0


async def test_the_factory_refuses_redirects_and_foreign_transports(client_kwargs: dict[str, Any]) -> None:
    async with MsiV2Client(**client_kwargs) as client:
        with pytest.raises(ConfigurationError, match="redirects"):
            create_mtls_client(client, SCOPE, follow_redirects=True)
        with pytest.raises(ConfigurationError, match="transport"):
            create_mtls_client(client, SCOPE, transport=httpx.AsyncHTTPTransport())
        with (
            pytest.raises(ConfigurationError, match=r"httpx\.AsyncClient only"),
            httpx.Client(auth=MtlsPopAuth(client, SCOPE)) as sync_http,
        ):
            sync_http.get("https://127.0.0.1:9/")


async def test_requests_keep_flowing_and_stay_bound_across_a_certificate_rotation(
    emulator: Emulator,
    client_kwargs: dict[str, Any],
    clock: FakeClock,
    rotate: Callable[[], None],
    resource_log: ResourceLog,
) -> None:
    statuses: list[int] = []
    async with MsiV2Client(**client_kwargs, clock=clock) as client, create_mtls_client(client, SCOPE) as http:
        transport = http._transport
        assert isinstance(transport, MtlsPopTransport)

        async def worker(count: int) -> None:
            for _ in range(count):
                statuses.append((await http.get(emulator.resource_url)).status_code)

        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(worker, 15)
            while len(statuses) < 20:
                await anyio.sleep(0.01)
            rotate()
        final = await client.acquire_token(SCOPE)
        held = transport.certificates
    entries = resource_log.entries()
    assert statuses == [200] * 60
    assert len(entries) == 60
    assert_all_bound(entries)
    used = list(dict.fromkeys(e["presented_x5t"] for e in entries))
    assert len(used) == 2
    assert used[-1] == final.binding_certificate.thumbprint_sha256
    assert emulator.stats["issuecredential"] == 2
    assert held == used


async def test_at_most_two_inner_transports_are_kept_and_older_ones_are_closed(
    emulator: Emulator,
    client_kwargs: dict[str, Any],
    resource_log: ResourceLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with MsiV2Client(**client_kwargs) as client, create_mtls_client(client, SCOPE) as http:
        created = record_transports(client, monkeypatch)
        transport = http._transport
        assert isinstance(transport, MtlsPopTransport)
        for _ in range(3):
            assert (await http.get(emulator.resource_url)).status_code == 200
            emulator.inject("token", INVALID_CLIENT)
            await client.acquire_token(SCOPE, force_refresh=True)  # the STS rejects the certificate: re-mint
        assert (await http.get(emulator.resource_url)).status_code == 200
        assert len(transport.certificates) == 2
        assert [t.closed for t in created] == [True, True, False, False]
    assert all(t.closed for t in created)
    entries = resource_log.entries()
    assert_all_bound(entries)
    assert len({e["presented_x5t"] for e in entries}) == 4
    assert emulator.stats["issuecredential"] == 4


async def test_no_token_reaches_logs_or_reprs(
    emulator: Emulator, client_kwargs: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with MsiV2Client(**client_kwargs) as client, create_mtls_client(client, SCOPE) as http:
        emulator.inject("resource", claims_challenge_fault())
        response = await http.get(emulator.resource_url)
        texts = [caplog.text, repr(http.auth), repr(http._transport), repr(response.request.extensions)]
    assert response.status_code == 200
    secrets = emulator.sentinels()
    assert len(secrets) >= 2
    assert not [s for s in secrets for text in texts if s in text]
