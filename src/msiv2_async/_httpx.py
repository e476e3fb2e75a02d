"""httpx helpers: an ``Auth`` that writes ``mtls_pop`` and a transport that presents the bound certificate.

``MtlsPopAuth`` asks the client for a token, sets ``Authorization: mtls_pop <token>`` and records the
certificate the token is bound to in ``request.extensions["msiv2_binding_certificate"]``.
``MtlsPopTransport`` reads that extension and sends the request through an mTLS transport presenting
exactly that certificate, so header and handshake always match, also while the certificate rotates:
one inner transport per certificate, created on first use, at most two kept (the most recently used); an
older one is closed as soon as no response from it is still open.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import anyio
import httpx

from ._challenge import claims_challenge
from ._errors import ConfigurationError, MsiV2Error
from ._logging import get_logger
from ._models import BindingCertificate, MtlsPopToken
from ._resource import check_resource_url
from .client import MsiV2Client

CERTIFICATE_EXTENSION = "msiv2_binding_certificate"
"""Key of ``request.extensions`` naming the :class:`BindingCertificate` a request's token is bound to."""

DEFAULT_KEEP = 2
_log = get_logger("msiv2_async.httpx")


class SyncTokenSource(Protocol):
    """What :class:`MtlsPopAuth` needs from a blocking client (:class:`MsiV2SyncClient` is one)."""

    def acquire_token(self, scope: str, *, claims: str | None = None) -> MtlsPopToken:
        """An mtls_pop token for ``scope``."""
        ...


class SyncTransportSource(Protocol):
    """What :class:`MtlsPopSyncTransport` needs from a blocking client (:class:`MsiV2SyncClient` is one)."""

    def mtls_sync_transport(self, certificate: BindingCertificate) -> httpx.BaseTransport:
        """A new blocking transport presenting ``certificate``."""
        ...


# -- authentication --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NeedToken:
    """Effect of the auth flow: get a token (with ``claims`` when answering a claims challenge)."""

    claims: str | None


def _authorize(request: httpx.Request, token: MtlsPopToken) -> None:
    request.headers["Authorization"] = token.authorization_header()
    request.extensions[CERTIFICATE_EXTENSION] = token.binding_certificate


class MtlsPopAuth(httpx.Auth):
    """``Authorization: mtls_pop <token>`` for ``scope``, retried once on a 401 claims challenge.

    With an :class:`MsiV2Client` it serves ``httpx.AsyncClient``; with an :class:`MsiV2SyncClient` it
    serves ``httpx.Client``. A 401 whose ``WWW-Authenticate`` carries ``claims="<base64 JSON>"`` makes it
    get a token with those claims and send the request once more; any other 401 (and a second 401) is
    returned as is. Pair it with :class:`MtlsPopTransport` (or use :func:`create_mtls_client`).
    """

    requires_request_body = True

    def __init__(self, client: MsiV2Client | SyncTokenSource, scope: str) -> None:
        self._client = client
        self._scope = scope

    def __repr__(self) -> str:
        return f"MtlsPopAuth(scope={self._scope!r})"

    def _flow(
        self, request: httpx.Request
    ) -> Generator[_NeedToken | httpx.Request, MtlsPopToken | httpx.Response, None]:
        token = yield _NeedToken(None)
        assert isinstance(token, MtlsPopToken)
        _authorize(request, token)
        response = yield request
        assert isinstance(response, httpx.Response)
        if response.status_code != 401:
            return
        claims = claims_challenge(response.headers.get("WWW-Authenticate"))
        if claims is None:
            return
        _log.info(
            "claims challenge from %s; retrying once with a token carrying the claims", request.url.host
        )
        token = yield _NeedToken(claims)
        assert isinstance(token, MtlsPopToken)
        _authorize(request, token)
        yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Drive the flow for ``httpx.Client``; tokens come from the blocking client."""
        client = self._client
        if isinstance(client, MsiV2Client):
            raise ConfigurationError(
                "MtlsPopAuth(MsiV2Client) serves httpx.AsyncClient only; for httpx.Client use "
                "MsiV2SyncClient.http_client() or MtlsPopAuth(MsiV2SyncClient(...), scope)"
            )
        request.read()
        flow = self._flow(request)
        step = next(flow)
        while True:
            result: MtlsPopToken | httpx.Response
            if isinstance(step, _NeedToken):
                result = client.acquire_token(self._scope, claims=step.claims)
            else:
                result = yield step
            try:
                step = flow.send(result)
            except StopIteration:
                return

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Drive the flow for ``httpx.AsyncClient``; tokens come from the async client."""
        client = self._client
        if not isinstance(client, MsiV2Client):
            raise ConfigurationError(
                "MtlsPopAuth with a blocking client serves httpx.Client only; "
                "use MtlsPopAuth(MsiV2Client, scope) for httpx.AsyncClient"
            )
        await request.aread()
        flow = self._flow(request)
        step = next(flow)
        while True:
            result: MtlsPopToken | httpx.Response
            if isinstance(step, _NeedToken):
                result = await client.acquire_token(self._scope, claims=step.claims)
            else:
                result = yield step
            try:
                step = flow.send(result)
            except StopIteration:
                return


