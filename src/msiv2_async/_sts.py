"""The Entra token request over mTLS and the validation of its answer (PROTOCOL.md §4.3, §6)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from ._effects import HttpRequest, HttpResponse
from ._errors import (
    ConfigurationError,
    MalformedResponseError,
    StsThrottledError,
    TokenRequestError,
    UntrustedEndpointError,
)
from ._imds import is_guid
from ._json import parse_object, require_str, seconds
from ._models import Binding, TokenResponse
from ._redact import excerpt

TOKEN = "token"
DEFAULT_ALLOWED_TOKEN_HOSTS = ("*.mtlsauth.microsoft.com",)
ALLOWED_TOKEN_HOSTS_ENV = "MSIV2_ASYNC_ALLOWED_TOKEN_HOSTS"
TOKEN_TYPE = "mtls_pop"

_HINTS = {
    392200: "the client certificate did not reach the STS: a TLS-inspecting proxy or an old TLS stack "
    "may be dropping it; check proxy settings and that TLS 1.2+ is enabled",
}


def allowed_token_hosts(extra: Iterable[str] | None, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The default allowlist, extended by the argument and by ``$MSIV2_ASYNC_ALLOWED_TOKEN_HOSTS``."""
    from_env = [p.strip() for p in environ.get(ALLOWED_TOKEN_HOSTS_ENV, "").split(",") if p.strip()]
    patterns = (*DEFAULT_ALLOWED_TOKEN_HOSTS, *(p.strip() for p in (extra or ()) if p.strip()), *from_env)
    for pattern in patterns:
        if "/" in pattern or "@" in pattern:
            raise ConfigurationError(f"allowed token host {pattern!r} must be a host or host:port pattern")
    return tuple(dict.fromkeys(p.lower() for p in patterns))


def _host_allowed(host: str, port: int, patterns: Iterable[str]) -> bool:
    for pattern in patterns:
        host_pattern, _, port_pattern = pattern.partition(":")
        if port_pattern in ("", "443") and port != 443:
            continue
        if port_pattern not in ("", "443", "*") and port_pattern != str(port):
            continue
        if fnmatch.fnmatchcase(host, host_pattern):
            return True
    return False


def token_endpoint(mtls_authentication_endpoint: str, tenant_id: str, allowed_hosts: Iterable[str]) -> str:
    """``{endpoint}/{tenant}/oauth2/v2.0/token`` after checking the endpoint is one we send certificates to.

    Rules: https only; no userinfo, query or fragment; the host (and port, default 443) matches an
    allowlist pattern (``*.mtlsauth.microsoft.com``, ``127.0.0.1:*``, ...); the tenant is a GUID.
    """
    try:
        parts = urlsplit(mtls_authentication_endpoint)
        port = 443 if parts.port is None else parts.port
    except ValueError:
        parts, port = urlsplit(""), 0
    problem = None
    if parts.scheme != "https":
        problem = "is not https" if port else "is not a valid URL"
    elif not 0 < port < 65536:
        problem = "has an invalid port"
    elif not parts.hostname or "@" in parts.netloc or parts.query or parts.fragment:
        problem = "carries credentials, a query or a fragment"
    elif not is_guid(tenant_id):
        problem = "comes with a tenant id that is not a GUID"
    elif not _host_allowed(parts.hostname.lower(), port, allowed_hosts):
        problem = (
            f"has host {parts.netloc!r}, which is not in the allowed token hosts "
            f"(extend them with allowed_token_hosts= or ${ALLOWED_TOKEN_HOSTS_ENV})"
        )
    if problem:
        raise UntrustedEndpointError(
            f"refusing the mTLS token endpoint from IMDS: {mtls_authentication_endpoint!r} {problem}"
        )
    return f"{mtls_authentication_endpoint.rstrip('/')}/{tenant_id}/oauth2/v2.0/token"


def normalize_scope(scope: str) -> str:
    """A resource or a ``.default`` scope, as the ``.default`` scope the STS expects."""
    scope = scope.strip()
    if not scope or any(c.isspace() for c in scope):
        raise ConfigurationError(f"scope {scope!r} must be a single resource or '<resource>/.default' scope")
    if scope.endswith("/.default"):
        return scope
    return scope.rstrip("/") + "/.default"


