"""The blocking API: one async :class:`MsiV2Client` driven from any number of ordinary threads.

Threading rules
---------------

* A :class:`MsiV2SyncClient` owns a private event-loop thread (an anyio blocking portal on asyncio)
  and one :class:`MsiV2Client` entered with ``async with`` on it, so background refresh works. Every
  method hands its work to that thread and blocks until it is done.
* Any number of threads may share one :class:`MsiV2SyncClient`: all calls meet in the one client, so
  its caches and single flight are shared (32 threads asking at once cause one certificate mint and
  one token request).
* Never call it from a thread that runs an event loop (a coroutine, a callback, the portal itself):
  that raises :class:`MsiV2Error`; there, ``await`` the async API instead.
* ``close()`` (or leaving ``with``) is idempotent and thread-safe; calls after it raise
  :class:`MsiV2Error`. Clients from :meth:`MsiV2SyncClient.http_client` belong to the caller and must
  be closed before the :class:`MsiV2SyncClient`.
* :func:`acquire_token_sync` keeps one default client per set of arguments for the whole process
  (created under a lock, closed at interpreter exit or by :func:`close_default_sync_clients`).
"""

from __future__ import annotations

import atexit
import functools
import threading
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

import anyio
import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._api import _freeze
from ._errors import MsiV2Error
from ._httpx import MtlsPopAuth, MtlsPopSyncTransport, _client_kwargs
from ._models import BindingCertificate, MtlsPopToken
from .client import DEFAULT_SCOPE, MsiV2Client


def _running_event_loop() -> bool:
    try:
        anyio.get_current_task()
    except RuntimeError:
        return False
    return True


def _refuse_event_loop_thread(what: str) -> None:
    if _running_event_loop():
        raise MsiV2Error(
            f"{what} blocks and must not run in an event loop thread; "
            "use the async API there (await MsiV2Client.acquire_token(...) or msiv2_async.acquire_token(...))"
        )


class MsiV2SyncClient:
    """A blocking :class:`MsiV2Client`: same arguments, same caches, safe to share between threads.

    See the module docstring for the threading rules.
    """

    def __init__(self, **client_kwargs: Any) -> None:
        _refuse_event_loop_thread("MsiV2SyncClient()")
        self._lock = threading.Lock()
        self._closed = False
        self._portal_context: AbstractContextManager[BlockingPortal] = start_blocking_portal("asyncio")
        portal = self._portal_context.__enter__()
        try:
            client: MsiV2Client = portal.call(functools.partial(MsiV2Client, **client_kwargs))
            self._client_context = portal.wrap_async_context_manager(client)
            self._client_context.__enter__()
        except BaseException:
            self._portal_context.__exit__(None, None, None)
            raise
        self._portal = portal
        self._client = client

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"MsiV2SyncClient({self._client!r}, {state})"

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    @property
    def proxy_from_environment(self) -> bool:
        """Whether resource calls honour ``HTTPS_PROXY`` and friends."""
        return self._client.proxy_from_environment

    def _call(self, what: str, work: Callable[[], Any]) -> Any:
        _refuse_event_loop_thread(f"MsiV2SyncClient.{what}()")
        if self._closed:
            raise MsiV2Error("this MsiV2SyncClient is closed; create a new one")
        try:
            return self._portal.call(work)
        except RuntimeError:
            if self._closed:
                raise MsiV2Error("this MsiV2SyncClient was closed during the call") from None
            raise

    def acquire_token(
        self,
        scope: str = DEFAULT_SCOPE,
        *,
        claims: str | None = None,
        force_refresh: bool = False,
        timeout: float | None = None,
    ) -> MtlsPopToken:
        """An mtls_pop token for ``scope`` (blocking); see :meth:`MsiV2Client.acquire_token`."""
        work = functools.partial(
            self._client.acquire_token, scope, claims=claims, force_refresh=force_refresh, timeout=timeout
        )
        token: MtlsPopToken = self._call("acquire_token", work)
        return token

    def get_binding_certificate(self, *, timeout: float | None = None) -> BindingCertificate:
        """The current binding certificate, minting one if needed (blocking)."""
        work = functools.partial(self._client.get_binding_certificate, timeout=timeout)
        certificate: BindingCertificate = self._call("get_binding_certificate", work)
        return certificate

    def mtls_sync_transport(self, certificate: BindingCertificate) -> httpx.BaseTransport:
        """A new blocking httpx transport presenting ``certificate``; the caller closes it."""
        _refuse_event_loop_thread("MsiV2SyncClient.mtls_sync_transport()")
        if self._closed:
            raise MsiV2Error("this MsiV2SyncClient is closed; create a new one")
        return self._client.mtls_sync_transport(certificate)

    def http_client(self, scope: str, **httpx_kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` calling resources with ``scope`` tokens over mTLS, across rotations.

        The blocking twin of :func:`msiv2_async.create_mtls_client`: :class:`MtlsPopAuth` and
        :class:`MtlsPopSyncTransport`, no redirects, ``trust_env`` as the client's
        ``proxy_from_environment``. The caller owns and closes it (before this client).
        """
        return httpx.Client(
            auth=MtlsPopAuth(self, scope),
            transport=MtlsPopSyncTransport(self),
            follow_redirects=False,
            **_client_kwargs(httpx_kwargs, self.proxy_from_environment),
        )

    def close(self) -> None:
        """Close the async client and stop its thread. Idempotent and thread-safe."""
        _refuse_event_loop_thread("MsiV2SyncClient.close()")
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._client_context.__exit__(None, None, None)
            finally:
                self._portal_context.__exit__(None, None, None)

    def __enter__(self) -> MsiV2SyncClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.close()


_DEFAULTS: dict[Hashable, MsiV2SyncClient] = {}
_DEFAULTS_LOCK = threading.Lock()
_atexit_registered = False


def default_sync_client(**client_kwargs: Any) -> MsiV2SyncClient:
    """The process-wide :class:`MsiV2SyncClient` for these arguments, created once (thread-safe)."""
    global _atexit_registered
    key = _freeze(client_kwargs)
    with _DEFAULTS_LOCK:
        client = _DEFAULTS.get(key)
        if client is None or client.closed:
            client = _DEFAULTS[key] = MsiV2SyncClient(**client_kwargs)
            if not _atexit_registered:
                atexit.register(close_default_sync_clients)
                _atexit_registered = True
        return client


def acquire_token_sync(
    scope: str = DEFAULT_SCOPE,
    *,
    claims: str | None = None,
    force_refresh: bool = False,
    timeout: float | None = None,
    **client_kwargs: Any,
) -> MtlsPopToken:
    """An mtls_pop token for ``scope``, blocking; the sync twin of :func:`msiv2_async.acquire_token`.

    The process keeps one default :class:`MsiV2SyncClient` per ``client_kwargs`` (the
    :class:`MsiV2Client` arguments), so repeated calls from any thread share its cache.
    """
    client = default_sync_client(**client_kwargs)
    return client.acquire_token(scope, claims=claims, force_refresh=force_refresh, timeout=timeout)


def close_default_sync_clients() -> None:
    """Close the default clients of :func:`acquire_token_sync` (also done at interpreter exit)."""
    with _DEFAULTS_LOCK:
        clients = list(_DEFAULTS.values())
        _DEFAULTS.clear()
    for client in clients:
        client.close()


__all__ = ["MsiV2SyncClient", "acquire_token_sync", "close_default_sync_clients", "default_sync_client"]
