"""Opt-in proxying of STS and resource calls: a CONNECT tunnel that still carries the client certificate."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from msiv2_async import MsiV2Client
from msiv2_async.emulator import Emulator

pytestmark = pytest.mark.anyio


class ConnectProxy:
    """A tiny HTTP CONNECT proxy on loopback that counts tunnels and relays bytes both ways."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.tunnels: list[str] = []
        self.plain_requests = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
        method, target = head.split(b" ", 2)[:2]
        if method != b"CONNECT":
            self.plain_requests += 1
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        host, port = target.decode().rsplit(":", 1)
        assert host == "127.0.0.1"
        upstream = socket.create_connection((host, int(port)))
        self.tunnels.append(target.decode())
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    server = ConnectProxy()
    yield server
    server.close()


async def test_opted_in_proxy_tunnels_sts_and_resource_with_the_client_certificate(
    emulator: Emulator, proxy: ConnectProxy
) -> None:
    environ: dict[str, Any] = {"HTTPS_PROXY": proxy.url, "HTTP_PROXY": proxy.url}
    async with MsiV2Client(
        imds_endpoint=emulator.imds_url,
        ca_bundle=emulator.ca_bundle_path,
        allowed_token_hosts=[emulator.allowed_token_host],
        proxy_from_environment=True,
        environ=environ,
    ) as client:
        token = await client.acquire_token()
        async with await client.resource_client(token) as http:
            response = await http.get(emulator.resource_url)
    assert response.status_code == 200
    assert emulator.resource_log[-1]["presented_x5t"] == token.binding_certificate.thumbprint_sha256
    sts_port = emulator.sts_url.rsplit(":", 1)[1]
    resource_port = emulator.resource_url.split(":")[2].split("/")[0]
    assert f"127.0.0.1:{sts_port}" in proxy.tunnels
    assert f"127.0.0.1:{resource_port}" in proxy.tunnels
    assert proxy.plain_requests == 0


async def test_without_opting_in_the_proxy_sees_nothing(
    emulator: Emulator, proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    async with MsiV2Client(
        imds_endpoint=emulator.imds_url,
        ca_bundle=emulator.ca_bundle_path,
        allowed_token_hosts=[emulator.allowed_token_host],
    ) as client:
        token = await client.acquire_token()
        async with await client.resource_client(token) as http:
            assert (await http.get(emulator.resource_url)).status_code == 200
    assert proxy.tunnels == []
    assert proxy.plain_requests == 0
