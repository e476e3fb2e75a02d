"""An httpx ``AsyncBaseTransport`` over WinHTTP/SChannel, each exchange run in a worker thread.

The client certificate is a Crypt32 context bound by name to the CNG key, so SChannel signs the TLS
handshake with the non-exportable key. Servers are verified against the Windows trust store; a
server that fails that check (``ERROR_WINHTTP_SECURE_FAILURE``, raised in the handshake before
anything is sent) is retried once against the extra CA bundle of :class:`TlsSettings`, checked in
the ``SENDING_REQUEST`` notification (see :mod:`msiv2_async._native.winhttp`); hosts that passed that
way go straight to it afterwards. Verification cannot be switched off.

WinHTTP errors become httpx exceptions whose cause tells the core what happened: an
``ssl.SSLCertVerificationError`` when the server's certificate was refused, and
:class:`ClientCertificateRejected` (an ``ssl.SSLError`` with an alert ``reason``) when the binding
is unusable (12030/12044/12185/12186: MSAL.NET evicts the certificate and re-mints once).
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timezone

import anyio
import anyio.to_thread
import httpx
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from msiv2_async._native import winhttp
from msiv2_async._native.crypt32 import CertContext
from msiv2_async._native.errors import WinHttpError
from msiv2_async.backends import TlsSettings

USER_AGENT = "msiv2_async-keyguard/0.1"
MAX_CONCURRENT_EXCHANGES = 8
_CLIENT_ALERTS = {
    12044: "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    12030: "SSLV3_ALERT_BAD_CERTIFICATE",
    12185: "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    12186: "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
}


class ClientCertificateRejected(ssl.SSLError):
    """The TLS handshake failed because of our client certificate or its key (a WinHTTP error code).

    ``client_certificate_rejected`` is the attribute the core looks for to re-mint once.
    """

    client_certificate_rejected = True

    def __init__(self, error: WinHttpError) -> None:
        super().__init__(str(error))
        self.reason = _CLIENT_ALERTS.get(error.code, "SSLV3_ALERT_BAD_CERTIFICATE")
        self.winhttp_error = error.code


def bundle_checker(ca_bundle: str, host: str) -> Callable[[bytes], None]:
    """A check of a server's leaf certificate (DER) against ``ca_bundle`` for ``host`` (name or IP)."""
    with open(ca_bundle, "rb") as handle:
        certificates = x509.load_pem_x509_certificates(handle.read())
    store = Store(certificates)
    subject: x509.GeneralName
    try:
        subject = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        subject = x509.DNSName(host)

    def check(der: bytes) -> None:
        leaf = x509.load_der_x509_certificate(der)
        verifier = (
            PolicyBuilder().store(store).time(datetime.now(timezone.utc)).build_server_verifier(subject)
        )
        try:
            verifier.verify(leaf, certificates)
        except VerificationError as exc:
            raise ssl.SSLCertVerificationError(
                f"the server certificate does not chain to the CA bundle: {exc}"
            ) from None

    return check


