"""``MsiV2Client``: caches, single-flight and deadlines around the sans-IO flow."""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import anyio
import anyio.lowlevel
import httpx
from anyio.abc import TaskGroup

from . import _flow, _imds, _sts
from ._bindings import BindingKeeper
from ._cache import CachePolicy, CacheStats, TokenCache, TokenKey
from ._clock import Clock, SystemClock, utc
from ._driver import EffectRunner, Step
from ._errors import (
    ConfigurationError,
    MsiV2Error,
    MsiV2TimeoutError,
    MsiV2UnavailableError,
    TokenRequestError,
)
from ._logging import get_logger
from ._models import (
    BearerToken,
    Binding,
    BindingCertificate,
    Capabilities,
    ManagedIdentity,
    ManagedIdentitySource,
    MtlsPopToken,
    binding_rank,
)
from ._redact import fingerprint
from ._resource import ResourceGuardTransport
from ._retry import DEFAULT_RETRY, RetryPolicy
from ._singleflight import SingleFlight
from ._store import CACHE_DIR_ENV, BindingStore, FileBindingStore
from .backends import KeyBackend, TlsSettings, get_backend

DEFAULT_SCOPE = "https://graph.microsoft.com/.default"
MTLS_POP = "mtls_pop"
BEARER = "bearer"
DEFAULT_TIMEOUT = 120.0
DEFAULT_FAILURE_CACHE_SECONDS = 5.0
CA_BUNDLE_ENV = "MSIV2_ASYNC_CA_BUNDLE"
DISABLE_BACKEND_STORE_ENV = "MSIV2_ASYNC_DISABLE_BACKEND_STORE"

T = TypeVar("T")
AnyToken = MtlsPopToken | BearerToken
_log = get_logger("msiv2_async.client")
_NOTHING_HOT: dict[str, tuple[AnyToken, float]] = {}


