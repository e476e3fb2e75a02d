"""Scripted faults over loopback: delivery actions, altered normal answers, certificate and token variants."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from emulator_kit import (
    METADATA,
    V2,
    call_resource,
    csr_for,
    get_metadata,
    http,
    http_client,
    issue_certificate,
    jwt_parts,
    post_csr,
    request_token,
    tls_context,
    x5t_s256,
)

from msiv2_async.emulator import REMOVE, Emulator, Fault


def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def metadata_url(emu: Emulator) -> str:
    return f"{emu.imds_url}/metadata/identity/getplatformmetadata"


@pytest.fixture(scope="module")
def bound(
    running_emulator: Emulator, client_key: rsa.RSAPrivateKey, tmp_path_factory: pytest.TempPathFactory
) -> tuple[x509.Certificate, ssl.SSLContext]:
    certificate = issue_certificate(running_emulator, client_key)
    return certificate, tls_context(
        running_emulator, tmp_path_factory.mktemp("bound"), certificate, client_key
    )


def token_response(emu: Emulator, context: ssl.SSLContext) -> httpx.Response:
    return request_token(emu, context, client_id=emu.system_identity.client_id)


# -- delivery actions ------------------------------------------------------------------------------------


def test_slowloris_sends_the_head_then_one_byte_per_interval(emu: Emulator) -> None:
    emu.inject("getplatformmetadata", Fault(action="slowloris", status=200, body="abcde", interval=0.05))
    chunks: list[bytes] = []
    started = time.perf_counter()
    with (
        http_client() as client,
        client.stream("GET", metadata_url(emu), params=V2, headers=METADATA) as response,
    ):
        assert response.status_code == 200
        assert response.headers["Content-Length"] == "5"
        assert response.headers["Server"] == "IMDS/150.870.65.1854"
        chunks.extend(response.iter_raw())
    elapsed = time.perf_counter() - started
    assert b"".join(chunks) == b"abcde"
    assert chunks[0].startswith(b"a")
    assert len(chunks) >= 2
    assert elapsed >= 4 * 0.05
    assert emu.stats["getplatformmetadata"] == 1


def test_slowloris_without_a_body_sends_the_normal_answer_slowly(emu: Emulator) -> None:
    emu.inject("getplatformmetadata", Fault(action="slowloris", interval=0.001))
    response = get_metadata(emu)
    assert response.status_code == 200
    assert response.json()["clientId"] == emu.system_identity.client_id


def test_slowloris_stops_when_the_client_leaves(emu: Emulator) -> None:
    emu.inject("getplatformmetadata", Fault(action="slowloris", status=200, body="x" * 1000, interval=0.05))
    with (
        http_client() as client,
        client.stream("GET", metadata_url(emu), params=V2, headers=METADATA) as response,
    ):
        chunks = response.iter_raw()
        assert next(chunks).startswith(b"x")
        assert emu.active_requests == 1
        del chunks
    assert wait_until(lambda: emu.active_requests == 0, 1.0)


def test_reset_is_a_transport_error_for_httpx(emu: Emulator) -> None:
    emu.inject("getplatformmetadata", Fault(action="reset", status=200, body="x" * 100))
    with pytest.raises(httpx.TransportError):
        get_metadata(emu)
    assert wait_until(lambda: emu.active_requests == 0, 1.0)


def _read_until_reset(sock: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        return received
    raise AssertionError("the connection ended without a reset")


def test_reset_declares_more_than_it_sends_then_resets_the_connection(emu: Emulator) -> None:
    emu.inject("getplatformmetadata", Fault(action="reset", status=200, body="y" * 100))
    port = int(emu.imds_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"GET /metadata/identity/getplatformmetadata?cred-api-version=2.0 HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nMetadata: true\r\n\r\n"
        )
        received = _read_until_reset(sock)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: 1124" in head
    assert body == b"y" * 50


def test_reset_without_a_body_cuts_the_normal_answer(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    emu.inject("issuecredential", Fault(action="reset"))
    with pytest.raises(httpx.TransportError):
        post_csr(emu, csr_for(emu, client_key))
    assert len(emu.issued_certificates) >= 1


def test_endless_body_is_chunked_and_ends_when_the_client_leaves(emu: Emulator) -> None:
    emu.inject("getplatformmetadata", Fault(action="endless"))
    read = 0
    with (
        http_client() as client,
        client.stream("GET", metadata_url(emu), params=V2, headers=METADATA) as response,
    ):
        assert response.status_code == 200
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        for chunk in response.iter_raw():
            if read == 0:
                assert chunk.startswith(b'{"value":"')
                assert emu.active_requests == 1
            read += len(chunk)
            if read >= 1024 * 1024:
                break
    assert read >= 1024 * 1024
    assert wait_until(lambda: emu.active_requests == 0, 1.0)


def test_hang_never_answers_and_ends_when_the_client_leaves(emu: Emulator) -> None:
    emu.inject("getplatformmetadata", Fault(action="hang"))
    started = time.perf_counter()
    with pytest.raises(httpx.ReadTimeout):
        http("GET", metadata_url(emu), params=V2, headers=METADATA, timeout=0.3)
    assert 0.3 <= time.perf_counter() - started < 2.0
    assert wait_until(lambda: emu.active_requests == 0, 1.0)
    assert emu.stats["getplatformmetadata"] == 1
    assert get_metadata(emu).status_code == 200


def test_hang_reads_a_request_body(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    emu.inject("issuecredential", Fault(action="hang"))
    with pytest.raises(httpx.ReadTimeout):
        http(
            "POST",
            f"{emu.imds_url}/metadata/identity/issuecredential",
            params=V2,
            headers=METADATA,
            json={"csr": "x" * 200_000},
            timeout=0.3,
        )
    assert wait_until(lambda: emu.active_requests == 0, 1.0)


def test_delay_ends_early_when_the_client_gives_up(emu: Emulator) -> None:
    emu.inject("getplatformmetadata", Fault(status=200, delay=30.0))
    with pytest.raises(httpx.ReadTimeout):
        http("GET", metadata_url(emu), params=V2, headers=METADATA, timeout=0.2)
    assert wait_until(lambda: emu.active_requests == 0, 1.0)


def test_body_size_sends_exactly_that_many_generated_bytes(emu: Emulator) -> None:
    size = 3 * 1024 * 1024 + 7
    emu.inject("getplatformmetadata", Fault(status=200, body_size=size), Fault(status=200, body_size=1))
    response = get_metadata(emu)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(size)
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert len(response.content) == size
    assert response.content[:1] == b"{"
    assert response.content[1:].strip(b" ") == b""
    assert get_metadata(emu).content == b"{"


def test_oversized_body_stops_when_the_client_stops_reading(emu: Emulator) -> None:
    emu.inject("getplatformmetadata", Fault(status=200, body_size=100 * 1024 * 1024))
    with (
        http_client() as client,
        client.stream("GET", metadata_url(emu), params=V2, headers=METADATA) as response,
    ):
        read = 0
        for chunk in response.iter_raw():
            read += len(chunk)
            if read >= 1024 * 1024:
                break
    assert wait_until(lambda: emu.active_requests == 0, 1.0)


def test_scripted_status_defaults(emu: Emulator) -> None:
    emu.inject("getplatformmetadata", Fault(), Fault(body="{}"))
    first, second = get_metadata(emu), get_metadata(emu)
    assert (first.status_code, first.content) == (500, b"")
    assert (second.status_code, second.json()) == (500, {})


def test_redirect_and_server_header_variants(emu: Emulator) -> None:
    emu.inject(
        "issuecredential",
        Fault(status=307, headers={"Location": "http://127.0.0.1:9/decoy"}, server_header="nginx"),
    )
    response = http("POST", f"{emu.imds_url}/metadata/identity/issuecredential", params=V2, headers=METADATA)
    assert response.status_code == 307
    assert response.headers["Location"] == "http://127.0.0.1:9/decoy"
    assert response.headers["Server"] == "nginx"


def test_faults_act_on_the_tls_endpoints_too(emu: Emulator, bound: tuple[x509.Certificate, Any]) -> None:
    _, context = bound
    emu.inject("token", Fault(action="reset", status=200, body='{"access_token":"abc"}'))
    emu.inject("resource", Fault(action="slowloris", status=200, body="ok", interval=0.01))
    with pytest.raises(httpx.TransportError):
        token_response(emu, context)
    assert call_resource(emu, context, "mtls_pop x").text == "ok"
    assert emu.resource_log[-1]["status"] == 200


# -- altered normal answers ------------------------------------------------------------------------------


def test_response_fields_set_and_remove_keys_of_the_normal_answer(emu: Emulator) -> None:
    emu.inject(
        "getplatformmetadata",
        Fault(response_fields={"clientId": 123, "tenantId": None, "cuId": REMOVE}),
        Fault(response_fields={"attestationEndpoint": Fault.DELETE}, status=202, headers={"X-Test": "1"}),
    )
    first, second = get_metadata(emu), get_metadata(emu)
    assert first.status_code == 200
    assert first.headers["Server"] == "IMDS/150.870.65.1854"
    assert first.json() == {
        "clientId": 123,
        "tenantId": None,
        "attestationEndpoint": "https://sharedeus2.eus2.attest.azure.net",
    }
    assert second.status_code == 202
    assert second.headers["X-Test"] == "1"
    assert "attestationEndpoint" not in second.json()
    assert second.json()["clientId"] == emu.system_identity.client_id


def test_response_fields_on_issuecredential(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    emu.inject(
        "issuecredential",
        Fault(
            response_fields={
                "mtls_authentication_endpoint": "http://127.0.0.1:9",
                "tenant_id": "../x?y",
                "token_endpoint": "https://127.0.0.1:9/t",
            }
        ),
    )
    body = post_csr(emu, csr_for(emu, client_key)).json()
    assert body["mtls_authentication_endpoint"] == "http://127.0.0.1:9"
    assert body["tenant_id"] == "../x?y"
    assert body["token_endpoint"] == "https://127.0.0.1:9/t"
    x509.load_der_x509_certificate(base64.b64decode(body["certificate"]))


def test_response_fields_leave_a_rejected_request_alone(emu: Emulator) -> None:
    emu.inject("getplatformmetadata", Fault(response_fields={"clientId": 123}))
    response = get_metadata(emu, headers={})
    assert response.status_code == 400
    assert "clientId" not in response.json()
    assert emu.stats["getplatformmetadata"] == 1


def test_response_fields_on_the_token(emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]) -> None:
    _, context = bound
    emu.inject(
        "token",
        Fault(response_fields={"expires_in": True}),
        Fault(response_fields={"access_token": REMOVE, "token_type": "Bearer"}),
    )
    first, second = token_response(emu, context).json(), token_response(emu, context).json()
    assert first["expires_in"] is True
    assert "access_token" not in second
    assert second["token_type"] == "Bearer"


# -- certificate variants --------------------------------------------------------------------------------


def _issue_with(emu: Emulator, key: rsa.RSAPrivateKey, fault: Fault) -> dict[str, Any]:
    emu.inject("issuecredential", fault)
    response = post_csr(emu, csr_for(emu, key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _der(body: dict[str, Any]) -> x509.Certificate:
    return x509.load_der_x509_certificate(base64.b64decode(body["certificate"], validate=True))


def _same_key(certificate: x509.Certificate, key: rsa.RSAPrivateKey) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ) == key.public_key().public_bytes(serialization.Encoding.DER, spki)


def test_certificate_expired(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    certificate = _der(_issue_with(emu, client_key, Fault(certificate="expired")))
    assert certificate.not_valid_after_utc < datetime.now(timezone.utc)
    assert _same_key(certificate, client_key)
    assert emu.issued_certificates[-1] == certificate


def test_certificate_not_yet_valid(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    certificate = _der(_issue_with(emu, client_key, Fault(certificate="not_yet_valid")))
    ahead = certificate.not_valid_before_utc - datetime.now(timezone.utc)
    assert timedelta(minutes=55) < ahead <= timedelta(hours=1)
    assert certificate.not_valid_after_utc > certificate.not_valid_before_utc


def test_certificate_for_a_foreign_key(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    certificate = _der(_issue_with(emu, client_key, Fault(certificate="foreign_key")))
    assert not _same_key(certificate, client_key)
    certificate.verify_directly_issued_by(emu.ca_certificate)
    now = datetime.now(timezone.utc)
    assert certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc


@pytest.mark.parametrize(
    ("variant", "value"), [("garbage", "Invalid@#$%Certificate!"), ("empty", ""), ("null", None)]
)
def test_certificate_unusable_values(
    emu: Emulator, client_key: rsa.RSAPrivateKey, variant: str, value: str | None
) -> None:
    before = len(emu.issued_certificates)
    body = _issue_with(emu, client_key, Fault(certificate=variant))
    assert "certificate" in body
    assert body["certificate"] == value
    assert len(emu.issued_certificates) == before


def test_certificate_as_pem(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    text = _issue_with(emu, client_key, Fault(certificate="pem"))["certificate"]
    assert text.startswith("-----BEGIN CERTIFICATE-----\n")
    assert _same_key(x509.load_pem_x509_certificate(text.encode()), client_key)


def _der_length(data: bytes) -> int:
    first = data[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    return 2 + count + int.from_bytes(data[2 : 2 + count], "big")


def test_certificate_two_concatenated(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    data = base64.b64decode(_issue_with(emu, client_key, Fault(certificate="two_certs"))["certificate"])
    split = _der_length(data)
    first = x509.load_der_x509_certificate(data[:split])
    second = x509.load_der_x509_certificate(data[split:])
    assert first != second
    assert _same_key(first, client_key)
    assert _same_key(second, client_key)
    with pytest.raises(ValueError, match=r"(?i)extra|trailing|parse"):
        x509.load_der_x509_certificate(data)


def test_certificate_with_an_ec_key(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    certificate = _der(_issue_with(emu, client_key, Fault(certificate="ec_key")))
    public = certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"
    certificate.verify_directly_issued_by(emu.ca_certificate)


def test_certificate_short_lived(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    certificate = _der(
        _issue_with(emu, client_key, Fault(certificate="short_lived", certificate_seconds=120))
    )
    remaining = certificate.not_valid_after_utc - datetime.now(timezone.utc)
    assert timedelta(seconds=100) < remaining <= timedelta(seconds=121)
    assert _same_key(certificate, client_key)
    default = _der(_issue_with(emu, client_key, Fault(certificate="short_lived")))
    assert (
        timedelta(seconds=580)
        < default.not_valid_after_utc - datetime.now(timezone.utc)
        <= timedelta(seconds=601)
    )


def test_certificate_variant_still_validates_the_request(emu: Emulator, other_key: rsa.RSAPrivateKey) -> None:
    emu.inject("issuecredential", Fault(certificate="expired"))
    response = post_csr(emu, csr_for(emu, other_key, corrupt_signature=True))
    assert response.status_code == 400
    assert "signature" in response.json()["error_description"]


# -- token variants --------------------------------------------------------------------------------------


def test_token_wrong_cnf_is_refused_by_the_resource(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]
) -> None:
    certificate, context = bound
    emu.inject("token", Fault(token="wrong_cnf"))
    token = token_response(emu, context).json()["access_token"]
    _, claims, _, _ = jwt_parts(token)
    assert claims["cnf"]["x5t#S256"] != x5t_s256(certificate)
    assert claims["cnf"]["x5t#S256"] == x5t_s256(emu.ca_certificate)
    refused = call_resource(emu, context, f"mtls_pop {token}")
    assert refused.status_code == 401
    assert refused.json()["failed_check"] == "cnf"


def test_token_without_cnf(emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]) -> None:
    _, context = bound
    emu.inject("token", Fault(token="no_cnf"))
    body = token_response(emu, context).json()
    assert body["token_type"] == "mtls_pop"
    assert "cnf" not in jwt_parts(body["access_token"])[1]


def test_token_type_bearer_and_missing(emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]) -> None:
    certificate, context = bound
    emu.inject("token", Fault(token="bearer"), Fault(token="missing_token_type"))
    bearer, missing = token_response(emu, context).json(), token_response(emu, context).json()
    assert bearer["token_type"] == "Bearer"
    assert jwt_parts(bearer["access_token"])[1]["cnf"]["x5t#S256"] == x5t_s256(certificate)
    assert "token_type" not in missing
    assert "access_token" in missing


def test_token_truncated_in_the_middle_of_the_access_token(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]
) -> None:
    _, context = bound
    emu.inject("token", Fault(token="truncated"))
    response = token_response(emu, context)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)
    text = response.text
    marker = '"access_token":"'
    assert marker in text
    partial = text.split(marker, 1)[1]
    assert partial.startswith("eyJ")
    assert "." in partial
    assert partial in emu.sentinels()
    assert any(
        secret.startswith(partial) and len(secret) > 2 * len(partial) - 2 for secret in emu.sentinels()
    )


def test_handshake_reject_fault_on_token_and_resource(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]
) -> None:
    _, context = bound
    emu.inject("token", Fault(action="handshake_reject"))
    emu.inject("resource", Fault(action="handshake_reject"))
    with pytest.raises(httpx.TransportError, match="unknown ca"):
        token_response(emu, context)
    token = token_response(emu, context).json()["access_token"]
    with pytest.raises(httpx.TransportError, match="unknown ca"):
        call_resource(emu, context, f"mtls_pop {token}")
    assert call_resource(emu, context, f"mtls_pop {token}").status_code == 200
    stats = emu.stats
    assert (stats["token_handshake_rejections"], stats["resource_handshake_rejections"]) == (1, 1)
    assert (stats["token"], stats["resource"]) == (1, 1)


def test_handshake_reject_fault_over_an_open_connection_drops_it(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]
) -> None:
    _, context = bound
    form = {"client_id": emu.system_identity.client_id, "scope": "https://vault.azure.net/.default"}
    url = f"{emu.sts_url}/{emu.tenant_id}/oauth2/v2.0/token"
    with httpx.Client(verify=context) as client:
        assert client.post(url, data={**form, "grant_type": "client_credentials"}).status_code == 200
        emu.inject("token", Fault(action="handshake_reject"))
        emu.inject("token", Fault(action="handshake_reject"))
        with pytest.raises(httpx.TransportError):
            client.post(url, data={**form, "grant_type": "client_credentials"})
    assert emu.stats["token"] == 2


# -- validation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        {"action": "explode"},
        {"certificate": "rotten"},
        {"token": "opaque"},
        {"interval": 0},
        {"body_size": -1},
        {"status": 42},
        {"delay": -1.0},
        {"certificate_seconds": 0},
    ],
)
def test_fault_rejects_unknown_values(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must|unknown"):
        Fault(**arguments)


@pytest.mark.parametrize(
    ("endpoint", "fault"),
    [
        ("getplatformmetadata", Fault(certificate="expired")),
        ("token", Fault(certificate="expired")),
        ("issuecredential", Fault(token="bearer")),
        ("getplatformmetadata", Fault(action="handshake_reject")),
        ("v1_token", Fault(action="handshake_reject")),
    ],
)
def test_inject_rejects_faults_that_do_not_apply(emu: Emulator, endpoint: str, fault: Fault) -> None:
    with pytest.raises(ValueError, match=r"appl(y|ies) to"):
        emu.inject(endpoint, Fault(status=503), fault)
    assert get_metadata(emu).status_code == 200


# -- stopping --------------------------------------------------------------------------------------------


def test_stop_is_quick_with_open_fault_connections_and_leaves_no_pending_task(
    client_key: rsa.RSAPrivateKey, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncio")
    errors: list[BaseException] = []
    emu = Emulator()
    emu.start()
    try:
        context = tls_context(emu, tmp_path, issue_certificate(emu, client_key), client_key)
        emu.inject(
            "getplatformmetadata",
            Fault(action="hang"),
            Fault(action="endless"),
            Fault(action="slowloris", status=200, body="z" * 100, interval=1.0),
            Fault(status=200, delay=30.0),
        )
        emu.inject("token", Fault(action="hang"))

        def imds() -> None:
            try:
                with (
                    httpx.Client(timeout=10) as client,
                    client.stream("GET", metadata_url(emu), params=V2, headers=METADATA) as response,
                ):
                    for _ in response.iter_raw():
                        pass
            except Exception as exc:
                errors.append(exc)

        def sts() -> None:
            try:
                token_response(emu, context)
            except Exception as exc:
                errors.append(exc)

        clients = [threading.Thread(target=imds) for _ in range(4)] + [threading.Thread(target=sts)]
        for thread in clients:
            thread.start()
        assert wait_until(lambda: emu.active_requests == 5, 5.0)
    finally:
        started = time.perf_counter()
        emu.stop()
        stopped = time.perf_counter() - started
    for thread in clients:
        thread.join(5)
    gc.collect()
    assert stopped < 1.0
    assert len(errors) == 5, errors
    assert all(isinstance(error, httpx.TransportError) for error in errors), errors
    assert not [r for r in caplog.records if "destroyed but it is pending" in r.getMessage()]


def test_stop_cancels_what_runs_in_the_emulator_loop() -> None:
    seen: list[asyncio.AbstractEventLoop] = []
    emu = Emulator()
    emu.start()
    emu.inject("getplatformmetadata", Fault(action="hang"))
    with pytest.raises(httpx.ReadTimeout):
        http("GET", metadata_url(emu), params=V2, headers=METADATA, timeout=0.1)
    running = emu._running
    assert running is not None
    seen.append(running.loop)
    emu.stop()
    assert seen[0].is_closed()
    assert not running.thread.is_alive()
