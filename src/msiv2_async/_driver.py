"""Running sans-IO flows: performing their effects with httpx, anyio and the key backend."""

from __future__ import annotations

import random
import ssl
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import httpx

from . import _http
from ._clock import Clock
from ._effects import Attest, Effect, HttpRequest, OpenKey, Sign, Sleep
from ._errors import BackendError, MsiV2Error
from ._logging import get_logger
from ._models import Binding
from .backends import KeyBackend, TlsSettings
from .backends.software import server_verifying_context

T = TypeVar("T")
_log = get_logger("msiv2_async.retry")


@dataclass(frozen=True)
class Step:
    """One timed step of an acquisition, reported to a ``step_observer``.

    Names: ``imds_setup`` and ``mtls_setup`` (building HTTP clients), ``getplatformmetadata``,
    ``key``, ``csr_sign``, ``attest``, ``issuecredential``, ``token`` (includes the TLS handshake
    when the connection is new).
    """

    name: str
    milliseconds: float


def _step_name(effect: Effect) -> str:
    if isinstance(effect, HttpRequest):
        return effect.endpoint
    if isinstance(effect, OpenKey):
        return "key"
    if isinstance(effect, Sign):
        return "csr_sign"
    return "attest"


class EffectRunner:
    """Owns the HTTP clients (IMDS; one mTLS client per binding certificate) and drives flows."""

    def __init__(
        self,
        backend: KeyBackend,
        tls: TlsSettings,
        imds_endpoint: str,
        imds_transport: httpx.AsyncBaseTransport | None,
        step_observer: Callable[[Step], None] | None,
        clock: Clock,
        jitter: float,
        proxy_from_environment: bool = False,
    ) -> None:
        self.proxy_from_environment = proxy_from_environment
        self._clock = clock
        self._jitter = jitter
        self.backend = backend
        self.tls = tls
        self._imds_endpoint = imds_endpoint
        self._imds_transport = imds_transport
        self._imds: httpx.AsyncClient | None = None
        self._sts_clients: dict[str, httpx.AsyncClient] = {}
        self._setup_lock = anyio.Lock()
        self._step_observer = step_observer

    def _observe(self, name: str, started: float) -> None:
        if self._step_observer is not None:
            self._step_observer(Step(name, (time.perf_counter() - started) * 1000))

    async def run(self, flow: Generator[Effect, Any, T], correlation_id: str) -> T:
        """Drive ``flow`` to completion; errors of an effect are thrown into the flow."""
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = flow.throw(error) if error is not None else flow.send(result)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            result, error = None, None
            try:
                result = await self.perform(effect, correlation_id)
            except MsiV2Error as exc:
                error = exc

    async def perform(self, effect: Effect, correlation_id: str) -> Any:
        """Perform one effect and return its result."""
        if isinstance(effect, HttpRequest):
            client = await self._client_for(effect)
            started = time.perf_counter()
            try:
                return await _http.send(client, effect, correlation_id)
            finally:
                self._observe(effect.endpoint, started)
        if isinstance(effect, Sleep):
            return await self._sleep(effect)
        started = time.perf_counter()
        try:
            if isinstance(effect, OpenKey):
                return await anyio.to_thread.run_sync(self.backend.open_key, effect.key_name)
            if isinstance(effect, Sign):
                return await anyio.to_thread.run_sync(self.backend.sign, effect.data)
            return await anyio.to_thread.run_sync(self._attest, effect)
        except MsiV2Error:
            raise
        except Exception as exc:
            raise BackendError(
                f"backend {self.backend.name!r} failed during {_step_name(effect)}: {type(exc).__name__}"
            ) from exc
        finally:
            self._observe(_step_name(effect), started)

    async def _sleep(self, effect: Sleep) -> None:
        """Back off, unless the caller's deadline would pass first: then give up with the real error."""
        delay = effect.seconds
        if self._jitter:
            delay *= random.uniform(1 - self._jitter, 1 + self._jitter)
        if anyio.current_time() + delay >= anyio.current_effective_deadline():
            raise effect.give_up_with
        _log.info("%s", effect.reason)
        await self._clock.sleep(delay)

    def _attest(self, effect: Attest) -> str | None:
        return self.backend.attest(endpoint=effect.endpoint, client_id=effect.client_id)

    def _imds_tls(self) -> ssl.SSLContext:
        """IMDS speaks plain http: a verifying context that trusts nothing suffices and costs nothing.

        An https override of the IMDS endpoint gets the full verifying context instead.
        """
        if self._imds_endpoint.startswith("https:"):
            return server_verifying_context(self.tls)
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)

    async def _client_for(self, request: HttpRequest) -> httpx.AsyncClient:
        if request.binding is not None:
            client = self._sts_clients.get(request.binding.certificate.thumbprint_sha256)
        else:
            client = self._imds
        if client is not None:
            return client
        async with self._setup_lock:  # concurrent flights must not build (and leak) a second client
            if request.binding is not None:
                return await self._sts_client(request.binding)
            if self._imds is None:
                started = time.perf_counter()
                self._imds = await anyio.to_thread.run_sync(
                    _http.imds_client, self._imds_tls, self._imds_transport
                )
                self._observe("imds_setup", started)
            return self._imds

    async def _sts_client(self, binding: Binding) -> httpx.AsyncClient:
        thumbprint = binding.certificate.thumbprint_sha256
        client = self._sts_clients.get(thumbprint)
        if client is None:
            started = time.perf_counter()
            transport = await self.mtls_transport(binding.certificate.der)
            client = httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)
            self._sts_clients[thumbprint] = client
            self._observe("mtls_setup", started)
        return client

    async def mtls_transport(self, certificate_der: bytes) -> httpx.AsyncBaseTransport:
        """The backend's mTLS transport for ``certificate_der``, built in a worker thread."""
        return await anyio.to_thread.run_sync(self.backend.mtls_transport, certificate_der, self.tls)

    async def retire_certificate(self, thumbprint: str) -> None:
        """Close the STS connections that present the certificate ``thumbprint``."""
        client = self._sts_clients.pop(thumbprint, None)
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    def abandon(self) -> None:
        """Forget the HTTP clients of a loop we can no longer reach (another loop, or before a fork)."""
        self._sts_clients.clear()
        self._imds = None
        self.backend.close()

    async def aclose(self) -> None:
        """Close every HTTP client, then release the backend."""
        with anyio.CancelScope(shield=True):
            clients = [*self._sts_clients.values(), *([self._imds] if self._imds else [])]
            self._sts_clients.clear()
            self._imds = None
            for client in clients:
                await client.aclose()
            await anyio.to_thread.run_sync(self.backend.close)
