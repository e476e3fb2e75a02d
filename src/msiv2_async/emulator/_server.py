"""The :class:`Emulator`: three aiohttp listeners on one private event loop in a background thread."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any

import anyio.to_thread
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ._ca import Authority, new_rsa_key, x5t_s256
from ._control import CONTROL_PREFIX, reset_all
from ._imds import Imds
from ._models import (
    DEFAULT_TENANT_ID,
    DEFAULT_USER_ASSIGNED,
    DEFAULT_VM_ID,
    SYSTEM_IDENTITY,
    Fault,
    Identity,
)
from ._resource import Resource
from ._state import Settings, State
from ._sts import Sts
from ._tls import ServerContexts

DEFAULT_AUDIENCES = ("https://graph.microsoft.com", "https://management.azure.com", "https://vault.azure.net")
"""Audiences the resource accepts by default, besides its own base URL."""

_START_TIMEOUT = 30.0
_SHUTDOWN_TIMEOUT = 0.1


@dataclass
class _Running:
    """Everything that exists only between start() and stop()."""

    thread: threading.Thread
    loop: asyncio.AbstractEventLoop
    runners: list[web.AppRunner]
    directory: str
    authority: Authority
    sts_key: rsa.RSAPrivateKey
    imds_port: int
    sts_port: int
    resource_port: int


@dataclass
class _Prepared:
    """Output of the blocking start-up step, consumed by the async one."""

    running: _Running
    tls: ServerContexts
    sockets: list[socket.socket]


def _listen(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET
    return socket.create_server((host, port), family=family)


class Emulator:
    """A local Azure IMDS (MSI v2) + Entra mTLS STS + mTLS-bound resource, with real TLS.

    IMDS speaks plain HTTP; STS and resource speak HTTPS with a server certificate from the emulator CA
    (SAN IP 127.0.0.1 and DNS localhost) and request a client certificate (``ssl.CERT_OPTIONAL``) that must
    chain to the same CA. A client certificate from any other CA therefore fails in the TLS handshake and
    never reaches a handler; a connection without one reaches the handlers, which answer AADSTS392200
    (STS) or 401 (resource).

    The listeners run on an asyncio loop in a background thread, so the emulator works from synchronous
    code and from asyncio or trio code alike (``async with`` hands start/stop to a worker thread).
    ``certificate_lifetime``, ``token_lifetime``, ``require_attestation``, ``sts_tls`` and ``resource_tls``
    may be changed while it runs.

    Faults: :meth:`inject` queues :class:`Fault` objects per endpoint; :attr:`sts_tls`,
    :attr:`resource_tls` and :meth:`reject_client_certificates` break TLS; the control API under
    :attr:`control_url` does the same over HTTP (see the package docstring). :meth:`stop` returns quickly
    even with hanging, slowloris or endless answers in progress: it aborts open connections and cancels
    and awaits every task before the loop closes.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        imds_port: int = 0,
        sts_port: int = 0,
        resource_port: int = 0,
        tenant_id: str = DEFAULT_TENANT_ID,
        certificate_lifetime: timedelta = timedelta(days=7),
        token_lifetime: timedelta = timedelta(hours=24),
        require_attestation: bool = False,
        user_assigned: Sequence[Identity] = (DEFAULT_USER_ASSIGNED,),
        resource_audiences: Sequence[str] | None = None,
    ) -> None:
        """Configure the emulator; nothing is generated or bound until :meth:`start`.

        Ports 0 pick free ports. ``resource_audiences`` None means :data:`DEFAULT_AUDIENCES` plus the
        resource's own base URL ``https://<host>:<port>``; a sequence replaces that list entirely.
        """
        identities = tuple(user_assigned)
        for identity in identities:
            if not identity.user_assigned:
                raise ValueError(f"identity {identity.client_id} in user_assigned has user_assigned=False")
        client_ids = [identity.client_id.lower() for identity in (SYSTEM_IDENTITY, *identities)]
        if len(set(client_ids)) != len(client_ids):
            raise ValueError("identities must have distinct client ids")
        self._host = host
        self._ports = (imds_port, sts_port, resource_port)
        self._audiences = None if resource_audiences is None else tuple(resource_audiences)
        self._settings = Settings(
            tenant_id=tenant_id,
            vm_id=DEFAULT_VM_ID,
            system_identity=SYSTEM_IDENTITY,
            user_assigned=identities,
            certificate_lifetime=certificate_lifetime,
            token_lifetime=token_lifetime,
            require_attestation=require_attestation,
        )
        self._state = State()
        self._lifecycle = threading.Lock()
        self._running: _Running | None = None

    # -- configuration -------------------------------------------------------------------------------

    @property
    def system_identity(self) -> Identity:
        """The VM's system-assigned identity (selected when IMDS gets no identity selector)."""
        return self._settings.system_identity

    @property
    def user_assigned(self) -> tuple[Identity, ...]:
        """The user-assigned identities (selectable by client_id, object_id, mi_res_id or msi_res_id)."""
        return self._settings.user_assigned

    @property
    def tenant_id(self) -> str:
        """The tenant of all identities; goes into the CSR/certificate DC and the token URL."""
        return self._settings.tenant_id

    @property
    def vm_id(self) -> str:
        """The ``cuId.vmId`` getplatformmetadata reports (the CSR attribute must carry it)."""
        return self._settings.vm_id

    @property
    def certificate_lifetime(self) -> timedelta:
        """notAfter of an issued certificate is ``now + certificate_lifetime``."""
        return self._settings.certificate_lifetime

    @certificate_lifetime.setter
    def certificate_lifetime(self, value: timedelta) -> None:
        self._settings.certificate_lifetime = value

    @property
    def token_lifetime(self) -> timedelta:
        """``expires_in`` of issued access tokens (a negative value issues expired tokens)."""
        return self._settings.token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, value: timedelta) -> None:
        self._settings.token_lifetime = value

    @property
    def require_attestation(self) -> bool:
        """Whether issuecredential insists on a non-empty ``attestation_token`` (an "attested" CU)."""
        return self._settings.require_attestation

    @require_attestation.setter
    def require_attestation(self, value: bool) -> None:
        self._settings.require_attestation = value

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Generate the CA and keys, bind the three listeners and return once all of them accept."""
        with self._lifecycle:
            if self._running is not None:
                raise RuntimeError("the emulator is already running")
            ready = threading.Event()
            outcome: dict[str, Any] = {}
            thread = threading.Thread(
                target=self._thread_main, args=(ready, outcome), name="msiv2-emulator", daemon=True
            )
            thread.start()
            if not ready.wait(_START_TIMEOUT):
                raise RuntimeError("the emulator did not start in time")
            if "error" in outcome:
                thread.join()
                raise RuntimeError("the emulator failed to start") from outcome["error"]
            self._running = outcome["running"]

    def stop(self) -> None:
        """Close the listeners, end the thread and remove the temporary directory (idempotent)."""
        with self._lifecycle:
            running, self._running = self._running, None
            if running is None:
                return
            try:
                future = asyncio.run_coroutine_threadsafe(_cleanup(running.runners), running.loop)
                future.result(timeout=_START_TIMEOUT)
            finally:
                running.loop.call_soon_threadsafe(running.loop.stop)
                running.thread.join(_START_TIMEOUT)
                shutil.rmtree(running.directory, ignore_errors=True)

    def _thread_main(self, ready: threading.Event, outcome: dict[str, Any]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            try:
                outcome["running"] = loop.run_until_complete(self._setup(self._prepare(loop)))
            except BaseException as exc:
                outcome["error"] = exc
                return
            finally:
                ready.set()
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(_cancel_other_tasks())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def _prepare(self, loop: asyncio.AbstractEventLoop) -> _Prepared:
        """Blocking part of start-up, run in the emulator thread: keys, CA file, TLS context, sockets."""
        directory = tempfile.mkdtemp(prefix="msiv2-emulator-")
        sockets: list[socket.socket] = []
        try:
            hosts = tuple(dict.fromkeys(("127.0.0.1", "localhost", self._host)))
            authority = Authority(hosts)
            sts_key = new_rsa_key()
            with open(os.path.join(directory, "ca.pem"), "wb") as handle:
                handle.write(authority.ca_pem)
            tls = ServerContexts.build(directory, authority, hosts)
            for port in self._ports:
                sockets.append(_listen(self._host, port))
        except BaseException:
            for sock in sockets:
                sock.close()
            shutil.rmtree(directory, ignore_errors=True)
            raise
        ports = [int(sock.getsockname()[1]) for sock in sockets]
        running = _Running(threading.current_thread(), loop, [], directory, authority, sts_key, *ports)
        return _Prepared(running, tls, sockets)

    async def _setup(self, prepared: _Prepared) -> _Running:
        running = prepared.running
        try:
            audiences = self._audiences
            if audiences is None:
                audiences = (*DEFAULT_AUDIENCES, self._base_url("https", running.resource_port))
            sts_url = self._base_url("https", running.sts_port)
            state, settings, authority = self._state, self._settings, running.authority
            decoy_x5t = x5t_s256(authority.certificate.public_bytes(serialization.Encoding.DER))
            imds = Imds(settings, state, authority, lambda: sts_url, running.sts_key)
            apps = (
                (imds.application(), None),
                (
                    Sts(settings, state, running.sts_key, decoy_x5t).application(),
                    prepared.tls.listener(state, "token"),
                ),
                (
                    Resource(state, running.sts_key.public_key(), audiences).application(),
                    prepared.tls.listener(state, "resource"),
                ),
            )
            for (app, context), sock in zip(apps, prepared.sockets, strict=True):
                app.middlewares.insert(0, _tracker(state))
                runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
                await runner.setup()
                running.runners.append(runner)
                await web.SockSite(runner, sock, ssl_context=context).start()
            return running
        except BaseException:
            await _cleanup(running.runners)
            for sock in prepared.sockets:
                sock.close()
            shutil.rmtree(running.directory, ignore_errors=True)
            raise

    def _base_url(self, scheme: str, port: int) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{port}"

    def _require_running(self) -> _Running:
        running = self._running
        if running is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return running

    def __enter__(self) -> Emulator:
        """Start the emulator."""
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the emulator."""
        self.stop()

    async def __aenter__(self) -> Emulator:
        """Start the emulator from a worker thread (works on asyncio and trio)."""
        await anyio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the emulator from a worker thread."""
        await anyio.to_thread.run_sync(self.stop)

    # -- addresses and trust -------------------------------------------------------------------------

    @property
    def imds_url(self) -> str:
        """``http://127.0.0.1:<port>``: the IMDS base URL (no trailing slash)."""
        return self._base_url("http", self._require_running().imds_port)

    @property
    def sts_url(self) -> str:
        """``https://127.0.0.1:<port>``: what issuecredential returns as ``mtls_authentication_endpoint``."""
        return self._base_url("https", self._require_running().sts_port)

    @property
    def resource_url(self) -> str:
        """``https://127.0.0.1:<port>/v1.0/applications``: a URL of the mTLS resource."""
        return self._base_url("https", self._require_running().resource_port) + "/v1.0/applications"

    @property
    def ca_pem(self) -> bytes:
        """The emulator CA certificate (PEM); it signs the server certificate and all client certificates."""
        return self._require_running().authority.ca_pem

    @property
    def ca_certificate(self) -> x509.Certificate:
        """The emulator CA certificate."""
        return self._require_running().authority.certificate

    @property
    def ca_bundle_path(self) -> str:
        """A PEM file holding :attr:`ca_pem` in a private temporary directory (removed by :meth:`stop`)."""
        return os.path.join(self._require_running().directory, "ca.pem")

    @property
    def allowed_token_host(self) -> str:
        """``127.0.0.1:<sts_port>``: the host:port a client must allow as token endpoint."""
        return self.sts_url.split("://", 1)[1]

    @property
    def sts_public_key(self) -> rsa.RSAPublicKey:
        """The key that verifies access tokens the STS issues."""
        return self._require_running().sts_key.public_key()

    def env(self) -> dict[str, str]:
        """Environment variables that point an msiv2_async client at this emulator."""
        return {
            "AZURE_POD_IDENTITY_AUTHORITY_HOST": self.imds_url,
            "MSIV2_ASYNC_CA_BUNDLE": self.ca_bundle_path,
            "MSIV2_ASYNC_ALLOWED_TOKEN_HOSTS": self.allowed_token_host,
        }

    # -- observation and fault injection -------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """Snapshot of the counters.

        Requests per endpoint (:data:`ENDPOINTS`: getplatformmetadata, issuecredential, token, resource,
        v1_token, each counted whether or not a fault answers it), then request hygiene on IMDS:
        ``metadata_header_missing`` (no ``Metadata: true``; a discovery probe does this on purpose),
        ``forwarded_for`` (an ``X-Forwarded-For`` header) and ``rejected_requests`` (their sum), and the
        deliberate TLS rejections ``token_handshake_rejections`` / ``resource_handshake_rejections``.
        Control requests (``/_emulator/...``) are never counted.
        """
        return self._state.snapshot()

    def reset_stats(self) -> None:
        """Set all counters to zero."""
        self._state.reset()

    def clear_faults(self) -> None:
        """Drop the faults still queued for every endpoint."""
        self._state.clear_faults()

    def reset(self) -> None:
        """Counters to zero, queued faults dropped, pending handshake rejections cancelled."""
        reset_all(self._state)

    def inject(self, endpoint: str, *faults: Fault) -> None:
        """Queue faults for ``endpoint`` (one of :data:`ENDPOINTS`); each takes one later request.

        Raises ValueError for an unknown endpoint or a fault that does not apply to it (``certificate``
        outside issuecredential, ``token`` outside token, ``handshake_reject`` outside token/resource).
        """
        self._state.queue(endpoint, faults)

    @property
    def sts_tls(self) -> str:
        """How the STS listener does TLS for new connections: one of :data:`TLS_MODES`.

        ``"normal"``; ``"unknown_ca"`` (server certificate from a CA the client does not trust);
        ``"wrong_hostname"`` (certificate for wrong-hostname.invalid / 127.0.0.2 only); ``"tls11_only"``
        (the server speaks TLS 1.0/1.1 only). May be set before start and while running.
        """
        return self._state.tls_mode("token")

    @sts_tls.setter
    def sts_tls(self, mode: str) -> None:
        self._state.set_tls_mode("token", mode)

    @property
    def resource_tls(self) -> str:
        """Like :attr:`sts_tls`, for the resource listener."""
        return self._state.tls_mode("resource")

    @resource_tls.setter
    def resource_tls(self, mode: str) -> None:
        self._state.set_tls_mode("resource", mode)

    def reject_client_certificates(self, n: int) -> None:
        """Make the next ``n`` TLS handshakes on the STS reject the client certificate (0 cancels).

        The STS then requires a client certificate and trusts only a foreign CA, so OpenSSL aborts the
        handshake with an ``unknown ca`` alert; each is counted in ``stats["token_handshake_rejections"]``.
        """
        self._state.set_rejections("token", n)

    def sentinels(self) -> list[str]:
        """Every secret string handed out so far, in order: each access token (STS and MSI v1), its
        signature part, its ``uti`` claim ``SENTINEL-AT-<random>``, and the prefix a ``"truncated"`` token
        fault sent. Grep logs, exception texts and files for these to prove nothing leaks."""
        return self._state.secret_list()

    @property
    def active_requests(self) -> int:
        """Requests whose handler is still running (a hanging, slowloris or endless answer counts until its
        client disconnects); control requests are not included."""
        with self._state.lock:
            return self._state.active

    @property
    def control_url(self) -> str:
        """``http://127.0.0.1:<imds port>/_emulator``: the base of the control API."""
        return self.imds_url + CONTROL_PREFIX.rstrip("/")

    @property
    def issued_certificates(self) -> list[x509.Certificate]:
        """Every certificate IMDS issued, in order (the live list; appended under a lock)."""
        return self._state.issued_certificates

    @property
    def resource_log(self) -> list[dict[str, Any]]:
        """Per resource request: ``presented_x5t``, ``cnf_x5t``, ``scheme`` and ``status`` (the live list)."""
        return self._state.resource_log


def _tracker(state: State) -> Any:
    """Middleware counting the requests being handled (control requests excluded)."""

    @web.middleware
    async def track(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            response: web.StreamResponse = await handler(request)
            return response
        state.enter()
        try:
            response = await handler(request)
            return response
        finally:
            state.leave()

    return track


async def _cancel_other_tasks() -> None:
    """Cancel every task of this loop but the current one, and wait until they have all finished."""
    current = asyncio.current_task()
    while True:
        pending = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
        if not pending:
            return
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _cleanup(runners: list[web.AppRunner]) -> None:
    """Stop quickly: stop accepting, abort every open connection, cancel the handlers, close the runners.

    Aborting first means a hanging, slowloris or endless answer cannot hold the stop up, and cancelling
    and awaiting every task leaves nothing pending when the loop closes.
    """
    for runner in runners:
        for site in list(runner.sites):
            await site.stop()
    for runner in runners:
        server = runner.server
        for handler in server.connections if server is not None else ():
            transport = handler.transport
            if transport is not None:
                transport.abort()
    await asyncio.sleep(0)
    await _cancel_other_tasks()
    for runner in reversed(runners):
        await runner.cleanup()
    await _cancel_other_tasks()
