"""WinHTTP bindings against the stand-in and a local mTLS server: the exchange, verification, errors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from msiv2_async_keyguard._transport import bundle_checker
from native_support import Controls, EchoServer, Pki

from msiv2_async._native import ncrypt, winhttp
from msiv2_async._native.crypt32 import CertContext
from msiv2_async._native.errors import WinHttpError

TIMEOUTS = winhttp.Timeouts(resolve=5000, connect=5000, send=5000, receive=5000)


@pytest.fixture
def server(pki: Pki) -> Iterator[EchoServer]:
    with EchoServer(pki) as echo:
        yield echo


@pytest.fixture
def client_certificate(native: Controls, pki: Pki) -> Iterator[CertContext]:
    """A KeyGuard key in the NCrypt stand-in and a CA-issued certificate bound to it by name."""
    with ncrypt.Provider() as provider:
        key = provider.create_key("tls-key", flags=ncrypt.USE_VIRTUAL_ISOLATION_FLAG)
        key.set_dword(ncrypt.EXPORT_POLICY, 0, ncrypt.PERSIST_FLAG)
        key.finalize()
        with key:
            modulus, exponent = key.public_numbers()
    certificate = pki.issue(rsa.RSAPublicNumbers(exponent, modulus).public_key(), "keyguard-client")
    with CertContext.from_der(certificate.public_bytes(serialization.Encoding.DER)) as context:
        context.bind_key_by_name("tls-key")
        yield context


def exchange(
    url: str,
    certificate: CertContext | None,
    pki: Pki | None = None,
    *,
    method: str = "GET",
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
) -> winhttp.Response:
    check = bundle_checker(str(pki.ca_path), "127.0.0.1") if pki else None
    with winhttp.Session() as session:
        return winhttp.Exchange(
            session,
            method,
            url,
            headers or [("Accept", "application/json")],
            body,
            client_certificate=certificate,
            timeouts=TIMEOUTS,
            server_check=check,
        ).run()


def test_post_over_mtls_presents_the_keyguard_certificate(
    native: Controls, server: EchoServer, pki: Pki, client_certificate: CertContext
) -> None:
    response = exchange(
        server.url + "/token?x=1",
        client_certificate,
        pki,
        method="POST",
        body=b"grant_type=client_credentials",
        headers=[("Content-Type", "application/x-www-form-urlencoded"), ("User-Agent", "ignored")],
    )
    assert (response.status, response.reason, response.http_version) == (201, "Fine", "HTTP/1.1")
    seen = json.loads(response.body)
    assert seen["client_cn"] == "keyguard-client"
    assert seen["path"] == "/token?x=1"
    assert seen["body"] == "grant_type=client_credentials"
    assert [v for k, v in seen["headers"] if k.lower() == "user-agent"] == ["msiv2_async"]
    assert ("Content-Type", "application/json") in response.headers
    assert native.ncrypt.StandinNCryptBorrowCount() == 1  # the handshake used the CNG key


def test_redirects_cookies_and_authentication_are_disabled(
    native: Controls, server: EchoServer, pki: Pki, client_certificate: CertContext
) -> None:
    response = exchange(server.url + "/redirect", client_certificate, pki)
    assert response.status == 302
    assert native.winhttp.StandinWinHttpLastDisabledFeatures() == 0x7


def test_chunked_body_is_decoded(
    native: Controls, server: EchoServer, pki: Pki, client_certificate: CertContext
) -> None:
    response = exchange(server.url + "/chunked", client_certificate, pki)
    assert json.loads(response.body)["path"] == "/chunked"


def test_unknown_server_ca_is_secure_failure(
    native: Controls, server: EchoServer, client_certificate: CertContext
) -> None:
    with pytest.raises(WinHttpError) as caught:
        exchange(server.url, client_certificate)
    assert caught.value.code == winhttp.ERROR_WINHTTP_SECURE_FAILURE
    assert native.winhttp.StandinWinHttpRequestsSent() == 0


def test_server_check_rejection_happens_before_the_request_is_sent(
    native: Controls, server: EchoServer, client_certificate: CertContext, tmp_path: object
) -> None:
    other = Pki(__import__("pathlib").Path(str(tmp_path)))
    with pytest.raises(Exception, match="does not chain to the CA bundle"):
        exchange(server.url, client_certificate, other)
    assert native.winhttp.StandinWinHttpRequestsSent() == 0


def test_missing_client_certificate_is_cert_needed(native: Controls, server: EchoServer, pki: Pki) -> None:
    with pytest.raises(WinHttpError) as caught:
        exchange(server.url, None, pki)
    assert caught.value.code == 12044


def test_certificate_without_a_bound_key_is_no_private_key(
    native: Controls, server: EchoServer, pki: Pki
) -> None:
    der = pki.server_cert.public_bytes(serialization.Encoding.DER)
    with CertContext.from_der(der) as unbound, pytest.raises(WinHttpError) as caught:
        exchange(server.url, unbound, pki)
    assert caught.value.code == 12185


def test_bound_key_that_was_deleted_is_no_access(
    native: Controls, server: EchoServer, pki: Pki, client_certificate: CertContext
) -> None:
    with ncrypt.Provider() as provider:
        provider.open_key("tls-key").delete()
    with pytest.raises(WinHttpError) as caught:
        exchange(server.url, client_certificate, pki)
    assert caught.value.code == 12186


def test_connection_refused_is_cannot_connect(native: Controls, client_certificate: CertContext) -> None:
    with pytest.raises(WinHttpError) as caught:
        exchange("https://127.0.0.1:9/", client_certificate)
    assert caught.value.code == 12029


def test_only_https(native: Controls) -> None:
    with pytest.raises(WinHttpError, match="UNRECOGNIZED_SCHEME"):
        exchange("http://127.0.0.1:9/", None)


def test_cancel_from_another_thread_unblocks_the_exchange(
    native: Controls, server: EchoServer, pki: Pki, client_certificate: CertContext
) -> None:
    with winhttp.Session() as session:
        slow = winhttp.Exchange(
            session,
            "GET",
            server.url + "/slow",
            [],
            b"",
            client_certificate=client_certificate,
            timeouts=TIMEOUTS,
            server_check=bundle_checker(str(pki.ca_path), "127.0.0.1"),
        )
        threading.Timer(0.3, slow.cancel).start()
        started = time.monotonic()
        with pytest.raises(WinHttpError) as caught:
            slow.run()
        assert time.monotonic() - started < 2.5
        assert caught.value.code in (winhttp.ERROR_WINHTTP_OPERATION_CANCELLED, 6)


def test_receive_timeout(
    native: Controls, server: EchoServer, pki: Pki, client_certificate: CertContext
) -> None:
    with winhttp.Session() as session, pytest.raises(WinHttpError) as caught:
        winhttp.Exchange(
            session,
            "GET",
            server.url + "/slow",
            [],
            b"",
            client_certificate=client_certificate,
            timeouts=winhttp.Timeouts(connect=2000, send=2000, receive=300),
            server_check=bundle_checker(str(pki.ca_path), "127.0.0.1"),
        ).run()
    assert caught.value.code == winhttp.ERROR_WINHTTP_TIMEOUT


def test_raw_header_parser() -> None:
    version, reason, headers = winhttp.parse_raw_headers("HTTP/1.1 404 Not Found\r\nA: 1\r\nB:  two \r\n\r\n")
    assert (version, reason, headers) == ("HTTP/1.1", "Not Found", [("A", "1"), ("B", "two")])
