"""The physical limit of an HTTP step: one blocking socket, one request, no framework.

Used as the baseline of the handshake and cold benchmarks: the request bytes come from the library's
own pure request builders (same URL, headers and body), so only the I/O machinery differs.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from msiv2_async._effects import HttpRequest

_READ = 65536


@dataclass
class RawResponse:
    """Status, lower-cased headers and body of one answer."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class RawTiming:
    """Milliseconds spent connecting (TCP + TLS handshake) and on the request itself."""

    connect_ms: float
    request_ms: float

    @property
    def total_ms(self) -> float:
        """Connect plus request."""
        return self.connect_ms + self.request_ms


def _request_bytes(request: HttpRequest, host_header: str, path: str) -> bytes:
    lines = [f"{request.method} {path} HTTP/1.1", f"Host: {host_header}"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    if request.body or request.method == "POST":
        lines.append(f"Content-Length: {len(request.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body


def _read_response(sock: socket.socket | ssl.SSLSocket) -> RawResponse:
    buffer = bytearray()
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(_READ)
        if not chunk:
            raise ConnectionError("connection closed before the response headers")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = bytearray(rest)
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(body) < length:
            chunk = sock.recv(_READ)
            if not chunk:
                raise ConnectionError("connection closed in the middle of the body")
            body += chunk
        return RawResponse(status, headers, bytes(body[:length]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return RawResponse(status, headers, _dechunk(sock, body))
    while chunk := sock.recv(_READ):
        body += chunk
    return RawResponse(status, headers, bytes(body))


def _dechunk(sock: socket.socket | ssl.SSLSocket, buffer: bytearray) -> bytes:
    body = bytearray()
    while True:
        while b"\r\n" not in buffer:
            buffer += sock.recv(_READ)
        size_line, _, remainder = bytes(buffer).partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        buffer = bytearray(remainder)
        while len(buffer) < size + 2:
            buffer += sock.recv(_READ)
        if size == 0:
            return bytes(body)
        body += buffer[:size]
        buffer = buffer[size + 2 :]


def exchange(request: HttpRequest, tls: ssl.SSLContext | None = None) -> tuple[RawResponse, RawTiming]:
    """Open a new connection (TLS with ``tls`` for https), send ``request``, read the whole answer."""
    parts = urlsplit(request.url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc
    started = time.perf_counter()
    sock: socket.socket | ssl.SSLSocket = socket.create_connection((host, port), timeout=30)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if parts.scheme == "https":
            if tls is None:
                raise ValueError("an https request needs a TLS context")
            sock = tls.wrap_socket(sock, server_hostname=host)
        connected = time.perf_counter()
        sock.sendall(_request_bytes(request, host_header, path))
        response = _read_response(sock)
        finished = time.perf_counter()
    finally:
        sock.close()
    return response, RawTiming((connected - started) * 1000, (finished - connected) * 1000)
