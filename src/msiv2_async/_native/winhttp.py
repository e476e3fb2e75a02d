"""WinHTTP (``winhttp.dll``): one synchronous HTTPS exchange over SChannel with a client certificate.

Call order of NATIVE.md §3.3, run in a worker thread. Redirects, cookies and automatic
authentication are switched off (``WINHTTP_OPTION_DISABLE_FEATURE``): the caller sees every answer
as it came. The server is verified against the Windows trust store; when the caller trusts an extra
CA (``server_check``), ``SECURITY_FLAG_IGNORE_UNKNOWN_CA`` is set and the server certificate is
checked in the ``WINHTTP_CALLBACK_STATUS_SENDING_REQUEST`` notification, i.e. after the handshake
and before a single byte of the request is sent; a rejected certificate closes the request there.
:meth:`Exchange.cancel` closes the request handle from another thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from . import _loader
from ._cdefs import int_constants
from ._handle import OwnedHandle
from .crypt32 import CertContext
from .crypt32 import library as crypt32_library
from .errors import WinHttpError

ffi = _loader.ffi
_K = int_constants()

ERROR_INSUFFICIENT_BUFFER = _K["ERROR_INSUFFICIENT_BUFFER"]
ERROR_WINHTTP_OPERATION_CANCELLED = _K["ERROR_WINHTTP_OPERATION_CANCELLED"]
ERROR_WINHTTP_INVALID_URL = _K["ERROR_WINHTTP_INVALID_URL"]
ERROR_WINHTTP_UNRECOGNIZED_SCHEME = _K["ERROR_WINHTTP_UNRECOGNIZED_SCHEME"]
ERROR_WINHTTP_SECURE_FAILURE = _K["ERROR_WINHTTP_SECURE_FAILURE"]
ERROR_WINHTTP_TIMEOUT = _K["ERROR_WINHTTP_TIMEOUT"]
CLIENT_CERTIFICATE_ERRORS = frozenset(
    {
        _K["ERROR_WINHTTP_CONNECTION_ERROR"],
        _K["ERROR_WINHTTP_CLIENT_AUTH_CERT_NEEDED"],
        _K["ERROR_WINHTTP_CLIENT_CERT_NO_PRIVATE_KEY"],
        _K["ERROR_WINHTTP_CLIENT_CERT_NO_ACCESS_PRIVATE_KEY"],
    }
)
"""Errors that MSAL.NET treats as "the binding is unusable": evict the certificate and re-mint once."""
SERVER_CERTIFICATE_ERRORS = frozenset(
    {
        ERROR_WINHTTP_SECURE_FAILURE,
        _K["ERROR_WINHTTP_SECURE_INVALID_CA"],
        _K["ERROR_WINHTTP_SECURE_CERT_CN_INVALID"],
        _K["ERROR_WINHTTP_SECURE_CERT_DATE_INVALID"],
        _K["ERROR_WINHTTP_SECURE_INVALID_CERT"],
    }
)
_DISABLED_FEATURES = (
    _K["WINHTTP_DISABLE_COOKIES"] | _K["WINHTTP_DISABLE_REDIRECTS"] | _K["WINHTTP_DISABLE_AUTHENTICATION"]
)
_SECURE_PROTOCOLS = _K["WINHTTP_FLAG_SECURE_PROTOCOL_TLS1_2"] | _K["WINHTTP_FLAG_SECURE_PROTOCOL_TLS1_3"]
# WinHTTP writes these itself (User-Agent from WinHttpOpen).
_SKIPPED_REQUEST_HEADERS = frozenset(
    {"host", "content-length", "connection", "transfer-encoding", "user-agent"}
)
READ_CHUNK = 64 * 1024


def library(environ: Mapping[str, str] = os.environ) -> Any:
    """``winhttp.dll`` (or its stand-in)."""
    return _loader.system_library("winhttp", environ)


def _fail(function: str) -> WinHttpError:
    return WinHttpError(function, _loader.last_error())


@dataclass(frozen=True)
class Timeouts:
    """WinHTTP timeouts in milliseconds (0 = no limit)."""

    resolve: int = 0
    connect: int = 60_000
    send: int = 30_000
    receive: int = 30_000

    @classmethod
    def from_seconds(cls, connect: float | None, read: float | None, write: float | None) -> Timeouts:
        """From httpx-style seconds (``None`` = no limit)."""

        def ms(value: float | None) -> int:
            return 0 if value is None else max(1, int(value * 1000))

        return cls(resolve=ms(connect), connect=ms(connect), send=ms(write), receive=ms(read))


@dataclass(frozen=True)
class Response:
    """A complete response as WinHTTP delivered it."""

    status: int
    reason: str
    http_version: str
    headers: list[tuple[str, str]]
    body: bytes = field(repr=False)


class Session(OwnedHandle):
    """A WinHTTP session (``WinHttpOpen``), TLS 1.2 and 1.3 only; thread-safe for concurrent requests."""

    def __init__(self, agent: str = "msiv2_async", *, environ: Mapping[str, str] = os.environ) -> None:
        self.lib = library(environ)
        self.crypt32 = crypt32_library(environ)
        handle = self.lib.WinHttpOpen(agent, _K["WINHTTP_ACCESS_TYPE_DEFAULT_PROXY"], ffi.NULL, ffi.NULL, 0)
        if handle == ffi.NULL:
            raise _fail("WinHttpOpen")
        super().__init__(handle)
        protocols = ffi.new("DWORD *", _SECURE_PROTOCOLS)
        if not self.lib.WinHttpSetOption(handle, _K["WINHTTP_OPTION_SECURE_PROTOCOLS"], protocols, 4):
            protocols[0] = _K["WINHTTP_FLAG_SECURE_PROTOCOL_TLS1_2"]  # Windows without TLS 1.3 support
            if not self.lib.WinHttpSetOption(handle, _K["WINHTTP_OPTION_SECURE_PROTOCOLS"], protocols, 4):
                error = _fail("WinHttpSetOption(SECURE_PROTOCOLS)")
                self.close()
                raise error

    def _release(self, value: Any) -> None:
        self.lib.WinHttpCloseHandle(value)

    @property
    def handle(self) -> Any:
        """The session ``HINTERNET``."""
        if self._value is None:
            raise WinHttpError("WinHttpConnect", 6, "the session is closed")
        return self._value


class _Internet(OwnedHandle):
    """A connect or request handle."""

    def __init__(self, lib: Any, handle: Any) -> None:
        super().__init__(handle)
        self.lib = lib

    def _release(self, value: Any) -> None:
        self.lib.WinHttpCloseHandle(value)


class Exchange:
    """One request on a :class:`Session`: :meth:`run` blocks, :meth:`cancel` works from any thread."""

    def __init__(
        self,
        session: Session,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        *,
        client_certificate: CertContext | None,
        timeouts: Timeouts,
        server_check: Callable[[bytes], None] | None = None,
        max_body: int = 16 * 1024 * 1024,
    ) -> None:
        self.session = session
        self.lib = session.lib
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.client_certificate = client_certificate
        self.timeouts = timeouts
        self.server_check = server_check
        self.max_body = max_body
        self.rejection: BaseException | None = None
        self._request: _Internet | None = None
        self._cancelled = threading.Event()
        self._callback: Any = None

    def cancel(self) -> None:
        """Abort: closes the request handle, so the blocked WinHTTP call returns with an error."""
        self._cancelled.set()
        request = self._request
        if request is not None:
            request.close()

    def run(self) -> Response:
        """Connect, send, receive; every handle is closed before this returns or raises."""
        parts = urlsplit(self.url)
        if parts.scheme != "https":
            raise WinHttpError(
                "WinHttpOpenRequest", ERROR_WINHTTP_UNRECOGNIZED_SCHEME, "only https is supported"
            )
        if not parts.hostname:
            raise WinHttpError("WinHttpConnect", ERROR_WINHTTP_INVALID_URL, "the URL has no host")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connect = self.lib.WinHttpConnect(self.session.handle, parts.hostname, parts.port or 443, 0)
        if connect == ffi.NULL:
            raise _fail("WinHttpConnect")
        with _Internet(self.lib, connect):
            flags = _K["WINHTTP_FLAG_SECURE"]
            handle = self.lib.WinHttpOpenRequest(
                connect, self.method, path, ffi.NULL, ffi.NULL, ffi.NULL, flags
            )
            if handle == ffi.NULL:
                raise _fail("WinHttpOpenRequest")
            self._request = _Internet(self.lib, handle)
            try:
                if self._cancelled.is_set():
                    raise WinHttpError("WinHttpSendRequest", ERROR_WINHTTP_OPERATION_CANCELLED)
                self._configure(handle)
                self._send(handle)
                return self._receive(handle)
            except WinHttpError as exc:
                if self.rejection is not None:
                    raise self.rejection from exc
                raise
            finally:
                self._request.close()
                self._callback = None

    def _set_dword(self, handle: Any, option: str, value: int) -> None:
        buffer = ffi.new("DWORD *", value)
        if not self.lib.WinHttpSetOption(handle, _K[option], buffer, 4):
            raise _fail(f"WinHttpSetOption({option})")

    def _configure(self, handle: Any) -> None:
        t = self.timeouts
        if not self.lib.WinHttpSetTimeouts(handle, t.resolve, t.connect, t.send, t.receive):
            raise _fail("WinHttpSetTimeouts")
        self._set_dword(handle, "WINHTTP_OPTION_DISABLE_FEATURE", _DISABLED_FEATURES)
        if self.client_certificate is not None:
            context = ffi.cast("LPVOID", self.client_certificate.pointer)
            option = _K["WINHTTP_OPTION_CLIENT_CERT_CONTEXT"]
            if not self.lib.WinHttpSetOption(handle, option, context, ffi.sizeof("CERT_CONTEXT")):
                raise _fail("WinHttpSetOption(CLIENT_CERT_CONTEXT)")
        if self.server_check is not None:
            self._set_dword(handle, "WINHTTP_OPTION_SECURITY_FLAGS", _K["SECURITY_FLAG_IGNORE_UNKNOWN_CA"])
            self._callback = ffi.callback("WINHTTP_STATUS_CALLBACK", self._on_status, onerror=self._on_error)
            flags = _K["WINHTTP_CALLBACK_FLAG_SEND_REQUEST"]
            previous = self.lib.WinHttpSetStatusCallback(handle, self._callback, flags, 0)
            if previous == ffi.cast("WINHTTP_STATUS_CALLBACK", -1):
                raise _fail("WinHttpSetStatusCallback")

    def _on_status(self, handle: Any, context: int, status: int, info: Any, length: int) -> None:
        if status != _K["WINHTTP_CALLBACK_STATUS_SENDING_REQUEST"] or self.server_check is None:
            return
        try:
            self.server_check(self._server_certificate(handle))
        except BaseException as exc:
            self.rejection = exc
            self.cancel()

    def _on_error(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> None:
        self.rejection = exc or RuntimeError("WinHTTP status callback failed")
        self.cancel()

    def _server_certificate(self, handle: Any) -> bytes:
        out = ffi.new("PCCERT_CONTEXT *")
        size = ffi.new("DWORD *", ffi.sizeof("PCCERT_CONTEXT"))
        if not self.lib.WinHttpQueryOption(handle, _K["WINHTTP_OPTION_SERVER_CERT_CONTEXT"], out, size):
            raise _fail("WinHttpQueryOption(SERVER_CERT_CONTEXT)")
        with CertContext(self.session.crypt32, out[0]) as certificate:
            return certificate.der

    def _send(self, handle: Any) -> None:
        lines = "".join(
            f"{name}: {value}\r\n"
            for name, value in self.headers
            if name.lower() not in _SKIPPED_REQUEST_HEADERS
        )
        body = ffi.from_buffer("BYTE[]", self.body) if self.body else ffi.NULL
        header_text, header_length = (lines, 0xFFFFFFFF) if lines else (ffi.NULL, 0)
        size = len(self.body)
        if not self.lib.WinHttpSendRequest(handle, header_text, header_length, body, size, size, 0):
            raise _fail("WinHttpSendRequest")
        if not self.lib.WinHttpReceiveResponse(handle, ffi.NULL):
            raise _fail("WinHttpReceiveResponse")

    def _query_text(self, handle: Any, level: int) -> str:
        size = ffi.new("DWORD *", 0)
        if not self.lib.WinHttpQueryHeaders(handle, level, ffi.NULL, ffi.NULL, size, ffi.NULL):
            error = _loader.last_error()
            if error != ERROR_INSUFFICIENT_BUFFER:
                raise WinHttpError("WinHttpQueryHeaders", error)
        width = ffi.sizeof("wchar_t")
        buffer = ffi.new("wchar_t[]", size[0] // width + 1)
        if not self.lib.WinHttpQueryHeaders(handle, level, ffi.NULL, buffer, size, ffi.NULL):
            raise _fail("WinHttpQueryHeaders")
        return str(ffi.string(buffer, size[0] // width))

    def _receive(self, handle: Any) -> Response:
        status = ffi.new("DWORD *")
        size = ffi.new("DWORD *", 4)
        level = _K["WINHTTP_QUERY_STATUS_CODE"] | _K["WINHTTP_QUERY_FLAG_NUMBER"]
        if not self.lib.WinHttpQueryHeaders(handle, level, ffi.NULL, status, size, ffi.NULL):
            raise _fail("WinHttpQueryHeaders(STATUS_CODE)")
        version, reason, headers = parse_raw_headers(
            self._query_text(handle, _K["WINHTTP_QUERY_RAW_HEADERS_CRLF"])
        )
        return Response(int(status[0]), reason, version, headers, self._read_body(handle))

    def _read_body(self, handle: Any) -> bytes:
        body = bytearray()
        available = ffi.new("DWORD *")
        read = ffi.new("DWORD *")
        buffer = ffi.new("BYTE[]", READ_CHUNK)
        while True:
            if not self.lib.WinHttpQueryDataAvailable(handle, available):
                raise _fail("WinHttpQueryDataAvailable")
            if available[0] == 0:
                return bytes(body)
            if not self.lib.WinHttpReadData(handle, buffer, min(available[0], READ_CHUNK), read):
                raise _fail("WinHttpReadData")
            if read[0] == 0:
                return bytes(body)
            body += ffi.buffer(buffer, read[0])
            if len(body) > self.max_body:
                raise WinHttpError(
                    "WinHttpReadData", 0x80070057, f"response body exceeds {self.max_body} bytes"
                )


def parse_raw_headers(text: str) -> tuple[str, str, list[tuple[str, str]]]:
    """``(http_version, reason, [(name, value), ...])`` from ``WINHTTP_QUERY_RAW_HEADERS_CRLF`` text."""
    lines = text.split("\r\n")
    status_line = lines[0].split(" ", 2)
    version = status_line[0] if status_line else "HTTP/1.1"
    reason = status_line[2] if len(status_line) > 2 else ""
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, separator, value = line.partition(":")
        if separator:
            headers.append((name.strip(), value.strip()))
    return version, reason, headers
