"""azure-core integration: credentials, the mtls_pop policies and the mTLS transports in real pipelines."""

from __future__ import annotations

import json
import logging
import socket
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from azure.core import AsyncPipelineClient, PipelineClient
from azure.core.credentials import AccessTokenInfo, SupportsTokenInfo, TokenCredential
from azure.core.credentials_async import AsyncSupportsTokenInfo, AsyncTokenCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.core.pipeline.policies import (
    AsyncRetryPolicy,
    HeadersPolicy,
    HttpLoggingPolicy,
    RetryPolicy,
    UserAgentPolicy,
)
from azure.core.pipeline.transport import HttpRequest as LegacyHttpRequest
from azure.core.rest import HttpRequest
from integration_kit import (
    CLAIMS,
    INVALID_CLIENT,
    ResourceLog,
    assert_all_bound,
    claims_challenge_fault,
)

from msiv2_async import NO_RETRY, ConfigurationError, FakeClock, MsiV2Client, MsiV2SyncClient
from msiv2_async.azure import (
    AsyncMtlsPopPolicy,
    AsyncMtlsTransport,
    MsiV2Credential,
    MsiV2CredentialSync,
    MtlsPopPolicy,
    MtlsPopTokenInfo,
    MtlsTransport,
)
from msiv2_async.emulator import Emulator, Fault

SCOPE = "https://graph.microsoft.com/.default"


@pytest.fixture
def sync_client(client_kwargs: dict[str, Any]) -> Iterator[MsiV2SyncClient]:
    with MsiV2SyncClient(**client_kwargs) as client:
        yield client


def async_pipeline(
    client: MsiV2Client, credential: MsiV2Credential, emulator: Emulator
) -> AsyncPipelineClient:
    policies = [
        HeadersPolicy(),
        UserAgentPolicy(base_user_agent="msiv2-tests"),
        AsyncRetryPolicy(retry_total=1, retry_backoff_factor=0.01),
        AsyncMtlsPopPolicy(credential, SCOPE),
        HttpLoggingPolicy(),
    ]
    return AsyncPipelineClient(
        base_url=emulator.resource_url, policies=policies, transport=AsyncMtlsTransport(client)
    )


def sync_pipeline(
    client: MsiV2SyncClient, credential: MsiV2CredentialSync, emulator: Emulator
) -> PipelineClient:
    policies = [
        HeadersPolicy(),
        RetryPolicy(retry_total=1, retry_backoff_factor=0.01),
        MtlsPopPolicy(credential, SCOPE),
        HttpLoggingPolicy(),
    ]
    return PipelineClient(base_url=emulator.resource_url, policies=policies, transport=MtlsTransport(client))


def unreachable_imds() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def fake_azure_identity(monkeypatch: pytest.MonkeyPatch) -> type[ClientAuthenticationError]:
    """Stands in for azure-identity (not a dependency) so the CredentialUnavailableError path runs."""

    class CredentialUnavailableError(ClientAuthenticationError):
        pass

    module = types.ModuleType("azure.identity")
    module.CredentialUnavailableError = CredentialUnavailableError  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "azure.identity", module)
    return CredentialUnavailableError


@pytest.fixture
def no_azure_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.identity", None)


# -- protocols and credentials ---------------------------------------------------------------------


def test_the_credentials_satisfy_azure_cores_protocols(client_kwargs: dict[str, Any]) -> None:
    asynchronous = MsiV2Credential(**client_kwargs)
    assert isinstance(asynchronous, AsyncTokenCredential)
    assert isinstance(asynchronous, AsyncSupportsTokenInfo)
    with MsiV2CredentialSync(**client_kwargs) as synchronous:
        assert isinstance(synchronous, TokenCredential)
        assert isinstance(synchronous, SupportsTokenInfo)
    anyio.run(asynchronous.close)
    assert asynchronous.client.closed
    assert synchronous.client.closed


