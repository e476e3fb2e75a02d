"""Performing :class:`HttpRequest` effects with httpx: size caps, timeouts, typed transport errors."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator

import httpx

from ._effects import HttpRequest, HttpResponse, TransportFailure
from ._errors import ImdsError, ImdsUnreachableError, MalformedResponseError, MsiV2Error, TokenRequestError
from ._json import MAX_BODY_BYTES
from ._logging import get_logger

_log = get_logger("msiv2_async.http")


def imds_client(
    tls_context: Callable[[], ssl.SSLContext], transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The IMDS client: never a proxy, never a redirect. Blocking (``tls_context`` may load CA files)."""
    return httpx.AsyncClient(
        transport=transport or httpx.AsyncHTTPTransport(verify=tls_context(), retries=0),
        trust_env=False,
        follow_redirects=False,
    )


CLIENT_CERTIFICATE_REJECTED = "client_certificate_rejected"
_CLIENT_CERTIFICATE_ALERTS = frozenset(
    {
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
        "TLSV1_ALERT_DECRYPT_ERROR",
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    }
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes (``__cause__``, else ``__context__``), at most 10 deep."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    return next((e for e in _chain(exc) if isinstance(e, kind)), None)


def _client_certificate_alert(exc: BaseException) -> bool:
    """The server refused our client certificate (not: we refused its certificate).

    Either an OpenSSL alert of that kind, or any exception in the chain that says so with a true
    ``client_certificate_rejected`` attribute (how a native transport such as WinHTTP reports it).
    """
    if any(getattr(e, "client_certificate_rejected", False) is True for e in _chain(exc)):
        return True
    cause = _cause(exc, ssl.SSLError)
    if cause is None or isinstance(cause, ssl.SSLCertVerificationError):
        return False
    return getattr(cause, "reason", None) in _CLIENT_CERTIFICATE_ALERTS


def _transport_error(request: HttpRequest, exc: BaseException, correlation_id: str) -> MsiV2Error:
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if request.target == "imds":
        error_type = (
            ImdsUnreachableError if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout) else ImdsError
        )
        return error_type(
            f"no usable answer from IMDS {request.endpoint} ({reason}); is this an Azure VM, "
            "and is AZURE_POD_IDENTITY_AUTHORITY_HOST right if set?",
            endpoint=request.endpoint,
            correlation_id=correlation_id,
        )
    if _client_certificate_alert(exc):
        return TokenRequestError(
            f"the STS rejected our client certificate in the TLS handshake ({reason})",
            error=CLIENT_CERTIFICATE_REJECTED,
            correlation_id=correlation_id,
        )
    if _cause(exc, ssl.SSLCertVerificationError) is not None:
        reason += (
            "; the STS certificate did not verify (add its CA with ca_bundle= or $MSIV2_ASYNC_CA_BUNDLE)"
        )
    return TokenRequestError(
        f"the mTLS token request could not be completed ({reason})", correlation_id=correlation_id
    )


async def send(
    client: httpx.AsyncClient, request: HttpRequest, correlation_id: str
) -> HttpResponse | TransportFailure:
    """Send ``request`` and read at most 1 MiB of its body; failures below HTTP become TransportFailure."""
    timeout = httpx.Timeout(
        connect=request.connect_timeout,
        read=request.read_timeout,
        write=request.read_timeout,
        pool=request.connect_timeout,
    )
    started = time.perf_counter()
    try:
        async with client.stream(
            request.method, request.url, headers=dict(request.headers), content=request.body, timeout=timeout
        ) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise MalformedResponseError(
                        f"{request.endpoint} response exceeds {MAX_BODY_BYTES} bytes",
                        endpoint=request.endpoint,
                    )
    except (httpx.TransportError, ssl.SSLError, OSError) as exc:
        # httpcore does not wrap every TLS failure: a TLS 1.3 alert read after the handshake can
        # surface as a bare ssl.SSLError, a reset as an OSError.
        error = _transport_error(request, exc, correlation_id)
        error.__cause__ = exc
        _log.debug(
            "%s %s failed after %.1f ms: %s",
            request.method,
            request.url.split("?")[0],
            (time.perf_counter() - started) * 1000,
            type(exc).__name__,
        )
        return TransportFailure(error, timed_out=isinstance(exc, httpx.TimeoutException))
    except httpx.DecodingError:
        raise MalformedResponseError(
            f"{request.endpoint} response has an invalid content encoding", endpoint=request.endpoint
        ) from None
    _log.debug(
        "%s %s -> %d in %.1f ms (request id %s)",
        request.method,
        request.url.split("?")[0],
        response.status_code,
        (time.perf_counter() - started) * 1000,
        correlation_id,
    )
    headers = {name.lower(): value for name, value in response.headers.items()}
    return HttpResponse(status=response.status_code, headers=headers, body=bytes(body))