def token_request(
    binding: Binding, scope: str, correlation_id: str, claims: str | None = None
) -> HttpRequest:
    """The ``client_credentials`` request with ``token_type=mtls_pop``, sent over mTLS with ``binding``."""
    form = [
        ("grant_type", "client_credentials"),
        ("client_id", binding.client_id),
        ("scope", scope),
        ("token_type", TOKEN_TYPE),
    ]
    if claims:
        form.append(("claims", claims))
    return HttpRequest(
        target="sts",
        endpoint=TOKEN,
        method="POST",
        url=binding.token_endpoint,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "client-request-id": correlation_id,
            "return-client-request-id": "true",
        },
        body=urlencode(form).encode("ascii"),
        connect_timeout=10.0,
        read_timeout=30.0,
        binding=binding,
    )


def _error_codes(obj: Mapping[str, Any]) -> tuple[int, ...]:
    codes = obj.get("error_codes")
    if isinstance(codes, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in codes):
        return tuple(codes)
    return ()


def rejects_certificate(error: TokenRequestError) -> bool:
    """The STS refused our binding certificate; worth one re-mint.

    That is ``invalid_client`` (any error codes, incl. 1000610-1000614), AADSTS1000901, or a TLS
    alert against our client certificate; never a failure to verify the STS's own certificate.
    """
    return error.error in ("invalid_client", "client_certificate_rejected") or 1000901 in error.error_codes


def raise_for_error(response: HttpResponse, correlation_id: str) -> None:
    """Raise :func:`status_error` for a non-200 STS answer."""
    if response.status != 200:
        raise status_error(response, correlation_id)


def status_error(
    response: HttpResponse, correlation_id: str, *, throttle_window: float | None = None
) -> TokenRequestError:
    """The :class:`TokenRequestError` for a non-200 STS answer, carrying the OAuth fields.

    With a ``throttle_window`` (seconds during which identical requests fail fast) the error carries
    it as ``retry_after``; a 429 or an answer with ``Retry-After`` gives :class:`StsThrottledError`.
    """
    try:
        obj: Mapping[str, Any] = parse_object(response.body, endpoint=TOKEN)
    except MalformedResponseError:
        obj = {}
    error = obj.get("error") if isinstance(obj.get("error"), str) else None
    description = obj.get("error_description") if isinstance(obj.get("error_description"), str) else None
    codes = _error_codes(obj)
    hints = [_HINTS[c] for c in codes if c in _HINTS]
    detail = excerpt(str(description) if description else response.body)
    message = f"STS token request failed: HTTP {response.status} {error or ''}: {detail}".replace(" :", ":")
    if hints:
        message += f" ({'; '.join(hints)})"
    throttled = response.status == 429 or "retry-after" in response.headers
    if throttle_window is not None:
        message += f"; identical requests fail fast for {throttle_window:.0f} s"
    return (StsThrottledError if throttled else TokenRequestError)(
        f"{message} [client-request-id {correlation_id}]",
        status=response.status,
        error=str(error) if error else None,
        error_codes=codes,
        correlation_id=correlation_id,
        retry_after=throttle_window,
    )


def parse_token_response(response: HttpResponse) -> TokenResponse:
    """Validate a 200 answer: ``access_token``, ``token_type`` mtls_pop, integer durations."""
    obj = parse_object(response.body, endpoint=TOKEN)
    token_type = require_str(obj, "token_type", endpoint=TOKEN)
    if token_type.lower() != TOKEN_TYPE:
        raise MalformedResponseError(
            f"STS returned token_type {token_type[:20]!r} where {TOKEN_TYPE!r} was requested", endpoint=TOKEN
        )
    expires_in = seconds(obj, "expires_in", endpoint=TOKEN, required=True, minimum=1)
    assert expires_in is not None
    return TokenResponse(
        access_token=require_str(obj, "access_token", endpoint=TOKEN),
        token_type=TOKEN_TYPE,
        expires_in=expires_in,
        refresh_in=seconds(obj, "refresh_in", endpoint=TOKEN, required=False),
        ext_expires_in=seconds(obj, "ext_expires_in", endpoint=TOKEN, required=False),
    )
