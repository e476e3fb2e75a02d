"""Value types shared by the protocol core, the driver and the public API.

Every field that holds a secret is excluded from ``repr``.
"""

from __future__ import annotations

import base64
import enum
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from ._errors import ConfigurationError


@dataclass(frozen=True)
class RsaPublicNumbers:
    """The public half of the binding key."""

    modulus: int
    exponent: int


@dataclass(frozen=True)
class ManagedIdentity:
    """Which managed identity to use: system-assigned, or one user-assigned selector.

    Build it with :meth:`system_assigned` or :meth:`user_assigned`.
    """

    selector: Literal["client_id", "object_id", "resource_id"] | None = None
    value: str | None = None

    @classmethod
    def system_assigned(cls) -> ManagedIdentity:
        """The VM's system-assigned identity."""
        return cls()

    @classmethod
    def user_assigned(
        cls,
        *,
        client_id: str | None = None,
        object_id: str | None = None,
        resource_id: str | None = None,
    ) -> ManagedIdentity:
        """A user-assigned identity chosen by exactly one of its ids."""
        given = {"client_id": client_id, "object_id": object_id, "resource_id": resource_id}
        chosen = [(name, value) for name, value in given.items() if value is not None]
        if len(chosen) != 1:
            raise ConfigurationError(
                "choose a user-assigned identity by exactly one of client_id, object_id or resource_id"
            )
        name, value = chosen[0]
        if not value.strip():
            raise ConfigurationError(f"{name} must not be empty")
        return cls(selector=name, value=value.strip())  # type: ignore[arg-type]

    @property
    def is_system_assigned(self) -> bool:
        """True when no user-assigned selector is set."""
        return self.selector is None

    def describe(self) -> str:
        """A log-friendly name: ``system-assigned`` or ``client_id=<id>`` (ids are not secret)."""
        return "system-assigned" if self.selector is None else f"{self.selector}={self.value}"


@dataclass(frozen=True)
class CuId:
    """The compute-unit id from platform metadata; at least one member is set."""

    vm_id: str | None = None
    vmss_id: str | None = None


@dataclass(frozen=True)
class PlatformMetadata:
    """The validated answer of ``getplatformmetadata``."""

    client_id: str
    tenant_id: str
    cu_id: CuId
    attestation_endpoint: str


@dataclass(frozen=True)
class IssuedCredential:
    """The validated answer of ``issuecredential``."""

    client_id: str
    tenant_id: str
    certificate_der: bytes = field(repr=False)
    identity_type: str
    mtls_authentication_endpoint: str


@dataclass(frozen=True)
class TokenResponse:
    """The validated answer of the STS token endpoint (durations in seconds)."""

    access_token: str = field(repr=False)
    token_type: str
    expires_in: int
    refresh_in: int | None = None
    ext_expires_in: int | None = None


def x5t_s256(certificate_der: bytes) -> str:
    """RFC 8705 thumbprint: base64url(SHA-256(DER)) without padding, 43 characters."""
    digest = hashlib.sha256(certificate_der).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class BindingCertificate:
    """The short-lived client certificate IMDS issued for our key; tokens are bound to it."""

    der: bytes = field(repr=False)
    thumbprint_sha256: str
    not_before: datetime
    not_after: datetime
    backend: str

    @property
    def pem(self) -> str:
        """The certificate in PEM armour."""
        body = base64.encodebytes(self.der).decode("ascii")
        return f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"


@dataclass(frozen=True)
class Binding:
    """Everything the token request needs from a minted certificate."""

    certificate: BindingCertificate
    client_id: str
    tenant_id: str
    token_endpoint: str
    attested: bool


@dataclass(frozen=True)
class MtlsPopToken:
    """An access token bound to :attr:`binding_certificate`; the token itself never appears in ``repr``.

    ``expires_on`` and ``refresh_on`` are Unix times in seconds.
    """

    access_token: str = field(repr=False)
    token_type: str
    expires_on: int
    refresh_on: int
    scope: str
    binding_certificate: BindingCertificate
    correlation_id: str
    source: Literal["cache", "identity_provider"] = "identity_provider"

    def authorization_header(self) -> str:
        """The ``Authorization`` header value: ``mtls_pop <token>``."""
        return f"{self.token_type} {self.access_token}"


@dataclass(frozen=True)
class BearerToken:
    """A bearer token from MSI v1 (not bound to a certificate); the token never appears in ``repr``."""

    access_token: str = field(repr=False)
    token_type: str
    expires_on: int
    refresh_on: int
    scope: str
    correlation_id: str
    source: Literal["cache", "identity_provider"] = "identity_provider"
    binding_certificate: None = None

    def authorization_header(self) -> str:
        """The ``Authorization`` header value: ``Bearer <token>``."""
        return f"Bearer {self.access_token}"


BINDING_STRENGTHS = {"none": 0, "software": 1, "hardware": 2, "keyguard": 3}


def binding_rank(strength: str) -> int:
    """The order of binding strengths: none < software < hardware < keyguard."""
    try:
        return BINDING_STRENGTHS[strength]
    except KeyError:
        raise ConfigurationError(
            f"unknown binding strength {strength!r}; use one of {', '.join(BINDING_STRENGTHS)}"
        ) from None


class ManagedIdentitySource(enum.Enum):
    """What the capability probe found on this host."""

    IMDS_V2 = "imds_v2"
    IMDS_V1_ONLY = "imds_v1_only"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Capabilities:
    """The answer of :meth:`MsiV2Client.get_capabilities`."""

    source: ManagedIdentitySource
    max_binding_strength: str
    reason: str | None = None

    @property
    def mtls_pop_supported(self) -> bool:
        """True when this host and backend can get mtls_pop tokens."""
        return binding_rank(self.max_binding_strength) > 0
