"""Where the benchmarks run: the local emulator on loopback, or the real IMDS and STS of an Azure VM."""

from __future__ import annotations

import contextlib
import os
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from msiv2_async.backends import TlsSettings
from msiv2_async.backends.software import SoftwareBackend

PEER_ENV = "AZURE_POD_IDENTITY_AUTHORITY_HOST"


@dataclass
class Target:
    """``mode`` "emulator" (loopback, everything counted server side) or "imds" (a real Azure VM)."""

    mode: str
    emulator: Any = None
    client_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def tls(self) -> TlsSettings:
        """The trust settings our client uses (system store plus the emulator CA in emulator mode)."""
        return TlsSettings(
            ca_bundle=self.client_kwargs.get("ca_bundle") or os.environ.get("MSIV2_ASYNC_CA_BUNDLE")
        )

    @property
    def imds_endpoint(self) -> str:
        """The IMDS base URL."""
        from msiv2_async._imds import resolve_endpoint

        return resolve_endpoint(self.client_kwargs.get("imds_endpoint"), os.environ)

    def stats(self) -> dict[str, int]:
        """The emulator's request counters ({} on a real VM, where nothing is counted server side)."""
        return dict(self.emulator.stats) if self.emulator is not None else {}

    @contextlib.contextmanager
    def peer_environment(self) -> Iterator[None]:
        """Point azure-identity and MSAL at the emulator's MSI v1 endpoint (no change on a real VM)."""
        if self.emulator is None:
            yield
            return
        previous = os.environ.get(PEER_ENV)
        os.environ[PEER_ENV] = self.emulator.imds_url
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(PEER_ENV, None)
            else:
                os.environ[PEER_ENV] = previous


def _emulator_target(emulator: Any) -> Target:
    return Target(
        "emulator",
        emulator,
        {
            "imds_endpoint": emulator.imds_url,
            "ca_bundle": emulator.ca_bundle_path,
            "allowed_token_hosts": [emulator.allowed_token_host],
        },
    )


@contextlib.contextmanager
def target(mode: str, *, in_process: bool = False) -> Iterator[Target]:
    """Start the emulator (``mode`` "emulator") or describe the VM's own IMDS (``mode`` "imds").

    The emulator runs in a child process unless ``in_process`` (then in a thread of this process, where
    its work competes with the benchmarked client for the interpreter lock).
    """
    if mode == "imds":
        yield Target("imds")
        return
    if in_process:
        from msiv2_async.emulator import Emulator

        with Emulator(host="127.0.0.1") as emulator:
            yield _emulator_target(emulator)
        return
    from ._emulator_process import ChildEmulator

    child = ChildEmulator()
    try:
        yield _emulator_target(child)
    finally:
        child.stop()


def handshake_counter(target: Target) -> Any:
    """A server-side counter of the STS's TLS handshakes (``count``, ``versions()``, ``close()``)."""
    if hasattr(target.emulator, "handshake_counter"):
        return target.emulator.handshake_counter()
    return HandshakeCounter(target.emulator)


class PinnedSoftwareBackend(SoftwareBackend):
    """The software backend with its mTLS contexts capped at one TLS version (benchmarks only)."""

    def __init__(self, maximum_version: ssl.TLSVersion | None = None) -> None:
        super().__init__()
        self.maximum_version = maximum_version

    def client_ssl_context(self, certificate_der: bytes, tls: TlsSettings) -> ssl.SSLContext:
        """The library's context, capped at ``maximum_version``."""
        context = super().client_ssl_context(certificate_der, tls)
        if self.maximum_version is not None:
            context.maximum_version = self.maximum_version
        return context


class HandshakeCounter:
    """Counts TLS handshakes on the emulator's STS listener, server side.

    The emulator has no handshake counter of its own yet, so this wraps the ``wrap_bio`` of the STS
    listener's SSL context (asyncio calls it once per accepted TLS connection) and keeps the server-side
    ``SSLObject`` of each connection to read the negotiated protocol version afterwards.
    """

    def __init__(self, emulator: Any) -> None:
        running = emulator._running  # the emulator exposes no handle on its listeners
        self._context = self._sts_context(running)
        self._lock = threading.Lock()
        self.count = 0
        self._objects: list[ssl.SSLObject] = []
        inner = type(self._context).wrap_bio.__get__(self._context)

        def wrap_bio(*args: Any, **kwargs: Any) -> ssl.SSLObject:
            obj = inner(*args, **kwargs)
            with self._lock:
                self.count += 1
                self._objects.append(obj)
            return obj

        self._context.wrap_bio = wrap_bio  # type: ignore[method-assign]

    @staticmethod
    def _sts_context(running: Any) -> ssl.SSLContext:
        for runner in running.runners:
            for site in runner.sites:
                sock = getattr(site, "_sock", None)
                if sock is not None and sock.getsockname()[1] == running.sts_port:
                    context: ssl.SSLContext = site._ssl_context
                    return context
        raise RuntimeError("the emulator's STS listener was not found")

    def versions(self) -> list[str]:
        """Negotiated protocol versions of the handshakes seen since the last call."""
        with self._lock:
            objects, self._objects = self._objects, []
        versions: set[str] = set()
        for obj in objects:
            with contextlib.suppress(ValueError, ssl.SSLError):
                version = obj.version()
                if version:
                    versions.add(version)
        return sorted(versions)

    def close(self) -> None:
        """Stop counting."""
        with contextlib.suppress(AttributeError):
            del self._context.wrap_bio