class MsiV2Client:
    """Acquires mtls_pop tokens through Managed Identity v2; one instance per identity and event loop.

    Arguments (all optional):

    - ``client_id`` / ``object_id`` / ``resource_id``: a user-assigned identity (at most one);
      system-assigned otherwise.
    - ``backend``: a backend name or instance; default ``$MSIV2_ASYNC_BACKEND`` or the best viable one.
    - ``attestation``: ``None`` attests when the backend can, ``True`` requires it, ``False`` never.
    - ``imds_endpoint``: default ``$AZURE_POD_IDENTITY_AUTHORITY_HOST`` or ``http://169.254.169.254``.
    - ``ca_bundle``: extra PEM CAs trusted for the STS and resources (``$MSIV2_ASYNC_CA_BUNDLE``).
    - ``allowed_token_hosts``: host patterns added to ``*.mtlsauth.microsoft.com``
      (and ``$MSIV2_ASYNC_ALLOWED_TOKEN_HOSTS``).
    - ``timeout``: overall deadline of one :meth:`acquire_token`, in seconds.
    - ``cache_dir``: opt-in persistent cache of key and certificate shared by processes
      (``$MSIV2_ASYNC_CACHE_DIR``); or ``store``: any :class:`BindingStore`.
    - ``renewal_fraction``: share of a certificate's lifetime after which it is renewed (default 0.5).
    - ``failure_cache_seconds``: how long a failed flight's error is replayed to new callers (default 5;
      a throttling error is replayed for its ``retry_after`` instead, at most one hour).
    - ``retry``: a :class:`RetryPolicy` (IMDS back-off 1/2/4 s, 410 every 10 s for 70 s, STS one retry).
    - ``proxy_from_environment``: let the STS and resource calls tunnel through ``HTTPS_PROXY`` (or
      ``ALL_PROXY``, any case; ``NO_PROXY`` is not consulted) with the client certificate still presented
      end to end (default off). IMDS never uses a proxy.
    - ``min_binding_strength``: a floor (``"software"``, ``"keyguard"``) for mtls_pop tokens; a backend
      below it fails fast with :class:`MsiV2UnavailableError` before any request.
    - ``clock``: the time source of every cache decision (tests pass a fake one).
    - ``step_observer``: called with each timed :class:`Step` (key, csr_sign, getplatformmetadata, ...).

    Enter it with ``async with`` to get background refresh (otherwise a due token is refreshed by the
    caller that notices it, and the old token is returned if that fails).
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
        cache_dir: str | None = None,
        store: BindingStore | None = None,
        renewal_fraction: float = 0.5,
        failure_cache_seconds: float = DEFAULT_FAILURE_CACHE_SECONDS,
        retry: RetryPolicy | None = None,
        proxy_from_environment: bool = False,
        min_binding_strength: str = "none",
        clock: Clock | None = None,
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
        backend_instance = get_backend(backend, env)
        if attestation and not backend_instance.supports_attestation:
            raise ConfigurationError(
                f"attestation was required but backend {backend_instance.name!r} cannot attest"
            )
        self._settings = _flow.FlowSettings(
            imds_endpoint=_imds.resolve_endpoint(imds_endpoint, env),
            identity=self.identity,
            allowed_token_hosts=_sts.allowed_token_hosts(allowed_token_hosts, env),
            backend_name=backend_instance.name,
            attestation=backend_instance.supports_attestation if attestation is None else attestation,
            verify_binding=verify_binding,
            retry=retry or DEFAULT_RETRY,
        )
        try:
            self._policy = CachePolicy(renewal_fraction=renewal_fraction)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        binding_store = store or self._default_store(
            cache_dir or env.get(CACHE_DIR_ENV), backend_instance, env
        )
        tls = TlsSettings(
            ca_bundle=ca_bundle or env.get(CA_BUNDLE_ENV) or None,
            proxy=_environment_proxy(env) if proxy_from_environment else None,
        )
        self._clock: Clock = clock or SystemClock()
        self._runner = EffectRunner(
            backend_instance,
            tls,
            self._settings.imds_endpoint,
            imds_transport,
            step_observer,
            self._clock,
            self._settings.retry.jitter,
            proxy_from_environment,
        )
        self._timeout = timeout
        self._tokens = TokenCache()
        self._hot = self._tokens.hot  # the warm path's view (the dict is only ever emptied, never replaced)
        self._wall_time = self._clock.time
        self._stats = CacheStats()
        self._bindings = BindingKeeper(
            settings=self._settings,
            runner=self._runner,
            policy=self._policy,
            clock=self._clock,
            stats=self._stats,
            tokens=self._tokens,
            store=binding_store,
            slot=self._slot,
            failure_ttl=failure_cache_seconds,
        )
        self._token_flights: SingleFlight[tuple[str, str, str | None], AnyToken] = SingleFlight(
            self._clock, failure_cache_seconds
        )
        self._probes: SingleFlight[str, Capabilities] = SingleFlight(self._clock, 0)
        self._capabilities: Capabilities | None = None
        self._min_strength = min_binding_strength
        self._min_rank = binding_rank(min_binding_strength)
        self._task_group: TaskGroup | None = None
        self._closed = False
        self._loop: anyio.lowlevel.EventLoopToken | None = None
        self._pid = os.getpid()

    @staticmethod
    def _default_store(
        directory: str | None, backend: KeyBackend, environ: Mapping[str, str]
    ) -> BindingStore | None:
        """The cache directory's file store; else the backend's own store (KeyGuard: the certificate store)
        unless ``$MSIV2_ASYNC_DISABLE_BACKEND_STORE`` is set; else none."""
        if not directory:
            backend_store = getattr(backend, "binding_store", None)
            disabled = environ.get(DISABLE_BACKEND_STORE_ENV, "").strip().lower() in ("1", "true", "yes")
            if callable(backend_store) and not disabled:
                chosen: BindingStore = backend_store()
                return chosen
            return None
        store = FileBindingStore(directory)
        use_key_directory = getattr(backend, "use_key_directory", None)
        if callable(use_key_directory):
            use_key_directory(store.directory)
        return store

    def __repr__(self) -> str:
        return f"MsiV2Client(identity={self.identity.describe()}, backend={self.backend.name!r})"

    @property
    def backend(self) -> KeyBackend:
        """The key backend in use."""
        return self._runner.backend

    @property
    def imds_endpoint(self) -> str:
        """The resolved IMDS base URL."""
        return self._settings.imds_endpoint

    @property
    def closed(self) -> bool:
        """True after :meth:`aclose`."""
        return self._closed

    @property
    def cache_stats(self) -> dict[str, int]:
        """Cache hits, misses, flights, mints and refreshes so far."""
        return self._stats.as_dict()

    @property
    def _binding(self) -> Binding | None:
        """The current binding certificate (for diagnostics and benchmarks)."""
        return self._bindings.current

    @property
    def _slot(self) -> str:
        attested = "1" if self._settings.attestation else "0"
        return (
            f"{self.identity.describe()}#att={attested}#backend={self.backend.name}#imds={self.imds_endpoint}"
        )

    async def __aenter__(self) -> MsiV2Client:
        self._check_context()
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel background refreshes, close every HTTP client, release the key. Idempotent.

        Called from another event loop or process than the one the client worked in, it only forgets
        that loop's connections (they cannot be closed from here) and releases the key.
        """
        if self._closed:
            return
        self._closed = True
        self._tokens.clear()
        self._bindings.forget()
        task_group, self._task_group = self._task_group, None
        if self._foreign_context() is not None:
            self._runner.abandon()
            return
        if task_group is not None:
            task_group.cancel_scope.cancel()
            await task_group.__aexit__(None, None, None)
        await self._runner.aclose()

    async def close(self) -> None:
        """Alias of :meth:`aclose` (the Azure SDK name)."""
        await self.aclose()

    @overload
    async def acquire_token(
        self,
        scope: str = ...,
        *,
        token_type: Literal["mtls_pop"] = ...,
        claims: str | None = ...,
        force_refresh: bool = ...,
        timeout: float | None = ...,
    ) -> MtlsPopToken: ...

    @overload
    async def acquire_token(
        self,
        scope: str = ...,
        *,
        token_type: Literal["bearer"],
        claims: str | None = ...,
        force_refresh: bool = ...,
        timeout: float | None = ...,
    ) -> BearerToken: ...

    async def acquire_token(
        self,
        scope: str = DEFAULT_SCOPE,
        *,
        token_type: Literal["mtls_pop", "bearer"] = "mtls_pop",
        claims: str | None = None,
        force_refresh: bool = False,
        timeout: float | None = None,
    ) -> AnyToken:
        """A token for ``scope``, from the cache when one may be served.

        ``scope`` is a resource (``https://vault.azure.net``) or a ``.default`` scope. ``token_type``
        ``"mtls_pop"`` (the default) runs MSI v2 and never falls back to v1; ``"bearer"`` asks MSI v1
        (``/metadata/identity/oauth2/token``) with the same retry, cache and single-flight rules.
        ``claims`` (sent to the STS; mtls_pop only) and ``force_refresh`` bypass the cache.
        ``timeout`` overrides the client's deadline for this call.
        """
        if not (claims or force_refresh):  # warm path: a token known fresh for this exact spelling
            hot = self._hot.get(token_type, _NOTHING_HOT).get(scope)
            if hot is not None and self._wall_time() < hot[1]:
                self._stats.hits += 1
                return hot[0]
        return await self._acquire(scope, token_type, claims, force_refresh, timeout)

    async def _acquire(
        self, scope: str, token_type: str, claims: str | None, force_refresh: bool, timeout: float | None
    ) -> AnyToken:
        """Everything but the warm path (kept out of ``acquire_token``, whose frame then stays small)."""
        self._check_context()
        spelled = scope
        scope = _sts.normalize_scope(scope)
        if token_type not in (MTLS_POP, BEARER):
            raise ConfigurationError(f"token_type must be 'mtls_pop' or 'bearer', not {token_type!r}")
        if token_type == BEARER and claims:
            raise ConfigurationError("claims can only be sent with mtls_pop tokens (MSI v1 takes none)")
        if token_type == MTLS_POP:
            self._check_binding_strength()
        if not (claims or force_refresh):
            cached, due = self._from_cache(token_type, scope, spelled)
            if cached is not None:
                if due and self._task_group is None:
                    return await self._refresh_inline(token_type, scope, cached, timeout)
                return cached
        self._stats.misses += 1
        if force_refresh:
            self._token_flights.forget_failure((token_type, scope, claims))
        return await self._with_deadline(lambda: self._token_flight(token_type, scope, claims), timeout)

    def _check_binding_strength(self) -> None:
        if binding_rank(self.backend.binding_strength) < self._min_rank:
            raise MsiV2UnavailableError(
                f"the key backend {self.backend.name!r} gives binding strength "
                f"{self.backend.binding_strength!r}, below the required minimum {self._min_strength!r}; "
                "install and select a stronger backend (e.g. keyguard on a Windows VM with VBS)"
            )

    async def get_capabilities(self, *, timeout: float = 15.0) -> Capabilities:
        """Probe which Managed Identity this host offers (PROTOCOL.md §2.3), once per client.

        IMDS v2 when ``getplatformmetadata`` answers 400 to a request without ``Metadata``; else v1
        when the v1 token endpoint does; else unavailable. The maximum binding strength is the
        backend's on a v2 host and ``"none"`` otherwise. Bounded by ``timeout`` seconds.
        """
        self._check_context()
        if self._capabilities is None:
            self._capabilities = await self._with_deadline(
                lambda: self._probes.run("probe", self._probe), timeout
            )
        return self._capabilities

    async def _probe(self) -> Capabilities:
        correlation_id = str(uuid.uuid4())
        source, reason = await self._runner.run(_flow.probe(self._settings, correlation_id), correlation_id)
        strength = self.backend.binding_strength if source is ManagedIdentitySource.IMDS_V2 else "none"
        return Capabilities(source=source, max_binding_strength=strength, reason=reason)

    async def get_binding_certificate(self, *, timeout: float | None = None) -> BindingCertificate:
        """The current binding certificate, minting one if needed (no token is requested)."""
        self._check_context()
        binding = await self._with_deadline(self._bindings.get, timeout)
        return binding.certificate

    async def resource_client(self, token: MtlsPopToken, **httpx_kwargs: Any) -> httpx.AsyncClient:
        """An httpx client that calls resources over mTLS with ``token``'s certificate and header.

        Requests go only to https URLs that are not link-local (so the client cannot be turned against
        IMDS); redirects are not followed. The caller owns the client and closes it.
        """
        inner = await self.mtls_transport(token.binding_certificate)
        headers = httpx.Headers(httpx_kwargs.pop("headers", None))
        headers["Authorization"] = token.authorization_header()
        return httpx.AsyncClient(
            transport=ResourceGuardTransport(inner),
            headers=headers,
            follow_redirects=False,
            trust_env=False,
            **httpx_kwargs,
        )

    async def mtls_transport(self, certificate: BindingCertificate) -> httpx.AsyncBaseTransport:
        """A new httpx transport presenting ``certificate`` (with our key) in every TLS handshake.

        It verifies servers like the STS calls do (system trust plus ``ca_bundle``, TLS 1.2+). It is not
        guarded against plain http or link-local targets: wrap it as :meth:`resource_client` does.
        The caller owns and closes it.
        """
        self._check_context()
        return await self._runner.mtls_transport(certificate.der)

    def mtls_sync_transport(self, certificate: BindingCertificate) -> httpx.BaseTransport:
        """The blocking counterpart of :meth:`mtls_transport`, for sync httpx clients (blocking call)."""
        self._check_open()
        factory = getattr(self.backend, "mtls_sync_transport", None)
        if not callable(factory):
            raise ConfigurationError(f"backend {self.backend.name!r} offers no sync mTLS transport")
        transport: httpx.BaseTransport = factory(certificate.der, self._runner.tls)
        return transport

    @property
    def proxy_from_environment(self) -> bool:
        """Whether STS and resource calls honour ``HTTPS_PROXY`` and friends."""
        return self._runner.proxy_from_environment

    def _check_open(self) -> None:
        if self._closed:
            raise MsiV2Error("this MsiV2Client is closed; create a new one")

    def _foreign_context(self) -> str | None:
        """Why the current event loop or process is not the one this client belongs to (None if it is)."""
        if os.getpid() != self._pid:
            return "this MsiV2Client was created before a fork; create a new one in the child process"
        if self._loop is not None and anyio.lowlevel.current_token() != self._loop:
            return (
                "this MsiV2Client belongs to the event loop it was first used in; create one client per "
                "event loop (the module-level acquire_token() keeps one per loop for you)"
            )
        return None

    def _check_context(self) -> None:
        """Bind the client to the current event loop on first use; refuse any other loop or a forked child."""
        self._check_open()
        problem = self._foreign_context()
        if problem is not None:
            raise MsiV2Error(problem)
        if self._loop is None:
            self._loop = anyio.lowlevel.current_token()

    async def _with_deadline(self, work: Callable[[], Awaitable[T]], timeout: float | None) -> T:
        deadline = self._timeout if timeout is None else timeout
        # A bare cancel scope is anyio.fail_after without its two generator context managers: cheaper
        # for each of 10,000 concurrent callers (time and objects the garbage collector must scan).
        scope = anyio.CancelScope(deadline=math.inf if deadline is None else anyio.current_time() + deadline)
        try:
            with scope:
                return await work()
        except TimeoutError as exc:
            if isinstance(exc, MsiV2Error):
                raise
        raise MsiV2TimeoutError(
            f"acquire_token did not finish within {deadline} s; IMDS or the STS is slow or unreachable"
        ) from None

    def _token_key(self, token_type: str, scope: str, binding: Binding | None) -> TokenKey:
        return TokenKey(
            identity=self.identity,
            scope=scope,
            token_type=token_type,
            attested=binding.attested if binding else False,
            certificate_thumbprint=binding.certificate.thumbprint_sha256 if binding else "",
        )

    def _from_cache(self, token_type: str, scope: str, spelled: str) -> tuple[AnyToken | None, bool]:
        """A servable cached token and whether it is due for refresh (which this call then starts).

        A token that is not due is remembered for the warm path under the scope as ``spelled``.
        """
        binding = self._bindings.current if token_type == MTLS_POP else None
        if token_type == MTLS_POP and binding is None:
            return None, False
        entry = self._tokens.get(self._token_key(token_type, scope, binding))
        now = self._clock.time()
        if entry is None or not self._policy.token_usable(entry.token, now):
            return None, False
        due = self._policy.token_due(entry.token, now) or (
            binding is not None and self._policy.certificate_due(binding, now)
        )
        if not due:
            self._stats.hits += 1
            until = self._policy.fresh_until(entry.token, binding)
            self._tokens.remember(token_type, spelled, entry.token, until)
            return entry.token, False
        self._stats.stale_hits += 1
        in_flight = self._token_flights.in_flight((token_type, scope, None))
        if in_flight or not self._policy.may_retry_refresh(entry, self._clock.monotonic()):
            return entry.token, False
        entry.last_refresh_attempt = self._clock.monotonic()
        if self._task_group is not None:
            self._task_group.start_soon(self._refresh_in_background, token_type, scope)
        return entry.token, True

    async def _refresh_in_background(self, token_type: str, scope: str) -> None:
        try:
            await self._with_deadline(lambda: self._token_flight(token_type, scope, None), None)
            self._stats.background_refreshes += 1
        except Exception as exc:
            self._stats.failed_refreshes += 1
            _log.warning(
                "background refresh for %s failed; serving the cached token meanwhile: %s", scope, exc
            )

    async def _refresh_inline(
        self, token_type: str, scope: str, cached: AnyToken, timeout: float | None
    ) -> AnyToken:
        try:
            return await self._with_deadline(lambda: self._token_flight(token_type, scope, None), timeout)
        except MsiV2Error as exc:
            self._stats.failed_refreshes += 1
            _log.warning("refresh for %s failed; serving the cached token: %s", scope, exc)
            return cached

    async def _token_flight(self, token_type: str, scope: str, claims: str | None) -> AnyToken:
        fetch = self._fetch_bearer if token_type == BEARER else self._fetch_mtls_pop
        return await self._token_flights.run((token_type, scope, claims), lambda: fetch(scope, claims))

    async def _fetch_bearer(self, scope: str, claims: str | None) -> AnyToken:
        self._stats.token_flights += 1
        correlation_id = str(uuid.uuid4())
        flow = _flow.bearer_token(self._settings, scope, correlation_id, utc(self._clock.time()))
        token = await self._runner.run(flow, correlation_id)
        self._tokens.put(self._token_key(BEARER, scope, None), token)
        _log.info(
            "acquired Bearer token from MSI v1 for %s (identity %s, expires_on %d, token %s, request id %s)",
            scope,
            self.identity.describe(),
            token.expires_on,
            fingerprint(token.access_token),
            correlation_id,
        )
        return token

    async def _fetch_mtls_pop(self, scope: str, claims: str | None) -> AnyToken:
        self._stats.token_flights += 1
        binding = await self._bindings.get()
        still_good = self._token_kept_through_failed_renewal(scope, binding) if claims is None else None
        if still_good is not None:
            return still_good
        try:
            token = await self._request_token(binding, scope, claims)
        except TokenRequestError as exc:
            if not _sts.rejects_certificate(exc):
                raise
            self._stats.remints_on_rejection += 1
            _log.warning(
                "the STS rejected certificate %s; minting a new one: %s",
                binding.certificate.thumbprint_sha256,
                exc,
            )
            binding = await self._bindings.get(rejected=binding)
            token = await self._request_token(binding, scope, claims)
        if claims is None and binding is self._bindings.current:
            self._tokens.put(self._token_key(MTLS_POP, scope, binding), token)
        return token

    def _token_kept_through_failed_renewal(self, scope: str, binding: Binding) -> MtlsPopToken | None:
        """While a due certificate could not be renewed, its still-fresh tokens stay; no new request."""
        now = self._clock.time()
        if not self._policy.certificate_due(binding, now):
            return None
        entry = self._tokens.get(self._token_key(MTLS_POP, scope, binding))
        if entry is None or not isinstance(entry.token, MtlsPopToken):
            return None
        if not self._policy.token_usable(entry.token, now) or self._policy.token_due(entry.token, now):
            return None
        return entry.token

    async def _request_token(self, binding: Binding, scope: str, claims: str | None) -> MtlsPopToken:
        correlation_id = str(uuid.uuid4())
        flow = _flow.request_token(
            self._settings, binding, scope, correlation_id, utc(self._clock.time()), claims
        )
        token = await self._runner.run(flow, correlation_id)
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


__all__ = ["DEFAULT_SCOPE", "MsiV2Client", "Step"]


def _environment_proxy(environ: Mapping[str, str]) -> str | None:
    """The proxy for https traffic named by the environment, if any."""
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        value = environ.get(name, "").strip()
        if value:
            return value
    return None
