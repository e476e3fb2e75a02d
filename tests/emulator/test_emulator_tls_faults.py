"""TLS faults of the STS and the resource: server certificate modes and client-certificate rejection."""

from __future__ import annotations

import socket
import ssl
import warnings
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from emulator_kit import call_resource, issue_certificate, request_token, tls_context

from msiv2_async.emulator import TLS_MODES, Emulator


@pytest.fixture(scope="module")
def bound(
    running_emulator: Emulator, client_key: rsa.RSAPrivateKey, tmp_path_factory: pytest.TempPathFactory
) -> tuple[x509.Certificate, ssl.SSLContext]:
    certificate = issue_certificate(running_emulator, client_key)
    directory = tmp_path_factory.mktemp("bound")
    return certificate, tls_context(running_emulator, directory, certificate, client_key)


def _port(url: str) -> int:
    return int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


def handshake(context: ssl.SSLContext, port: int, host: str = "127.0.0.1") -> str:
    """Connect, handshake, send one request and read the status line; return the TLS version."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert tls.recv(12).startswith(b"HTTP/1.1 ")
        return str(tls.version())


def verifying(emu: Emulator) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=emu.ca_pem.decode())


@pytest.mark.parametrize("listener", ["sts", "resource"])
def test_normal_mode_handshakes(emu: Emulator, listener: str) -> None:
    port = _port(emu.sts_url if listener == "sts" else emu.resource_url)
    assert emu.sts_tls == emu.resource_tls == "normal"
    assert handshake(verifying(emu), port) in ("TLSv1.2", "TLSv1.3")
    assert handshake(verifying(emu), port, "localhost") in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("listener", ["sts", "resource"])
def test_unknown_ca_fails_verification(emu: Emulator, listener: str) -> None:
    port = _port(emu.sts_url if listener == "sts" else emu.resource_url)
    setattr(emu, f"{listener}_tls", "unknown_ca")
    with pytest.raises(ssl.SSLCertVerificationError) as failure:
        handshake(verifying(emu), port)
    assert failure.value.verify_code == 20  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        unverified.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    issuer = x509.load_der_x509_certificate(der).issuer
    assert issuer != emu.ca_certificate.subject
    setattr(emu, f"{listener}_tls", "normal")
    assert handshake(verifying(emu), port)


@pytest.mark.parametrize("listener", ["sts", "resource"])
def test_wrong_hostname_fails_hostname_checks(emu: Emulator, listener: str) -> None:
    port = _port(emu.sts_url if listener == "sts" else emu.resource_url)
    setattr(emu, f"{listener}_tls", "wrong_hostname")
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        handshake(verifying(emu), port)
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(verifying(emu), port, "localhost")
    lenient = verifying(emu)
    lenient.check_hostname = False
    assert handshake(lenient, port)


def test_tls11_only_fails_a_tls12_client_and_really_speaks_tls11(emu: Emulator) -> None:
    port = _port(emu.sts_url)
    emu.sts_tls = "tls11_only"
    with pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|NO_PROTOCOLS"):
        handshake(verifying(emu), port)
    legacy = verifying(emu)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        legacy.minimum_version = ssl.TLSVersion.TLSv1
    legacy.set_ciphers("DEFAULT:@SECLEVEL=0")
    assert handshake(legacy, port) == "TLSv1.1"


def test_httpx_with_the_emulator_ca_fails_closed_in_every_bad_mode(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]
) -> None:
    _, context = bound
    for mode in TLS_MODES:
        emu.sts_tls = mode
        if mode == "normal":
            assert request_token(emu, context, client_id=emu.system_identity.client_id).status_code == 200
            continue
        with pytest.raises(httpx.ConnectError):
            request_token(emu, context, client_id=emu.system_identity.client_id)
    assert emu.stats["token"] == 1


def test_tls_mode_rejects_unknown_values(emu: Emulator) -> None:
    with pytest.raises(ValueError, match="unknown TLS mode"):
        emu.sts_tls = "ssl3"
    with pytest.raises(ValueError, match="unknown TLS mode"):
        emu.resource_tls = ""
    assert emu.sts_tls == emu.resource_tls == "normal"


def test_tls_mode_can_be_set_before_start() -> None:
    emu = Emulator()
    emu.sts_tls = "unknown_ca"
    with emu:
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(verifying(emu), _port(emu.sts_url))
        assert handshake(verifying(emu), _port(emu.resource_url))


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_reject_client_certificates_fails_exactly_n_handshakes(
    emu: Emulator,
    bound: tuple[x509.Certificate, ssl.SSLContext],
    client_key: rsa.RSAPrivateKey,
    tmp_path: Path,
    version: ssl.TLSVersion,
) -> None:
    name = "TLSv1.2" if version is ssl.TLSVersion.TLSv1_2 else "TLSv1.3"
    with_certificate = tls_context(emu, tmp_path, bound[0], client_key)
    without_certificate = verifying(emu)
    for context in (with_certificate, without_certificate):
        context.minimum_version = context.maximum_version = version
    port = _port(emu.sts_url)
    emu.reject_client_certificates(1)
    with pytest.raises(ssl.SSLError, match=r"(?i)unknown.ca"):
        handshake(with_certificate, port)
    assert handshake(with_certificate, port) == name
    assert emu.stats["token_handshake_rejections"] == 1
    emu.reject_client_certificates(2)
    for _ in range(2):
        with pytest.raises(ssl.SSLError, match=r"(?i)alert"):
            handshake(without_certificate, port)
    assert handshake(without_certificate, port) == name
    assert emu.stats["token_handshake_rejections"] == 3
    assert emu.stats["token"] == 0


def test_reject_client_certificates_with_httpx_then_success(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]
) -> None:
    _, context = bound
    emu.reject_client_certificates(1)
    with pytest.raises(httpx.TransportError, match=r"(?i)unknown.ca"):
        request_token(emu, context, client_id=emu.system_identity.client_id)
    response = request_token(emu, context, client_id=emu.system_identity.client_id)
    assert response.status_code == 200
    assert call_resource(emu, context, f"mtls_pop {response.json()['access_token']}").status_code == 200
    stats = emu.stats
    assert (stats["token_handshake_rejections"], stats["token"], stats["resource_handshake_rejections"]) == (
        1,
        1,
        0,
    )


def test_reject_client_certificates_zero_cancels_and_negative_is_refused(emu: Emulator) -> None:
    emu.reject_client_certificates(5)
    emu.reject_client_certificates(0)
    assert handshake(verifying(emu), _port(emu.sts_url))
    with pytest.raises(ValueError, match="negative"):
        emu.reject_client_certificates(-1)
    emu.reject_client_certificates(3)
    emu.reset()
    assert handshake(verifying(emu), _port(emu.sts_url))
    assert emu.stats["token_handshake_rejections"] == 0
