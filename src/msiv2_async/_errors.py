"""The exception hierarchy: one root, one subclass per kind of failure a caller can act on.

Messages say what happened and what to do. They never carry a token, key, CSR or attestation JWT:
server answers appear only as the sanitized excerpt built by :func:`msiv2_async._redact.excerpt`.
"""

from __future__ import annotations

from collections.abc import Sequence


class MsiV2Error(Exception):
    """Root of every error raised by msiv2_async."""


class MsiV2UnavailableError(MsiV2Error):
    """Managed Identity v2 cannot be attempted here (no IMDS v2, no viable backend, ...)."""


class ConfigurationError(MsiV2Error, ValueError):
    """An argument or environment variable has an invalid value."""


class ImdsError(MsiV2Error):
    """IMDS answered with an error status or the request to it failed.

    ``status`` is the HTTP status (``None`` for transport failures), ``endpoint`` the IMDS path name.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        status: int | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status
        self.correlation_id = correlation_id


class MalformedResponseError(MsiV2Error):
    """A response from IMDS or STS does not follow the protocol (nothing from it was used or cached)."""

    def __init__(self, message: str, *, endpoint: str) -> None:
        super().__init__(message)
        self.endpoint = endpoint


class CertificateIssuanceError(MsiV2Error):
    """IMDS issued a certificate we cannot use (unparsable, or not for our key)."""


class UntrustedEndpointError(MsiV2Error):
    """A URL received from IMDS is not one we will send a certificate or token to."""


class TokenRequestError(MsiV2Error):
    """The STS refused the token request; carries the OAuth error fields.

    ``retry_after`` (seconds) is set when identical requests fail fast for a while (throttling, 5xx).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: str | None = None,
        error_codes: Sequence[int] = (),
        correlation_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.error_codes = tuple(error_codes)
        self.correlation_id = correlation_id
        self.retry_after = retry_after


class BindingMismatchError(MsiV2Error):
    """The token's ``cnf.x5t#S256`` does not name the certificate it was requested with."""


class BackendError(MsiV2Error):
    """A key backend failed (key creation, signing, attestation, mTLS transport)."""


class BackendNotFoundError(BackendError, MsiV2UnavailableError):
    """No backend of the requested name is installed, or none is viable on this host."""


class MsiV2TimeoutError(MsiV2Error, TimeoutError):
    """The acquisition did not finish within its deadline."""


class ImdsV2NotSupportedError(ImdsError, MsiV2UnavailableError):
    """IMDS is there but does not offer Managed Identity v2 (``getplatformmetadata`` answered 404)."""


class ImdsUnreachableError(ImdsError, MsiV2UnavailableError):
    """No answer from IMDS at all: not an Azure VM, or the endpoint override is wrong."""


class ThrottledError(MsiV2Error):
    """A server asked us to wait ``retry_after`` seconds, longer than we wait within one call.

    Identical calls fail fast with this error until the window (capped at one hour) has passed.
    """

    retry_after: float | None = None


class ImdsThrottledError(ImdsError, ThrottledError):
    """IMDS throttled us (429/503 with a long ``Retry-After``)."""

    def __init__(
        self, message: str, *, endpoint: str, status: int, retry_after: float, correlation_id: str
    ) -> None:
        super().__init__(message, endpoint=endpoint, status=status, correlation_id=correlation_id)
        self.retry_after = retry_after


class StsThrottledError(TokenRequestError, ThrottledError):
    """The STS throttled us (429, or an answer with ``Retry-After``)."""
