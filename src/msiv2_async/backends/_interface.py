"""The contract every key backend fulfils (software in the core, KeyGuard as a plugin).

All methods block: the driver calls them through ``anyio.to_thread.run_sync``, so a backend may call
native code, generate keys or do file I/O without stalling the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import httpx

from .._models import RsaPublicNumbers


@dataclass(frozen=True)
class TlsSettings:
    """How the mTLS transports reach and verify the STS and resources.

    System trust plus an optional extra CA bundle; verification cannot be switched off; TLS 1.2 is the
    minimum. ``proxy`` is an http(s) proxy URL the transport must tunnel through (``None``: direct).
    """

    ca_bundle: str | None = None
    proxy: str | None = None


@runtime_checkable
class KeyBackend(Protocol):
    """A holder of one RSA-2048 binding key that can sign with it and present it in mutual TLS.

    ``name`` is the entry-point name, ``binding_strength`` a label such as ``"software"`` or
    ``"keyguard"``, ``supports_attestation`` whether :meth:`attest` can return a token.
    """

    name: str
    binding_strength: str
    supports_attestation: bool

    @classmethod
    def priority(cls) -> float:
        """How preferable the backend is here; raise :class:`MsiV2UnavailableError` when not viable."""
        ...

    def open_key(self, key_name: str) -> RsaPublicNumbers:
        """Open the key ``key_name``, creating it when absent, and return its public numbers."""
        ...

    def sign(self, data: bytes) -> bytes:
        """RSASSA-PSS signature of ``data``: SHA-256, MGF1-SHA-256, salt length 32."""
        ...

    def attest(self, *, endpoint: str, client_id: str) -> str | None:
        """An attestation JWT for the key from ``endpoint``, or ``None`` if this backend cannot attest."""
        ...

    def mtls_transport(self, certificate_der: bytes, tls: TlsSettings) -> httpx.AsyncBaseTransport:
        """An httpx transport that presents ``certificate_der`` with the key in every TLS handshake."""
        ...

    def close(self) -> None:
        """Release the key handle and anything else the backend holds."""
        ...
