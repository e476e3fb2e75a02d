"""The whole MSI v2 flow against the emulator: real HTTP, real TLS, real mTLS on loopback."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from msiv2_async import (
    ImdsError,
    ImdsUnreachableError,
    MsiV2Client,
    MsiV2TimeoutError,
    TokenRequestError,
    UntrustedEndpointError,
    acquire_token,
)
from msiv2_async._binding import cnf_thumbprint
from msiv2_async.emulator import Emulator, Fault

pytestmark = pytest.mark.anyio


def _common_name(certificate_der: bytes) -> str:
    certificate = x509.load_der_x509_certificate(certificate_der)
    return str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


async def test_acquire_token_runs_metadata_issuecredential_and_token_once(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    async with MsiV2Client(**client_kwargs) as client:
        token = await client.acquire_token("https://vault.azure.net")
    assert token.token_type == "mtls_pop"
    assert token.scope == "https://vault.azure.net/.default"
    assert cnf_thumbprint(token.access_token) == token.binding_certificate.thumbprint_sha256
    assert _common_name(token.binding_certificate.der) == emulator.system_identity.client_id
    stats = emulator.stats
    assert (stats["getplatformmetadata"], stats["issuecredential"], stats["token"]) == (1, 1, 1)


async def test_resource_call_presents_the_certificate_the_token_is_bound_to(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    async with MsiV2Client(**client_kwargs) as client:
        token = await client.acquire_token()
        async with await client.resource_client(token) as http:
            response = await http.get(emulator.resource_url)
    assert response.status_code == 200
    assert response.json()["verified"] is True
    last = emulator.resource_log[-1]
    assert last["presented_x5t"] == last["cnf_x5t"] == token.binding_certificate.thumbprint_sha256


@pytest.mark.parametrize("selector", ["client_id", "object_id", "resource_id"])
async def test_user_assigned_identity_gets_a_certificate_for_its_client_id(
    emulator: Emulator, client_kwargs: dict[str, Any], selector: str
) -> None:
    identity = emulator.user_assigned[0]
    async with MsiV2Client(**client_kwargs, **{selector: getattr(identity, selector)}) as client:
        token = await client.acquire_token()
    assert _common_name(token.binding_certificate.der) == identity.client_id
    assert identity.client_id != emulator.system_identity.client_id


async def test_token_host_outside_the_allowlist_receives_nothing(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    client_kwargs.pop("allowed_token_hosts")
    async with MsiV2Client(**client_kwargs, environ={}) as client:
        with pytest.raises(UntrustedEndpointError, match="allowed token hosts"):
            await client.acquire_token()
    assert emulator.stats["token"] == 0


async def test_sts_certificate_is_verified_against_the_ca_bundle(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    client_kwargs.pop("ca_bundle")
    async with MsiV2Client(**client_kwargs, environ={}) as client:
        with pytest.raises(TokenRequestError, match="did not verify"):
            await client.acquire_token()
    assert emulator.stats["token"] == 0


async def test_answer_without_imds_server_header_is_rejected(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    emulator.inject("getplatformmetadata", Fault(status=200, body=b"{}", server_header="nginx"))
    async with MsiV2Client(**client_kwargs) as client:
        with pytest.raises(ImdsError, match="did not come from IMDS"):
            await client.acquire_token()
    assert emulator.stats["issuecredential"] == 0


async def test_imds_redirect_is_not_followed(emulator: Emulator, client_kwargs: dict[str, Any]) -> None:
    emulator.inject(
        "issuecredential", Fault(status=307, headers={"Location": f"{emulator.imds_url}/elsewhere"}, body=b"")
    )
    async with MsiV2Client(**client_kwargs) as client:
        with pytest.raises(ImdsError, match="HTTP 307"):
            await client.acquire_token()
    assert emulator.stats["issuecredential"] == 1
    assert emulator.stats["token"] == 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_imds_is_reported_as_unreachable() -> None:
    async with MsiV2Client(imds_endpoint=f"http://127.0.0.1:{_closed_port()}", timeout=2.0) as client:
        with pytest.raises(ImdsUnreachableError, match="no usable answer from IMDS"):
            await client.acquire_token()


async def test_deadline_bounds_a_slow_imds(emulator: Emulator, client_kwargs: dict[str, Any]) -> None:
    emulator.inject("getplatformmetadata", Fault(status=200, delay=5.0))
    async with MsiV2Client(**client_kwargs, timeout=0.5) as client:
        with pytest.raises(MsiV2TimeoutError, match=r"within 0\.5 s"):
            await client.acquire_token()


class _ConnectionCounter:
    """A TCP listener that counts connections and answers nothing useful: a decoy proxy."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.connections = 0
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            conn.close()


@pytest.fixture
def decoy_proxy() -> Iterator[_ConnectionCounter]:
    decoy = _ConnectionCounter()
    yield decoy
    decoy.sock.close()


async def test_imds_traffic_never_goes_through_a_proxy(
    emulator: Emulator,
    client_kwargs: dict[str, Any],
    decoy_proxy: _ConnectionCounter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, decoy_proxy.url)
    async with MsiV2Client(**client_kwargs) as client:
        token = await client.acquire_token()
    assert token.token_type == "mtls_pop"
    assert decoy_proxy.connections == 0


async def test_resource_client_refuses_plain_http_and_link_local_targets(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    async with MsiV2Client(**client_kwargs) as client:
        token = await client.acquire_token()
        async with await client.resource_client(token) as http:
            with pytest.raises(UntrustedEndpointError, match="over 'http'"):
                await http.get(emulator.imds_url)
            with pytest.raises(UntrustedEndpointError, match="link-local"):
                await http.get("https://169.254.169.254/metadata")
    assert emulator.stats["resource"] == 0


async def test_module_level_acquire_token_reads_the_environment(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in emulator.env().items():
        monkeypatch.setenv(name, value)
    token = await acquire_token("https://management.azure.com/")
    assert token.scope == "https://management.azure.com/.default"
    assert cnf_thumbprint(token.access_token) == token.binding_certificate.thumbprint_sha256


async def test_token_never_appears_in_logs_or_reprs(
    emulator: Emulator, client_kwargs: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with MsiV2Client(**client_kwargs) as client:
        token = await client.acquire_token()
        async with await client.resource_client(token) as http:
            await http.get(emulator.resource_url)
        texts = [repr(token), str(token), repr(client), repr(token.binding_certificate), caplog.text]
    secret_parts = token.access_token.split(".")
    for text in texts:
        assert token.access_token not in text
        assert secret_parts[2] not in text
    assert any("acquired mtls_pop token" in r.getMessage() for r in caplog.records)


async def test_http_helper_keeps_the_authorization_header_on_every_request(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    async with MsiV2Client(**client_kwargs) as client:
        token = await client.acquire_token()
        async with await client.resource_client(token, timeout=httpx.Timeout(10.0)) as http:
            statuses = [(await http.get(emulator.resource_url)).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert all(entry["scheme"] == "mtls_pop" for entry in emulator.resource_log[-3:])
