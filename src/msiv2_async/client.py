"""``MsiV2Client``: the async driver that runs the sans-IO flow with httpx, anyio and a key backend."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import httpx

from . import _flow, _http, _imds, _sts
from ._effects import Attest, Effect, HttpRequest, OpenKey, Sign
from ._errors import BackendError, ConfigurationError, MsiV2Error, MsiV2TimeoutError
from ._models import Binding, BindingCertificate, ManagedIdentity, MtlsPopToken
from ._redact import fingerprint
from ._resource import ResourceGuardTransport
from .backends import KeyBackend, TlsSettings, get_backend

DEFAULT_SCOPE = "https://graph.microsoft.com/.default"
DEFAULT_TIMEOUT = 120.0
CA_BUNDLE_ENV = "MSIV2_ASYNC_CA_BUNDLE"

T = TypeVar("T")
_log = logging.getLogger("msiv2_async.client")


@dataclass(frozen=True)
class Step:
    """One timed step of an acquisition, reported to a ``step_observer``."""

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


class MsiV2Client:
    """Acquires mtls_pop tokens through Managed Identity v2; one instance per identity and event loop.

    Use it as an async context manager (or call :meth:`aclose`). Every argument has a default:

    - ``client_id`` / ``object_id`` / ``resource_id``: a user-assigned identity (at most one);
      system-assigned otherwise.
    - ``backend``: a backend name or instance; default ``$MSIV2_ASYNC_BACKEND`` or the best viable one.
    - ``attestation``: ``None`` attests when the backend can, ``True`` requires it, ``False`` never.
    - ``imds_endpoint``: default ``$AZURE_POD_IDENTITY_AUTHORITY_HOST`` or ``http://169.254.169.254``.
    - ``ca_bundle``: extra PEM CAs trusted for the STS and resources (``$MSIV2_ASYNC_CA_BUNDLE``).
    - ``allowed_token_hosts``: host patterns added to ``*.mtlsauth.microsoft.com``
      (and ``$MSIV2_ASYNC_ALLOWED_TOKEN_HOSTS``).
    - ``timeout``: overall deadline of one :meth:`acquire_token`, in seconds.
    - ``step_observer``: called with each timed :class:`Step` (key, csr_sign, getplatformmetadata, ...).
    """

    def __init__(
        self,
        *,
        client_id: str | None = None,
        object_id: str | None = None,
        resource_id: str | None = None,
        backend: str | KeyBackend | None = None,
        attestation: bool | None = None,
        imds_endpoint: str | None = None,
        ca_bundle: str | None = None,
        allowed_token_hosts: Iterable[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        verify_binding: bool = True,
        imds_transport: httpx.AsyncBaseTransport | None = None,
        step_observer: Callable[[Step], None] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        if client_id is None and object_id is None and resource_id is None:
            self.identity = ManagedIdentity.system_assigned()
        else:
            self.identity = ManagedIdentity.user_assigned(
                client_id=client_id, object_id=object_id, resource_id=resource_id
            )
        self._backend = get_backend(backend, env)
        if attestation and not self._backend.supports_attestation:
            raise ConfigurationError(
                f"attestation was required but backend {self._backend.name!r} cannot attest"
            )
        self._settings = _flow.FlowSettings(
            imds_endpoint=_imds.resolve_endpoint(imds_endpoint, env),
            identity=self.identity,
            allowed_token_hosts=_sts.allowed_token_hosts(allowed_token_hosts, env),
            backend_name=self._backend.name,
            attestation=self._backend.supports_attestation if attestation is None else attestation,
            verify_binding=verify_binding,
        )
        self._tls = TlsSettings(ca_bundle=ca_bundle or env.get(CA_BUNDLE_ENV) or None)
        self._timeout = timeout
        self._imds_transport = imds_transport
        self._imds: httpx.AsyncClient | None = None
        self._sts_clients: dict[str, httpx.AsyncClient] = {}
        self._step_observer = step_observer
        self._closed = False

    def __repr__(self) -> str:
        return f"MsiV2Client(identity={self.identity.describe()}, backend={self._backend.name!r})"

    @property
    def backend(self) -> KeyBackend:
        """The key backend in use."""
        return self._backend

    @property
    def imds_endpoint(self) -> str:
        """The resolved IMDS base URL."""
        return self._settings.imds_endpoint

    async def __aenter__(self) -> MsiV2Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every HTTP client and release the backend's key. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            clients = [*self._sts_clients.values(), *([self._imds] if self._imds else [])]
            self._sts_clients.clear()
            self._imds = None
            for client in clients:
                await client.aclose()
            await anyio.to_thread.run_sync(self._backend.close)

    async def close(self) -> None:
        """Alias of :meth:`aclose` (the Azure SDK name)."""
        await self.aclose()

    async def acquire_token(
        self, scope: str = DEFAULT_SCOPE, *, claims: str | None = None, timeout: float | None = None
    ) -> MtlsPopToken:
        """Run the whole MSI v2 flow and return an mtls_pop token bound to a fresh certificate.

        ``scope`` is a resource (``https://vault.azure.net``) or a ``.default`` scope; ``claims`` is
        passed to the STS; ``timeout`` overrides the client's deadline for this call.
        """
        self._check_open()
        correlation_id = str(uuid.uuid4())
        deadline = self._timeout if timeout is None else timeout
        flow = _flow.acquire(self._settings, scope, correlation_id, datetime.now(timezone.utc), claims)
        try:
            with anyio.fail_after(deadline):
                token = await self._drive(flow, correlation_id)
        except TimeoutError as exc:
            if isinstance(exc, MsiV2Error):
                raise
            raise MsiV2TimeoutError(
                f"acquire_token did not finish within {deadline} s (request id {correlation_id}); "
                "IMDS or the STS is slow or unreachable"
            ) from None
        _log.info(
            "acquired %s token for %s (identity %s, certificate %s, expires_on %d, token %s, request id %s)",
            token.token_type,
            token.scope,
            self.identity.describe(),
            token.binding_certificate.thumbprint_sha256,
            token.expires_on,
            fingerprint(token.access_token),
            correlation_id,
        )
        return token

    async def resource_client(self, token: MtlsPopToken, **httpx_kwargs: Any) -> httpx.AsyncClient:
        """An httpx client that calls resources over mTLS with ``token``'s certificate and header.

        Requests go only to https URLs that are not link-local (so the client cannot be turned against
        IMDS); redirects are not followed. The caller owns the client and closes it.
        """
        self._check_open()
        inner = await anyio.to_thread.run_sync(
            self._backend.mtls_transport, token.binding_certificate.der, self._tls
        )
        headers = httpx.Headers(httpx_kwargs.pop("headers", None))
        headers["Authorization"] = token.authorization_header()
        return httpx.AsyncClient(
            transport=ResourceGuardTransport(inner),
            headers=headers,
            follow_redirects=False,
            trust_env=False,
            **httpx_kwargs,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise MsiV2Error("this MsiV2Client is closed; create a new one")

    async def _drive(self, flow: Generator[Effect, Any, T], correlation_id: str) -> T:
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = flow.throw(error) if error is not None else flow.send(result)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            result, error = None, None
            started = time.perf_counter()
            try:
                result = await self._perform(effect, correlation_id)
            except MsiV2Error as exc:
                error = exc
            if self._step_observer is not None:
                self._step_observer(Step(_step_name(effect), (time.perf_counter() - started) * 1000))

    async def _perform(self, effect: Effect, correlation_id: str) -> Any:
        if isinstance(effect, HttpRequest):
            client = await self._client_for(effect)
            return await _http.send(client, effect, correlation_id)
        try:
            if isinstance(effect, OpenKey):
                return await anyio.to_thread.run_sync(self._backend.open_key, effect.key_name)
            if isinstance(effect, Sign):
                return await anyio.to_thread.run_sync(self._backend.sign, effect.data)
            return await anyio.to_thread.run_sync(self._attest, effect)
        except MsiV2Error:
            raise
        except Exception as exc:
            raise BackendError(
                f"backend {self._backend.name!r} failed during {_step_name(effect)}: {type(exc).__name__}"
            ) from exc

    def _attest(self, effect: Attest) -> str | None:
        return self._backend.attest(endpoint=effect.endpoint, client_id=effect.client_id)

    async def _client_for(self, request: HttpRequest) -> httpx.AsyncClient:
        if request.binding is None:
            if self._imds is None:
                self._imds = await anyio.to_thread.run_sync(_http.imds_client, self._imds_transport)
            return self._imds
        return await self._sts_client(request.binding)

    async def _sts_client(self, binding: Binding) -> httpx.AsyncClient:
        thumbprint = binding.certificate.thumbprint_sha256
        client = self._sts_clients.get(thumbprint)
        if client is None:
            transport = await anyio.to_thread.run_sync(
                self._backend.mtls_transport, binding.certificate.der, self._tls
            )
            client = httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)
            self._sts_clients[thumbprint] = client
        return client


async def acquire_token(
    scope: str = DEFAULT_SCOPE,
    *,
    client: MsiV2Client | None = None,
    claims: str | None = None,
    timeout: float | None = None,
    **client_kwargs: Any,
) -> MtlsPopToken:
    """Acquire an mtls_pop token with ``client``, or with a client built from ``client_kwargs``."""
    if client is not None:
        return await client.acquire_token(scope, claims=claims, timeout=timeout)
    async with MsiV2Client(**client_kwargs) as one_shot:
        return await one_shot.acquire_token(scope, claims=claims, timeout=timeout)


__all__ = ["DEFAULT_SCOPE", "BindingCertificate", "MsiV2Client", "Step", "acquire_token"]
