"""The MSI v2 protocol as sans-IO generators (in the style of ``httpx.Auth.auth_flow``).

Each generator yields an effect (:mod:`._effects`), is sent its result, and returns a value. It reads
no clock, opens no socket and starts no thread, so every decision here is unit-testable step by step;
:class:`msiv2_async.MsiV2Client` drives it with httpx, anyio and the key backend.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from . import _binding, _csr, _imds, _imds_v1, _retry, _sts
from ._effects import Attest, Effect, HttpRequest, HttpResponse, OpenKey, Sign, Sleep, TransportFailure
from ._errors import BackendError, ImdsThrottledError, MsiV2Error
from ._models import (
    BearerToken,
    Binding,
    ManagedIdentity,
    ManagedIdentitySource,
    MtlsPopToken,
    PlatformMetadata,
    RsaPublicNumbers,
)

KEY_NAME_PREFIX = "MsiV2AsyncKey_"


@dataclass(frozen=True)
class FlowSettings:
    """What the flow needs to know about its environment, resolved by the driver."""

    imds_endpoint: str
    identity: ManagedIdentity
    allowed_token_hosts: tuple[str, ...]
    backend_name: str
    attestation: bool
    verify_binding: bool = True
    retry: _retry.RetryPolicy = _retry.DEFAULT_RETRY


def key_name(client_id: str) -> str:
    """The per-identity key name: the prefix plus the client id, unsafe characters replaced."""
    return (KEY_NAME_PREFIX + re.sub(r"[^A-Za-z0-9_-]", "_", client_id))[:90]


def refresh_delay(expires_in: int, refresh_in: int | None) -> int:
    """Seconds until a token should be refreshed.

    The STS's ``refresh_in`` when sent; else half the lifetime for lifetimes of 2 h or more; else
    5 minutes before expiry (never negative).
    """
    if refresh_in is not None:
        return min(refresh_in, expires_in)
    if expires_in >= 7200:
        return expires_in // 2
    return max(expires_in - 300, 0)


def _sleep(seconds: float, what: str, attempts: int, error: MsiV2Error) -> Sleep:
    return Sleep(seconds, f"{what}; retry {attempts} in {seconds:g} s", error)


def imds_exchange(
    settings: FlowSettings, request: HttpRequest, correlation_id: str, now: datetime | None = None
) -> Generator[Effect, Any, HttpResponse]:
    """One IMDS call with the retry policy; returns the 200 answer or raises the typed error.

    An answer without IMDS's ``Server`` header is never retried. ``now`` anchors HTTP-date
    ``Retry-After`` values when the answer has no ``Date`` header.
    """
    attempts, first_status = 0, None
    while True:
        result: HttpResponse | TransportFailure = yield request
        attempts += 1
        status: int | None = None
        retry_after: float | None = None
        if isinstance(result, TransportFailure):
            error: MsiV2Error = result.error
        else:
            _imds.check_server(result, endpoint=request.endpoint, correlation_id=correlation_id)
            if result.status == 200:
                return result
            status = result.status
            first_status = first_status or status
            error = _imds.status_error(result, endpoint=request.endpoint, correlation_id=correlation_id)
            retry_after = _retry.retry_after_seconds(result.headers, now)
        decision = _retry.imds_decision(settings.retry, attempts, status, first_status, retry_after)
        if decision.throttled_for is not None:
            raise ImdsThrottledError(
                f"{error} (IMDS asked to wait {retry_after:.0f} s, more than the "
                f"{settings.retry.retry_after_cap:.0f} s we wait within one call)",
                endpoint=request.endpoint,
                status=status or 0,
                retry_after=decision.throttled_for,
                correlation_id=correlation_id,
            )
        if decision.delay is None:
            raise error
        yield _sleep(decision.delay, f"IMDS {request.endpoint}: {status or 'no answer'}", attempts, error)


def sts_exchange(
    settings: FlowSettings, request: HttpRequest, correlation_id: str, now: datetime | None = None
) -> Generator[Effect, Any, HttpResponse]:
    """The token request with the STS retry policy; returns the 200 answer or raises the typed error."""
    attempts = 0
    while True:
        result: HttpResponse | TransportFailure = yield request
        attempts += 1
        if isinstance(result, TransportFailure):
            error: MsiV2Error = result.error
            decision = _retry.sts_decision(settings.retry, attempts, None, None) if result.timed_out else None
        else:
            if result.status == 200:
                return result
            retry_after = _retry.retry_after_seconds(result.headers, now)
            window = _retry.sts_throttle_window(settings.retry, result.status, retry_after)
            error = _sts.status_error(result, correlation_id, throttle_window=window)
            decision = _retry.sts_decision(settings.retry, attempts, result.status, retry_after)
        if decision is None or decision.delay is None:
            raise error
        yield _sleep(decision.delay, f"STS token: {getattr(result, 'status', 'timeout')}", attempts, error)


def platform_metadata(
    settings: FlowSettings, correlation_id: str, now: datetime | None = None
) -> Generator[Effect, Any, PlatformMetadata]:
    """``getplatformmetadata``, validated."""
    request = _imds.metadata_request(settings.imds_endpoint, settings.identity, correlation_id)
    response = yield from imds_exchange(settings, request, correlation_id, now)
    return _imds.parse_metadata(response)


def mint_binding(
    settings: FlowSettings, metadata: PlatformMetadata, correlation_id: str, now: datetime
) -> Generator[Effect, Any, Binding]:
    """Key, CSR, optional attestation, ``issuecredential``, and the checks that make the result usable."""
    key: RsaPublicNumbers = yield OpenKey(key_name(metadata.client_id))
    info = _csr.request_info(
        client_id=metadata.client_id, tenant_id=metadata.tenant_id, cu_id=metadata.cu_id, key=key
    )
    signature: bytes = yield Sign(info)
    csr = _csr.wire_form(_csr.assemble(info, signature))
    attestation_token: str | None = None
    if settings.attestation:
        attestation_token = yield Attest(metadata.attestation_endpoint, metadata.client_id)
        if not attestation_token:
            raise BackendError(
                f"backend {settings.backend_name!r} returned no attestation token; "
                "refusing to request an unattested certificate when attestation was asked for"
            )
    request = _imds.issue_credential_request(
        settings.imds_endpoint, settings.identity, correlation_id, csr, attestation_token
    )
    response = yield from imds_exchange(settings, request, correlation_id, now)
    issued = _imds.parse_issued_credential(response)
    certificate = _binding.certificate_for_key(
        issued.certificate_der, key, backend=settings.backend_name, now=now
    )
    endpoint = _sts.token_endpoint(
        issued.mtls_authentication_endpoint, issued.tenant_id, settings.allowed_token_hosts
    )
    return Binding(
        certificate=certificate,
        client_id=issued.client_id,
        tenant_id=issued.tenant_id,
        token_endpoint=endpoint,
        attested=attestation_token is not None,
    )


def request_token(
    settings: FlowSettings,
    binding: Binding,
    scope: str,
    correlation_id: str,
    requested_at: datetime,
    claims: str | None = None,
) -> Generator[Effect, Any, MtlsPopToken]:
    """The mTLS token request; the answer validated and, unless disabled, its binding checked."""
    request = _sts.token_request(binding, scope, correlation_id, claims)
    response = yield from sts_exchange(settings, request, correlation_id, requested_at)
    token = _sts.parse_token_response(response)
    if settings.verify_binding:
        _binding.verify_token_binding(token.access_token, binding.certificate)
    expires_on = requested_at + timedelta(seconds=token.expires_in)
    refresh_on = requested_at + timedelta(seconds=refresh_delay(token.expires_in, token.refresh_in))
    return MtlsPopToken(
        access_token=token.access_token,
        token_type=token.token_type,
        expires_on=int(expires_on.timestamp()),
        refresh_on=int(refresh_on.timestamp()),
        scope=scope,
        binding_certificate=binding.certificate,
        correlation_id=correlation_id,
    )


def new_binding(
    settings: FlowSettings, correlation_id: str, now: datetime
) -> Generator[Effect, Any, Binding]:
    """Platform metadata, then a freshly minted binding certificate."""
    metadata = yield from platform_metadata(settings, correlation_id, now)
    return (yield from mint_binding(settings, metadata, correlation_id, now))


def acquire(
    settings: FlowSettings, scope: str, correlation_id: str, now: datetime, claims: str | None = None
) -> Generator[Effect, Any, MtlsPopToken]:
    """The whole flow of PROTOCOL.md §0: metadata, key, CSR, certificate, token."""
    scope = _sts.normalize_scope(scope)  # a bad scope fails before any request or key operation
    binding = yield from new_binding(settings, correlation_id, now)
    return (yield from request_token(settings, binding, scope, correlation_id, now, claims))


def bearer_token(
    settings: FlowSettings, scope: str, correlation_id: str, requested_at: datetime
) -> Generator[Effect, Any, BearerToken]:
    """A bearer token from MSI v1, with the IMDS retry policy (PROTOCOL.md §7)."""
    request = _imds_v1.token_request(settings.imds_endpoint, settings.identity, scope, correlation_id)
    response = yield from imds_exchange(settings, request, correlation_id, requested_at)
    token = _imds_v1.parse_token(response)
    refresh_on = requested_at + timedelta(seconds=refresh_delay(token.expires_in, token.refresh_in))
    return BearerToken(
        access_token=token.access_token,
        token_type=token.token_type,
        expires_on=int((requested_at + timedelta(seconds=token.expires_in)).timestamp()),
        refresh_on=int(refresh_on.timestamp()),
        scope=scope,
        correlation_id=correlation_id,
    )


def _probe_one(settings: FlowSettings, request: HttpRequest) -> Generator[Effect, Any, str | None]:
    """None when IMDS answered the probe with 400 (it is there); else why not."""
    attempts, first_status = 0, None
    while True:
        result: HttpResponse | TransportFailure = yield request
        attempts += 1
        if isinstance(result, TransportFailure):
            status, reason = None, f"no answer ({result.error})"
        elif result.status == 400:
            return None
        else:
            status, reason = result.status, f"HTTP {result.status}"
            first_status = first_status or status
        if status == 404:
            return reason
        decision = _retry.imds_decision(settings.retry, attempts, status, first_status, None)
        if decision.delay is None:
            return reason
        yield _sleep(decision.delay, f"IMDS probe {request.endpoint}: {reason}", attempts, MsiV2Error(reason))


def probe(
    settings: FlowSettings, correlation_id: str
) -> Generator[Effect, Any, tuple[ManagedIdentitySource, str]]:
    """Which IMDS this host has: v2 (``getplatformmetadata`` answers 400 without ``Metadata``), else v1."""
    v2_request, v1_request = _imds_v1.probe_requests(
        settings.imds_endpoint, settings.identity, correlation_id
    )
    v2_problem = yield from _probe_one(settings, v2_request)
    if v2_problem is None:
        return ManagedIdentitySource.IMDS_V2, "IMDS v2 answered the probe"
    v1_problem = yield from _probe_one(settings, v1_request)
    if v1_problem is None:
        return ManagedIdentitySource.IMDS_V1_ONLY, f"IMDSv2: {v2_problem}. IMDSv1 answered the probe."
    return ManagedIdentitySource.UNAVAILABLE, f"IMDSv2: {v2_problem}. IMDSv1: {v1_problem}."
