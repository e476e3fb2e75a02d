"""The emulator as a test harness: fault injection, counters, lifecycle, environment, async use."""

from __future__ import annotations

import os
import socket
import ssl
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from emulator_kit import (
    METADATA,
    V2,
    call_resource,
    counts,
    csr_for,
    get_metadata,
    http,
    issue_certificate,
    post_csr,
    request_token,
    tls_context,
)

from msiv2_async.emulator import Emulator, Fault, Identity


def test_faults_are_consumed_in_order_and_counted(emu: Emulator) -> None:
    emu.inject(
        "getplatformmetadata",
        Fault(status=404),
        Fault(status=429, headers={"Retry-After": "7"}, body='{"error":"throttled"}'),
        Fault(status=503, body="busy"),
    )
    responses = [get_metadata(emu) for _ in range(4)]
    assert [r.status_code for r in responses] == [404, 429, 503, 200]
    assert responses[1].headers["Retry-After"] == "7"
    assert responses[1].headers["Content-Type"] == "application/json; charset=utf-8"
    assert responses[1].json() == {"error": "throttled"}
    assert responses[2].text == "busy"
    assert responses[2].headers["Content-Type"] == "text/plain; charset=utf-8"
    assert all(r.headers["Server"] == "IMDS/150.870.65.1854" for r in responses)
    assert emu.stats == counts(getplatformmetadata=4)


def test_fault_replaces_even_a_request_that_would_be_rejected(emu: Emulator) -> None:
    emu.inject("issuecredential", Fault(status=410))
    response = http("POST", f"{emu.imds_url}/metadata/identity/issuecredential", params=V2)
    assert response.status_code == 410
    assert post_csr(emu, "x", headers={}).status_code == 400
    assert emu.stats["issuecredential"] == 2


def test_fault_server_header_can_be_dropped_or_replaced(emu: Emulator) -> None:
    emu.inject(
        "getplatformmetadata",
        Fault(status=500, server_header=None),
        Fault(status=500, server_header="I_MDS/1.0"),
    )
    dropped, replaced = get_metadata(emu), get_metadata(emu)
    assert "Server" not in dropped.headers
    assert replaced.headers["Server"] == "I_MDS/1.0"
    assert not any(name.lower().startswith("x-msiv2") for name in (*dropped.headers, *replaced.headers))


def test_fault_delay_holds_the_answer_back(emu: Emulator) -> None:
    emu.inject("getplatformmetadata", Fault(status=200, body="{}", delay=0.4))
    started = time.perf_counter()
    response = get_metadata(emu)
    assert time.perf_counter() - started >= 0.4
    assert response.json() == {}


def test_fault_delay_lets_a_client_time_out(emu: Emulator) -> None:
    emu.inject("getplatformmetadata", Fault(status=200, delay=2.0))
    with pytest.raises(httpx.ReadTimeout):
        http(
            "GET",
            f"{emu.imds_url}/metadata/identity/getplatformmetadata",
            params=V2,
            headers=METADATA,
            timeout=0.2,
        )