@pytest.mark.anyio
async def test_get_token_info_returns_an_mtls_pop_token_with_refresh_on_and_its_certificate(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    async with MsiV2Credential(**client_kwargs) as credential:
        info = await credential.get_token_info(SCOPE, options={"pop": True})  # type: ignore[typeddict-unknown-key]
        token = await credential.get_token("https://graph.microsoft.com")
        certificate = await credential.client.get_binding_certificate()
    assert isinstance(info, AccessTokenInfo)
    assert isinstance(info, MtlsPopTokenInfo)
    assert info.token_type == "mtls_pop"
    assert info.refresh_on is not None
    assert info.expires_on > info.refresh_on
    assert info.binding_certificate == certificate
    assert credential.binding_certificate == certificate
    assert token.token == info.token
    assert info.token not in repr(info)
    assert emulator.stats["token"] == 1


@pytest.mark.anyio
async def test_exactly_one_scope_is_accepted(client_kwargs: dict[str, Any]) -> None:
    async with MsiV2Credential(**client_kwargs) as credential:
        for scopes in ((), (SCOPE, "https://vault.azure.net/.default")):
            with pytest.raises(ValueError, match="exactly one scope"):
                await credential.get_token_info(*scopes)
            with pytest.raises(ValueError, match="exactly one scope"):
                await credential.get_token(*scopes)
        with pytest.raises(ValueError, match="Signed HTTP Request"):
            await credential.get_token_info(SCOPE, options={"pop": {"u": "x"}})  # type: ignore[typeddict-unknown-key]


@pytest.mark.anyio
@pytest.mark.usefixtures("no_azure_identity")
async def test_unavailable_maps_to_client_authentication_error_without_azure_identity() -> None:
    async with MsiV2Credential(imds_endpoint=unreachable_imds(), retry=NO_RETRY, timeout=10) as credential:
        with pytest.raises(ClientAuthenticationError) as raised:
            await credential.get_token_info(SCOPE)
    assert type(raised.value) is ClientAuthenticationError
    assert type(raised.value.__cause__).__name__ == "ImdsUnreachableError"


@pytest.mark.anyio
async def test_unavailable_maps_to_credential_unavailable_error_with_azure_identity(
    fake_azure_identity: type[ClientAuthenticationError],
) -> None:
    async with MsiV2Credential(imds_endpoint=unreachable_imds(), retry=NO_RETRY, timeout=10) as credential:
        with pytest.raises(fake_azure_identity) as raised:
            await credential.get_token(SCOPE)
    assert type(raised.value.__cause__).__name__ == "ImdsUnreachableError"


@pytest.mark.anyio
async def test_other_failures_map_to_client_authentication_error(
    emulator: Emulator,
    client_kwargs: dict[str, Any],
    fake_azure_identity: type[ClientAuthenticationError],
) -> None:
    emulator.inject("token", *[INVALID_CLIENT] * 2)
    async with MsiV2Credential(**client_kwargs) as credential:
        with pytest.raises(ClientAuthenticationError, match="invalid_client") as raised:
            await credential.get_token_info(SCOPE)
    assert not isinstance(raised.value, fake_azure_identity)
    assert type(raised.value.__cause__).__name__ == "TokenRequestError"


@pytest.mark.usefixtures("no_azure_identity")
def test_the_sync_credential_maps_errors_the_same_way(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    with MsiV2SyncClient(**client_kwargs, failure_cache_seconds=0) as client:
        credential = MsiV2CredentialSync(client=client)
        emulator.inject("token", *[INVALID_CLIENT] * 2)
        with pytest.raises(ClientAuthenticationError) as raised:
            credential.get_token(SCOPE)
        info = credential.get_token_info(SCOPE)
        credential.close()
        assert not client.closed  # a client passed in is not the credential's to close
    assert type(raised.value.__cause__).__name__ == "TokenRequestError"
    assert info.token_type == "mtls_pop"


@pytest.mark.anyio
async def test_a_client_passed_in_is_not_closed(client_kwargs: dict[str, Any]) -> None:
    async with MsiV2Client(**client_kwargs) as client:
        async with MsiV2Credential(client=client) as credential:
            await credential.get_token_info(SCOPE)
        assert not client.closed
        with pytest.raises(ConfigurationError):
            MsiV2Credential(client=client, timeout=5)


# -- async pipeline ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_async_pipeline_calls_the_resource_with_mtls_pop(
    emulator: Emulator,
    client_kwargs: dict[str, Any],
    resource_log: ResourceLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with MsiV2Client(**client_kwargs) as client:
        credential = MsiV2Credential(client=client)
        async with async_pipeline(client, credential, emulator) as pipeline:
            response = await pipeline.send_request(HttpRequest("GET", emulator.resource_url))
            legacy = await pipeline.send_request(LegacyHttpRequest("GET", emulator.resource_url))
            posted = await pipeline.send_request(
                HttpRequest("POST", emulator.resource_url, json={"a": [1, 2]})
            )
            streamed = await pipeline.send_request(HttpRequest("GET", emulator.resource_url), stream=True)
            chunks = [chunk async for chunk in streamed.iter_bytes()]
    assert response.status_code == 200
    assert response.json()["verified"] is True
    assert json.loads(legacy.text())["verified"] is True
    assert posted.json()["verified"] is True
    assert json.loads(b"".join(chunks))["verified"] is True
    entries = resource_log.entries()
    assert len(entries) == 4
    assert_all_bound(entries)
    assert emulator.stats["token"] == 1
    assert not [s for s in emulator.sentinels() if s in caplog.text]


@pytest.mark.anyio
async def test_an_async_pipeline_answers_one_claims_challenge_and_no_more(
    emulator: Emulator, client_kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with MsiV2Client(**client_kwargs) as client:
        credential = MsiV2Credential(client=client)
        claims_seen: list[str | None] = []
        original = client.acquire_token

        async def acquire_token(scope: str, **kwargs: Any) -> Any:
            claims_seen.append(kwargs.get("claims"))
            return await original(scope, **kwargs)

        monkeypatch.setattr(client, "acquire_token", acquire_token)
        async with async_pipeline(client, credential, emulator) as pipeline:
            emulator.inject("resource", claims_challenge_fault())
            answered = await pipeline.send_request(HttpRequest("GET", emulator.resource_url))
            emulator.inject("resource", *[claims_challenge_fault()] * 5)
            refused = await pipeline.send_request(HttpRequest("GET", emulator.resource_url))
    assert answered.status_code == 200
    assert refused.status_code == 401
    assert emulator.stats["resource"] == 4
    # first token, the claims token (which the policy then keeps), one more claims token: no loop
    assert [json.loads(c) if c else c for c in claims_seen] == [None, CLAIMS, CLAIMS]


@pytest.mark.anyio
async def test_an_async_pipeline_follows_a_certificate_rotation_mid_stream(
    emulator: Emulator,
    client_kwargs: dict[str, Any],
    clock: FakeClock,
    rotate: Callable[[], None],
    resource_log: ResourceLog,
) -> None:
    statuses: list[int] = []
    async with MsiV2Client(**client_kwargs, clock=clock) as client:
        credential = MsiV2Credential(client=client)
        async with async_pipeline(client, credential, emulator) as pipeline:

            async def worker(count: int) -> None:
                for _ in range(count):
                    response = await pipeline.send_request(HttpRequest("GET", emulator.resource_url))
                    statuses.append(response.status_code)

            async with anyio.create_task_group() as group:
                for _ in range(4):
                    group.start_soon(worker, 15)
                while len(statuses) < 20:
                    await anyio.sleep(0.01)
                rotate()  # the client renews its certificate on its next token request ...
                emulator.inject("resource", claims_challenge_fault())  # ... which the resource asks for
        final = await client.acquire_token(SCOPE)
    entries = resource_log.entries()
    assert statuses == [200] * 60
    assert len(entries) == 61
    assert_all_bound(entries)
    used = list(dict.fromkeys(e["presented_x5t"] for e in entries))
    assert len(used) == 2
    assert used[-1] == final.binding_certificate.thumbprint_sha256
    assert emulator.stats["issuecredential"] == 2


@pytest.mark.anyio
async def test_azure_cores_retry_policy_sleeps_through_the_transport_on_either_event_loop(
    emulator: Emulator, client_kwargs: dict[str, Any], resource_log: ResourceLog
) -> None:
    async with MsiV2Client(**client_kwargs) as client:
        credential = MsiV2Credential(client=client)
        async with async_pipeline(client, credential, emulator) as pipeline:
            emulator.inject("resource", Fault(status=503, headers={"Retry-After": "0"}))
            response = await pipeline.send_request(HttpRequest("GET", emulator.resource_url))
    assert response.status_code == 200
    assert [e["status"] for e in resource_log.entries()] == [503, 200]
    assert_all_bound(resource_log.entries())


@pytest.mark.anyio
async def test_the_transport_refuses_a_request_without_the_policy(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    async with MsiV2Client(**client_kwargs) as client:
        pipeline = AsyncPipelineClient(base_url=emulator.resource_url, transport=AsyncMtlsTransport(client))
        async with pipeline:
            with pytest.raises(ConfigurationError, match="AsyncMtlsPopPolicy"):
                await pipeline.send_request(HttpRequest("GET", emulator.resource_url))
    assert emulator.stats["resource"] == 0


@pytest.mark.anyio
async def test_the_policy_refuses_a_credential_without_mtls_pop_tokens(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    class BearerOnly:
        async def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
            return AccessTokenInfo("x", 2_000_000_000)

        async def close(self) -> None:
            return None

    async with MsiV2Client(**client_kwargs) as client:
        policies = [AsyncMtlsPopPolicy(BearerOnly(), SCOPE)]  # type: ignore[arg-type]
        pipeline = AsyncPipelineClient(
            base_url=emulator.resource_url, policies=policies, transport=AsyncMtlsTransport(client)
        )
        async with pipeline:
            with pytest.raises(ClientAuthenticationError, match="mtls_pop"):
                await pipeline.send_request(HttpRequest("GET", emulator.resource_url))
    assert emulator.stats["resource"] == 0


# -- sync pipeline -----------------------------------------------------------------------------------


def test_a_sync_pipeline_calls_the_resource_answers_claims_and_follows_rotation(
    emulator: Emulator,
    sync_client: MsiV2SyncClient,
    resource_log: ResourceLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    credential = MsiV2CredentialSync(client=sync_client)
    statuses: list[int] = []
    with sync_pipeline(sync_client, credential, emulator) as pipeline:
        for index in range(10):
            if index == 5:
                # the resource asks for claims; the STS then rejects the certificate: re-mint, retry
                emulator.inject("resource", claims_challenge_fault())
                emulator.inject("token", INVALID_CLIENT)
            statuses.append(pipeline.send_request(HttpRequest("GET", emulator.resource_url)).status_code)
        legacy = pipeline.send_request(LegacyHttpRequest("GET", emulator.resource_url))
    assert statuses == [200] * 10
    assert json.loads(legacy.text())["verified"] is True
    entries = resource_log.entries()
    assert len(entries) == 12
    assert_all_bound(entries)
    used = list(dict.fromkeys(e["presented_x5t"] for e in entries))
    assert len(used) == 2
    assert emulator.stats["issuecredential"] == 2
    assert not [s for s in emulator.sentinels() if s in caplog.text]