# -- routing by certificate ------------------------------------------------------------------------

TransportT = TypeVar("TransportT")


@dataclass(eq=False)
class _Route(Generic[TransportT]):
    """One inner transport and the number of responses from it that are still open."""

    transport: TransportT
    active: int = 0
    retired: bool = False


class _Routes(Generic[TransportT]):
    """Inner transports by certificate thumbprint: the ``keep`` most recently used ones stay.

    Pure bookkeeping; every method returns the transports the caller must close now. A route pushed
    out while responses from it are open is retired and closed when the last of them closes.
    """

    def __init__(self, keep: int) -> None:
        if keep < 1:
            raise ConfigurationError("keep must be at least 1")
        self._keep = keep
        self._routes: OrderedDict[str, _Route[TransportT]] = OrderedDict()
        self._retiring: list[_Route[TransportT]] = []

    @property
    def thumbprints(self) -> list[str]:
        """The certificates with a live transport, oldest first."""
        return list(self._routes)

    def acquire(self, thumbprint: str) -> _Route[TransportT] | None:
        """The route for ``thumbprint`` with one more open response, or None if there is none."""
        route = self._routes.get(thumbprint)
        if route is not None:
            self._routes.move_to_end(thumbprint)
            route.active += 1
        return route

    def add(self, thumbprint: str, transport: TransportT) -> tuple[_Route[TransportT], list[TransportT]]:
        """Install a new acquired route; returns it and the transports to close."""
        route = _Route(transport, active=1)
        self._routes[thumbprint] = route
        to_close: list[TransportT] = []
        while len(self._routes) > self._keep:
            _, old = self._routes.popitem(last=False)
            if old.active:
                old.retired = True
                self._retiring.append(old)
            else:
                to_close.append(old.transport)
        return route, to_close

    def release(self, route: _Route[TransportT]) -> list[TransportT]:
        """One response of ``route`` closed; returns its transport if it is retired and now idle."""
        route.active -= 1
        if route.retired and route.active == 0 and route in self._retiring:
            self._retiring.remove(route)
            return [route.transport]
        return []

    def clear(self) -> list[TransportT]:
        """Forget every route; returns all transports (open responses then fail)."""
        transports = [route.transport for route in (*self._routes.values(), *self._retiring)]
        self._routes.clear()
        self._retiring.clear()
        return transports


def _certificate_of(request: httpx.Request) -> BindingCertificate:
    check_resource_url(request.url)
    certificate = request.extensions.get(CERTIFICATE_EXTENSION)
    if not isinstance(certificate, BindingCertificate):
        raise ConfigurationError(
            f"the request to {request.url.host} names no binding certificate "
            f"(request.extensions[{CERTIFICATE_EXTENSION!r}]); send it with MtlsPopAuth"
        )
    return certificate


class _ReleasingAsyncStream(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], Awaitable[None]]) -> None:
        self._stream = stream
        self._release: Callable[[], Awaitable[None]] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                await release()


