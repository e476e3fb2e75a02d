"""azure-core transports over httpx that present the binding certificate of each request's token.

:class:`AsyncMtlsTransport` (an ``azure.core.pipeline.transport.AsyncHttpTransport``) and
:class:`MtlsTransport` (an ``HttpTransport``) send through :class:`MtlsPopTransport` /
:class:`MtlsPopSyncTransport`: the certificate comes from the ``msiv2_binding_certificate`` option that
:class:`AsyncMtlsPopPolicy` / :class:`MtlsPopPolicy` set, so the certificate presented always matches the
token's ``cnf``, across rotations. Only https URLs that are not link-local are reached; redirects are
left to the pipeline (azure-core's ``RedirectPolicy``), TLS verification cannot be switched off, and
``connection_timeout`` / ``read_timeout`` work per transport and per request as in azure-core.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, overload

import anyio
import httpx
from azure.core.exceptions import (
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import AsyncHttpResponse as LegacyAsyncHttpResponse
from azure.core.pipeline.transport import AsyncHttpTransport, HttpTransport
from azure.core.pipeline.transport import HttpRequest as LegacyHttpRequest
from azure.core.pipeline.transport import HttpResponse as LegacyHttpResponse
from azure.core.rest import AsyncHttpResponse, HttpRequest, HttpResponse

from .._errors import ConfigurationError, MsiV2Error
from .._httpx import CERTIFICATE_EXTENSION, MtlsPopSyncTransport, MtlsPopTransport
from .._models import BindingCertificate
from ..client import MsiV2Client
from ..sync import MsiV2SyncClient
from ._policy import CERTIFICATE_OPTION
from ._responses import AsyncRestResponse, LegacyAsyncResponse, LegacyResponse, RestResponse

DEFAULT_CONNECTION_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0


class _Settings:
    """Per-transport defaults and the translation of one request into an ``httpx.Request``."""

    def __init__(self, connection_timeout: float, read_timeout: float, data_block_size: int | None) -> None:
        self.connection_timeout = connection_timeout
        self.read_timeout = read_timeout
        self.block_size = data_block_size

    def build(
        self,
        http: httpx.AsyncClient | httpx.Client,
        request: HttpRequest | LegacyHttpRequest,
        config: dict[str, Any],
    ) -> httpx.Request:
        certificate = config.pop(CERTIFICATE_OPTION, None)
        if not isinstance(certificate, BindingCertificate):
            raise ConfigurationError(
                "the request names no binding certificate: put AsyncMtlsPopPolicy/MtlsPopPolicy in the "
                "pipeline in front of this transport"
            )
        verify = config.pop("connection_verify", True)
        if verify is not True:
            raise ConfigurationError(
                "TLS verification of resources cannot be changed here; trust extra CAs with "
                "MsiV2Client(ca_bundle=...)"
            )
        if config.pop("connection_cert", None) is not None:
            raise ConfigurationError("connection_cert cannot be used: the binding certificate is presented")
        if config.pop("proxies", None):
            raise ConfigurationError(
                "per-request proxies are not supported; use MsiV2Client(proxy_from_environment=True)"
            )
        connect = config.pop("connection_timeout", self.connection_timeout)
        read = config.pop("read_timeout", self.read_timeout)
        timeout = httpx.Timeout(connect=connect, read=read, write=read, pool=connect)
        return http.build_request(
            request.method,
            request.url,
            headers=dict(request.headers),
            timeout=timeout,
            extensions={CERTIFICATE_EXTENSION: certificate},
            **_body(request),
        )


def _body(request: HttpRequest | LegacyHttpRequest) -> dict[str, Any]:
    """httpx keyword arguments for the request body (bytes, text, stream, form or multipart)."""
    data: Any = getattr(request, "data", None)
    files: Any = getattr(request, "files", None)
    if files:
        return {"files": files, "data": data if isinstance(data, dict) else None}
    if isinstance(data, dict):
        return {"data": data}
    if data is None:
        return {}
    return {"content": data}


def _azure_error(exc: httpx.TransportError) -> Exception:
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return ServiceRequestTimeoutError(str(exc), error=exc)
    if isinstance(exc, httpx.TimeoutException):
        return ServiceResponseTimeoutError(str(exc), error=exc)
    if isinstance(exc, httpx.ConnectError | httpx.UnsupportedProtocol | httpx.ProxyError):
        return ServiceRequestError(str(exc), error=exc)
    return ServiceResponseError(str(exc), error=exc)


class AsyncMtlsTransport(AsyncHttpTransport[HttpRequest, AsyncHttpResponse]):
    """An azure-core async transport presenting the binding certificate of each request's token.

    ``client`` is the :class:`MsiV2Client` the credential uses (not closed by this transport). Runs on
    asyncio and trio. ``connection_timeout`` (default 10 s) and ``read_timeout`` (60 s) are defaults
    that a request can override with the usual azure-core keyword arguments.
    """

    def __init__(
        self,
        client: MsiV2Client,
        *,
        connection_timeout: float = DEFAULT_CONNECTION_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        data_block_size: int | None = None,
    ) -> None:
        self._client = client
        self._settings = _Settings(connection_timeout, read_timeout, data_block_size)
        self._http: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"AsyncMtlsTransport({self._client!r})"

    async def open(self) -> None:
        """Create the httpx client (idempotent)."""
        if self._http is None:
            self._http = httpx.AsyncClient(
                transport=MtlsPopTransport(self._client),
                follow_redirects=False,
                trust_env=False,
            )

    async def close(self) -> None:
        """Close the httpx client and every mTLS connection (idempotent; ``open`` starts anew)."""
        http, self._http = self._http, None
        if http is not None:
            with anyio.CancelScope(shield=True):
                await http.aclose()

    async def __aenter__(self) -> AsyncMtlsTransport:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.close()

    async def sleep(self, duration: float) -> None:
        """Sleep on the running event loop (asyncio or trio)."""
        await anyio.sleep(duration)

    @overload
    async def send(
        self, request: HttpRequest, *, stream: bool = False, **config: Any
    ) -> AsyncHttpResponse: ...

    @overload
    async def send(
        self, request: LegacyHttpRequest, *, stream: bool = False, **config: Any
    ) -> LegacyAsyncHttpResponse: ...

    async def send(
        self, request: HttpRequest | LegacyHttpRequest, *, stream: bool = False, **config: Any
    ) -> AsyncHttpResponse | LegacyAsyncHttpResponse:
        """Send ``request`` over mTLS; the body is read unless ``stream=True``."""
        await self.open()
        assert self._http is not None
        http_request = self._settings.build(self._http, request, config)
        try:
            internal = await self._http.send(http_request, stream=True)
        except httpx.TransportError as exc:
            raise _azure_error(exc) from exc
        if isinstance(request, LegacyHttpRequest):
            legacy = LegacyAsyncResponse(request, internal, self._settings.block_size)
            if not stream:
                await legacy.load_body()
            return legacy
        response = AsyncRestResponse(request, internal, self._settings.block_size)
        if not stream:
            await response.read()
        return response


class MtlsTransport(HttpTransport[HttpRequest, HttpResponse]):
    """An azure-core sync transport presenting the binding certificate of each request's token.

    ``client`` is the :class:`MsiV2SyncClient` the credential uses (not closed by this transport).
    Thread-safe like ``httpx.Client``.
    """

    def __init__(
        self,
        client: MsiV2SyncClient,
        *,
        connection_timeout: float = DEFAULT_CONNECTION_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        data_block_size: int | None = None,
    ) -> None:
        self._client = client
        self._settings = _Settings(connection_timeout, read_timeout, data_block_size)
        self._http: httpx.Client | None = None

    def __repr__(self) -> str:
        return f"MtlsTransport({self._client!r})"

    def open(self) -> None:
        """Create the httpx client (idempotent)."""
        if self._http is None:
            if self._client.closed:
                raise MsiV2Error("the MsiV2SyncClient of this transport is closed")
            self._http = httpx.Client(
                transport=MtlsPopSyncTransport(self._client),
                follow_redirects=False,
                trust_env=self._client.proxy_from_environment,
            )

    def close(self) -> None:
        """Close the httpx client and every mTLS connection (idempotent; ``open`` starts anew)."""
        http, self._http = self._http, None
        if http is not None:
            http.close()

    def __enter__(self) -> MtlsTransport:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.close()

    @overload
    def send(self, request: HttpRequest, *, stream: bool = False, **config: Any) -> HttpResponse: ...

    @overload
    def send(
        self, request: LegacyHttpRequest, *, stream: bool = False, **config: Any
    ) -> LegacyHttpResponse: ...

    def send(
        self, request: HttpRequest | LegacyHttpRequest, *, stream: bool = False, **config: Any
    ) -> HttpResponse | LegacyHttpResponse:
        """Send ``request`` over mTLS; the body is read unless ``stream=True``."""
        self.open()
        assert self._http is not None
        http_request = self._settings.build(self._http, request, config)
        try:
            internal = self._http.send(http_request, stream=True)
        except httpx.TransportError as exc:
            raise _azure_error(exc) from exc
        if isinstance(request, LegacyHttpRequest):
            legacy = LegacyResponse(request, internal, self._settings.block_size)
            if not stream:
                legacy.body()
            return legacy
        response = RestResponse(request, internal, self._settings.block_size)
        if not stream:
            response.read()
        return response