def _httpx_error(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    message = str(exc)
    if isinstance(exc, ssl.SSLError):
        return httpx.ConnectError(message, request=request)
    if not isinstance(exc, WinHttpError):
        return httpx.ReadError(message, request=request)
    if exc.code == winhttp.ERROR_WINHTTP_TIMEOUT:
        return httpx.ReadTimeout(message, request=request)
    if exc.code in winhttp.CLIENT_CERTIFICATE_ERRORS or exc.code in winhttp.SERVER_CERTIFICATE_ERRORS:
        return httpx.ConnectError(message, request=request)
    if exc.code in (12007, 12029):
        return httpx.ConnectError(message, request=request)
    return httpx.ReadError(message, request=request)


def _cause(exc: BaseException) -> BaseException:
    if isinstance(exc, WinHttpError):
        if exc.code in winhttp.CLIENT_CERTIFICATE_ERRORS:
            return ClientCertificateRejected(exc)
        if exc.code in winhttp.SERVER_CERTIFICATE_ERRORS:
            return ssl.SSLCertVerificationError(str(exc))
    return exc


class _WinHttpClient:
    """What both transports share: the session, the bound certificate and the CA-bundle fallback."""

    def __init__(self, certificate: CertContext | None, tls: TlsSettings, environ: Mapping[str, str]) -> None:
        self.certificate = certificate
        self.tls = tls
        self.environ = environ
        self._session: winhttp.Session | None = None
        self._lock = threading.Lock()
        self._bundle_hosts: set[tuple[str, int]] = set()
        self._closed = False

    def session(self) -> winhttp.Session:
        with self._lock:
            if self._closed:
                raise WinHttpError("WinHttpOpen", 6, "the transport is closed")
            if self._session is None:
                self._session = winhttp.Session(USER_AGENT, environ=self.environ)
            return self._session

    def exchange(
        self, request: httpx.Request, body: bytes, server_check: Callable[[bytes], None] | None
    ) -> winhttp.Exchange:
        timeout = request.extensions.get("timeout", {})
        return winhttp.Exchange(
            self.session(),
            request.method,
            str(request.url),
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
            body,
            client_certificate=self.certificate,
            timeouts=winhttp.Timeouts.from_seconds(
                timeout.get("connect"), timeout.get("read"), timeout.get("write")
            ),
            server_check=server_check,
        )

    def first_check(self, request: httpx.Request) -> Callable[[bytes], None] | None:
        """The CA-bundle check for hosts known to need it; ``None``: the Windows trust store first."""
        host, port = request.url.host, request.url.port or 443
        bundle = self.tls.ca_bundle
        return bundle_checker(bundle, host) if bundle and (host, port) in self._bundle_hosts else None

    def fallback_check(self, request: httpx.Request, error: WinHttpError) -> Callable[[bytes], None]:
        """After a server-certificate failure: the CA-bundle check (re-raises when there is none)."""
        if not (self.tls.ca_bundle and error.code in winhttp.SERVER_CERTIFICATE_ERRORS):
            raise error
        self._bundle_hosts.add((request.url.host, request.url.port or 443))
        return bundle_checker(self.tls.ca_bundle, request.url.host)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            session, self._session = self._session, None
        if session is not None:
            session.close()
        if self.certificate is not None:
            self.certificate.close()


def _response(request: httpx.Request, response: winhttp.Response) -> httpx.Response:
    headers = [(name, value) for name, value in response.headers if name.lower() != "transfer-encoding"]
    return httpx.Response(
        response.status,
        headers=headers,
        stream=httpx.ByteStream(response.body),
        extensions={
            "http_version": response.http_version.encode(),
            "reason_phrase": response.reason.encode(),
        },
        request=request,
    )


class WinHttpTransport(httpx.AsyncBaseTransport):
    """HTTPS/1.1 through WinHTTP, presenting ``certificate`` (a bound context the transport now owns)."""

    def __init__(
        self,
        certificate: CertContext | None,
        tls: TlsSettings,
        *,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self._client = _WinHttpClient(certificate, tls, environ)
        self._limiter = anyio.CapacityLimiter(MAX_CONCURRENT_EXCHANGES)

    async def _run(
        self, request: httpx.Request, body: bytes, check: Callable[[bytes], None] | None
    ) -> winhttp.Response:
        exchange = await anyio.to_thread.run_sync(
            self._client.exchange, request, body, check, limiter=self._limiter
        )
        try:
            return await anyio.to_thread.run_sync(exchange.run, abandon_on_cancel=True, limiter=self._limiter)
        except anyio.get_cancelled_exc_class():
            exchange.cancel()
            raise

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through WinHTTP in a worker thread and return the complete response."""
        body = await request.aread()
        check = self._client.first_check(request)
        try:
            try:
                response = await self._run(request, body, check)
            except WinHttpError as exc:
                if check is not None:
                    raise
                response = await self._run(request, body, self._client.fallback_check(request, exc))
        except (WinHttpError, ssl.SSLError) as exc:
            raise _httpx_error(exc, request) from _cause(exc)
        return _response(request, response)

    async def aclose(self) -> None:
        """Close the WinHTTP session and release the certificate context."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._client.close)


class WinHttpSyncTransport(httpx.BaseTransport):
    """The blocking twin of :class:`WinHttpTransport`, for sync httpx clients."""

    def __init__(
        self,
        certificate: CertContext | None,
        tls: TlsSettings,
        *,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self._client = _WinHttpClient(certificate, tls, environ)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through WinHTTP and return the complete response."""
        body = request.read()
        check = self._client.first_check(request)
        try:
            try:
                response = self._client.exchange(request, body, check).run()
            except WinHttpError as exc:
                if check is not None:
                    raise
                response = self._client.exchange(
                    request, body, self._client.fallback_check(request, exc)
                ).run()
        except (WinHttpError, ssl.SSLError) as exc:
            raise _httpx_error(exc, request) from _cause(exc)
        return _response(request, response)

    def close(self) -> None:
        """Close the WinHTTP session and release the certificate context."""
        self._client.close()