class _ReleasingSyncStream(httpx.SyncByteStream):
    def __init__(self, stream: httpx.SyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class MtlsPopTransport(httpx.AsyncBaseTransport):
    """Sends each request over mTLS with the certificate its token is bound to.

    The certificate comes from ``request.extensions["msiv2_binding_certificate"]`` (set by
    :class:`MtlsPopAuth`); a request without one is refused, and so is any URL that is not https or is
    link-local (IMDS). Inner transports come from ``client.mtls_transport(certificate)``, one per
    certificate, at most ``keep`` (default 2) kept. Closing this transport closes them all; the client
    is not closed.
    """

    def __init__(self, client: MsiV2Client, *, keep: int = DEFAULT_KEEP) -> None:
        self._client = client
        self._routes: _Routes[httpx.AsyncBaseTransport] = _Routes(keep)
        self._creating = anyio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"MtlsPopTransport(certificates={self.certificates!r})"

    @property
    def certificates(self) -> list[str]:
        """Thumbprints of the certificates that have a live inner transport, oldest first."""
        return self._routes.thumbprints

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Route ``request`` through the inner transport for its certificate."""
        certificate = _certificate_of(request)
        route = await self._route(certificate)
        try:
            response = await route.transport.handle_async_request(request)
        except BaseException:
            await self._release(route)
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_ReleasingAsyncStream(response.stream, lambda: self._release(route)),
            extensions=response.extensions,
        )

    async def _route(self, certificate: BindingCertificate) -> _Route[httpx.AsyncBaseTransport]:
        self._check_open()
        thumbprint = certificate.thumbprint_sha256
        route = self._routes.acquire(thumbprint)
        if route is not None:
            return route
        async with self._creating:
            self._check_open()
            route = self._routes.acquire(thumbprint)
            if route is not None:
                return route
            transport = await self._client.mtls_transport(certificate)
            route, to_close = self._routes.add(thumbprint, transport)
        _log.debug("mTLS transport for certificate %s created", thumbprint)
        await _aclose_all(to_close)
        return route

    async def _release(self, route: _Route[httpx.AsyncBaseTransport]) -> None:
        await _aclose_all(self._routes.release(route))

    def _check_open(self) -> None:
        if self._closed:
            raise MsiV2Error("this MtlsPopTransport is closed")

    async def aclose(self) -> None:
        """Close every inner transport (idempotent)."""
        self._closed = True
        await _aclose_all(self._routes.clear())


async def _aclose_all(transports: list[httpx.AsyncBaseTransport]) -> None:
    with anyio.CancelScope(shield=True):
        for transport in transports:
            await transport.aclose()


class MtlsPopSyncTransport(httpx.BaseTransport):
    """The blocking counterpart of :class:`MtlsPopTransport`, for ``httpx.Client`` (thread-safe).

    ``client`` is an :class:`MsiV2SyncClient` (or anything with ``mtls_sync_transport(certificate)``).
    """

    def __init__(self, client: SyncTransportSource, *, keep: int = DEFAULT_KEEP) -> None:
        self._client = client
        self._routes: _Routes[httpx.BaseTransport] = _Routes(keep)
        self._lock = threading.Lock()
        self._creating = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"MtlsPopSyncTransport(certificates={self.certificates!r})"

    @property
    def certificates(self) -> list[str]:
        """Thumbprints of the certificates that have a live inner transport, oldest first."""
        with self._lock:
            return self._routes.thumbprints

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Route ``request`` through the inner transport for its certificate."""
        certificate = _certificate_of(request)
        route = self._route(certificate)
        try:
            response = route.transport.handle_request(request)
        except BaseException:
            self._release(route)
            raise
        assert isinstance(response.stream, httpx.SyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_ReleasingSyncStream(response.stream, lambda: self._release(route)),
            extensions=response.extensions,
        )

    def _route(self, certificate: BindingCertificate) -> _Route[httpx.BaseTransport]:
        thumbprint = certificate.thumbprint_sha256
        with self._lock:
            self._check_open()
            route = self._routes.acquire(thumbprint)
        if route is not None:
            return route
        with self._creating:
            with self._lock:
                self._check_open()
                route = self._routes.acquire(thumbprint)
            if route is not None:
                return route
            transport = self._client.mtls_sync_transport(certificate)
            with self._lock:
                route, to_close = self._routes.add(thumbprint, transport)
        _log.debug("mTLS transport for certificate %s created", thumbprint)
        _close_all(to_close)
        return route

    def _release(self, route: _Route[httpx.BaseTransport]) -> None:
        with self._lock:
            to_close = self._routes.release(route)
        _close_all(to_close)

    def _check_open(self) -> None:
        if self._closed:
            raise MsiV2Error("this MtlsPopSyncTransport is closed")

    def close(self) -> None:
        """Close every inner transport (idempotent)."""
        with self._lock:
            self._closed = True
            to_close = self._routes.clear()
        _close_all(to_close)


def _close_all(transports: list[httpx.BaseTransport]) -> None:
    for transport in transports:
        transport.close()


_RESERVED = ("auth", "transport", "mounts")


def _client_kwargs(httpx_kwargs: dict[str, Any], proxy_from_environment: bool) -> dict[str, Any]:
    for name in _RESERVED:
        if name in httpx_kwargs:
            raise ConfigurationError(f"{name}= cannot be set: the mTLS client brings its own")
    if httpx_kwargs.pop("follow_redirects", False):
        raise ConfigurationError("an mtls_pop client never follows redirects")
    if httpx_kwargs.pop("trust_env", False):
        raise ConfigurationError(
            "trust_env=True would route around the client certificate; use "
            "MsiV2Client(proxy_from_environment=True) to tunnel through HTTPS_PROXY"
        )
    httpx_kwargs["trust_env"] = False  # a proxy, if any, lives inside the mTLS transport
    return httpx_kwargs


def create_mtls_client(client: MsiV2Client, scope: str, **httpx_kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` calling resources with ``scope`` tokens over mTLS, across rotations.

    Auth is :class:`MtlsPopAuth`, the transport :class:`MtlsPopTransport`; redirects are never
    followed and ``trust_env`` follows ``client.proxy_from_environment``. Other keyword arguments go to
    ``httpx.AsyncClient`` (``base_url``, ``timeout``, ``headers``, ...). The caller owns and closes the
    returned client; ``client`` must stay open while it is used.
    """
    return httpx.AsyncClient(
        auth=MtlsPopAuth(client, scope),
        transport=MtlsPopTransport(client),
        follow_redirects=False,
        **_client_kwargs(httpx_kwargs, client.proxy_from_environment),
    )


__all__ = [
    "CERTIFICATE_EXTENSION",
    "MtlsPopAuth",
    "MtlsPopSyncTransport",
    "MtlsPopTransport",
    "SyncTokenSource",
    "SyncTransportSource",
    "create_mtls_client",
]