def test_faults_on_token_and_resource_endpoints(
    emu: Emulator, client_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    certificate = issue_certificate(emu, client_key)
    context = tls_context(emu, tmp_path, certificate, client_key)
    emu.inject("token", Fault(status=401, body='{"error":"invalid_client","error_codes":[1000611]}'))
    emu.inject("resource", Fault(status=401, headers={"WWW-Authenticate": 'mtls_pop claims="e30="'}))
    assert request_token(emu, context, client_id=emu.system_identity.client_id).json()["error_codes"] == [
        1000611
    ]
    token = request_token(emu, context, client_id=emu.system_identity.client_id).json()["access_token"]
    challenged = call_resource(emu, context, f"mtls_pop {token}")
    assert challenged.headers["WWW-Authenticate"] == 'mtls_pop claims="e30="'
    assert emu.resource_log[-1]["status"] == 401
    assert call_resource(emu, context, f"mtls_pop {token}").status_code == 200
    assert emu.stats == counts(issuecredential=1, token=2, resource=2)


def test_inject_rejects_unknown_endpoint(emu: Emulator) -> None:
    with pytest.raises(ValueError, match="unknown endpoint"):
        emu.inject("oauth2", Fault())


def test_stats_endpoint_reports_counts_and_is_not_counted(
    emu: Emulator, client_key: rsa.RSAPrivateKey
) -> None:
    get_metadata(emu)
    get_metadata(emu, headers={})
    post_csr(emu, csr_for(emu, client_key))
    first = http("GET", f"{emu.imds_url}/_emulator/stats").json()
    second = http("GET", f"{emu.imds_url}/_emulator/stats").json()
    expected = counts(
        getplatformmetadata=2, issuecredential=1, metadata_header_missing=1, rejected_requests=1
    )
    assert first == second == expected
    assert emu.stats == first
    emu.reset_stats()
    assert http("GET", f"{emu.imds_url}/_emulator/stats").json() == dict.fromkeys(first, 0)


def test_env_points_a_client_at_the_emulator(emu: Emulator) -> None:
    env = emu.env()
    assert env == {
        "AZURE_POD_IDENTITY_AUTHORITY_HOST": emu.imds_url,
        "MSIV2_ASYNC_CA_BUNDLE": emu.ca_bundle_path,
        "MSIV2_ASYNC_ALLOWED_TOKEN_HOSTS": emu.allowed_token_host,
    }
    assert emu.imds_url.startswith("http://127.0.0.1:")
    assert emu.sts_url == f"https://{emu.allowed_token_host}"
    assert emu.resource_url.startswith("https://127.0.0.1:")
    assert emu.resource_url.endswith("/v1.0/applications")
    assert Path(emu.ca_bundle_path).read_bytes() == emu.ca_pem
    context = ssl.create_default_context(cafile=env["MSIV2_ASYNC_CA_BUNDLE"])
    with httpx.Client(verify=context) as client:
        assert client.get(f"{emu.sts_url}/x").status_code == 404


def test_server_certificate_names_loopback_and_localhost(emu: Emulator) -> None:
    pem = ssl.get_server_certificate(("127.0.0.1", int(emu.allowed_token_host.rsplit(":", 1)[1])))
    names = x509.load_pem_x509_certificate(pem.encode()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert "localhost" in names.value.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.value.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    context = ssl.create_default_context(cadata=emu.ca_pem.decode())
    with httpx.Client(verify=context) as client:
        assert client.get(f"{emu.sts_url.replace('127.0.0.1', 'localhost')}/x").status_code == 404


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_sts_speaks_tls_1_2_and_1_3(emu: Emulator, version: ssl.TLSVersion) -> None:
    context = ssl.create_default_context(cadata=emu.ca_pem.decode())
    context.minimum_version = context.maximum_version = version
    host, port = emu.allowed_token_host.rsplit(":", 1)
    with (
        socket.create_connection((host, int(port))) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert (
            tls.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
        )


def test_lifecycle_start_stop_and_cleanup() -> None:
    emu = Emulator()
    with pytest.raises(RuntimeError, match="not running"):
        _ = emu.imds_url
    started = time.perf_counter()
    emu.start()
    try:
        assert time.perf_counter() - started < 2.0
        bundle = emu.ca_bundle_path
        port = int(emu.imds_url.rsplit(":", 1)[1])
        with pytest.raises(RuntimeError, match="already running"):
            emu.start()
        assert get_metadata(emu).status_code == 200
    finally:
        emu.stop()
    emu.stop()
    assert not os.path.exists(os.path.dirname(bundle))
    with pytest.raises(httpx.ConnectError):
        http("GET", f"http://127.0.0.1:{port}/_emulator/stats")


def test_fixed_ports_are_honoured() -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = int(probe.getsockname()[1])
    probe.close()
    with Emulator(imds_port=port) as emu:
        assert emu.imds_url == f"http://127.0.0.1:{port}"
        assert get_metadata(emu).status_code == 200


def test_start_fails_cleanly_when_a_port_is_taken() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        emu = Emulator(sts_port=int(taken.getsockname()[1]))
        with pytest.raises(RuntimeError, match="failed to start") as failure:
            emu.start()
    assert isinstance(failure.value.__cause__, OSError)
    with pytest.raises(RuntimeError, match="not running"):
        _ = emu.ca_bundle_path
    emu.stop()


def test_stop_cancels_answers_still_being_delayed() -> None:
    with Emulator() as emu:
        emu.inject("getplatformmetadata", Fault(status=200, delay=30.0))
        with pytest.raises(httpx.ReadTimeout):
            get_metadata_with_timeout(emu)
        started = time.perf_counter()
    assert time.perf_counter() - started < 2.0


def get_metadata_with_timeout(emu: Emulator) -> httpx.Response:
    return http(
        "GET",
        f"{emu.imds_url}/metadata/identity/getplatformmetadata",
        params=V2,
        headers=METADATA,
        timeout=0.1,
    )


def test_custom_user_assigned_identities_and_validation() -> None:
    first = Identity(
        "aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000001", "/x/one", True
    )
    second = Identity(
        "aaaaaaaa-0000-4000-8000-000000000002", "bbbbbbbb-0000-4000-8000-000000000002", "/x/two", True
    )
    with pytest.raises(ValueError, match="user_assigned=False"):
        Emulator(user_assigned=(Identity("c", "o", "/r", False),))
    with pytest.raises(ValueError, match="distinct"):
        Emulator(user_assigned=(first, first))
    with Emulator(user_assigned=(first, second)) as emu:
        assert emu.user_assigned == (first, second)
        response = get_metadata(emu, params={**V2, "object_id": second.object_id})
        assert response.json()["clientId"] == second.client_id


def test_restricted_resource_audiences(client_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    with Emulator(resource_audiences=["https://vault.azure.net/"]) as emu:
        context = tls_context(emu, tmp_path, issue_certificate(emu, client_key), client_key)
        tokens = {
            scope: request_token(
                emu, context, client_id=emu.system_identity.client_id, scope=f"{scope}/.default"
            )
            for scope in ("https://vault.azure.net", "https://graph.microsoft.com")
        }
        statuses = {
            scope: call_resource(emu, context, f"mtls_pop {r.json()['access_token']}").status_code
            for scope, r in tokens.items()
        }
    assert statuses == {"https://vault.azure.net": 200, "https://graph.microsoft.com": 401}


@pytest.mark.anyio
async def test_async_context_manager_on_asyncio_and_trio(anyio_backend: str) -> None:
    async with Emulator() as emu:
        async with httpx.AsyncClient() as client:
            response = await client.get(
                f"{emu.imds_url}/metadata/identity/getplatformmetadata", params=V2, headers=METADATA
            )
        context = ssl.create_default_context(cadata=emu.ca_pem.decode())
        async with httpx.AsyncClient(verify=context) as client:
            sts = await client.post(f"{emu.sts_url}/{emu.tenant_id}/oauth2/v2.0/token", data={})
        assert emu.stats["getplatformmetadata"] == 1
        bundle = emu.ca_bundle_path
    assert response.status_code == 200
    assert response.json()["tenantId"] == emu.tenant_id
    assert sts.json()["error_codes"] == [392200]
    assert not os.path.exists(bundle)
