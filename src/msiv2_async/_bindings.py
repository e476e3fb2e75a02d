"""The binding certificate of one client: cached, persisted, minted by one flight, renewed, retired."""

from __future__ import annotations

import contextlib
import logging
import uuid

import anyio
import anyio.to_thread

from . import _binding, _flow, _sts
from ._cache import CachePolicy, CacheStats, TokenCache
from ._clock import Clock, utc
from ._driver import EffectRunner
from ._effects import OpenKey
from ._errors import BackendError, CertificateIssuanceError, MsiV2Error, UntrustedEndpointError
from ._logging import get_logger
from ._models import Binding
from ._singleflight import SingleFlight
from ._store import BindingStore, PersistedBinding

_log = get_logger("msiv2_async.client")


class BindingKeeper:
    """Owns the client's current :class:`Binding` and everything that changes it.

    Renewal follows :class:`CachePolicy`; concurrent callers share one mint; a store (when given) is
    consulted and written under its cross-process lock, best effort.
    """

    def __init__(
        self,
        *,
        settings: _flow.FlowSettings,
        runner: EffectRunner,
        policy: CachePolicy,
        clock: Clock,
        stats: CacheStats,
        tokens: TokenCache,
        store: BindingStore | None,
        slot: str,
        failure_ttl: float,
    ) -> None:
        self._settings = settings
        self._runner = runner
        self._policy = policy
        self._clock = clock
        self._stats = stats
        self._tokens = tokens
        self._store = store
        self._slot = slot
        self._mints: SingleFlight[str, Binding] = SingleFlight(clock, failure_ttl)
        self._persistence_warned = False
        self.current: Binding | None = None

    @property
    def minting(self) -> bool:
        """True while a mint runs."""
        return self._mints.in_flight(self._slot)

    def forget(self) -> None:
        """Drop the current binding without touching connections or the store (client closing)."""
        self.current = None

    async def get(self, rejected: Binding | None = None) -> Binding:
        """The binding to request tokens with: cached, persisted, or minted by one flight.

        ``rejected``: the STS refused this binding; evict it (memory and store) before minting.
        """
        if rejected is not None and self.current is rejected:
            await self.retire(rejected, persisted_too=True)
        binding = self.current
        now = self._clock.time()
        if binding is not None and not self._policy.certificate_due(binding, now):
            return binding
        try:
            return await self._mints.run(self._slot, self._obtain)
        except MsiV2Error as exc:
            if binding is None or rejected is not None or not self._policy.certificate_usable(binding, now):
                raise
            _log.warning(
                "certificate renewal failed; using the current certificate until it expires: %s", exc
            )
            return binding

    async def _obtain(self) -> Binding:
        """Under the cross-process lock: a persisted binding, else a new one that is then persisted.

        Persistence is best effort: a store that cannot be locked, read or written is logged (once) and
        the binding lives in memory only; the token is still returned.
        """
        async with contextlib.AsyncExitStack() as stack:
            store = self._store
            if store is not None:
                try:
                    await stack.enter_async_context(store.mint_lock(self._slot))
                except (OSError, MsiV2Error) as exc:
                    self._persistence_failed("lock the cache", exc)
                    store = None
            binding = await self._load_persisted(store) if store is not None else None
            if binding is None:
                binding = await self._mint()
                if store is not None:
                    await self._persist(store, binding)
        await self._install(binding)
        return binding

    def _persistence_failed(self, action: str, error: BaseException) -> None:
        level = logging.DEBUG if self._persistence_warned else logging.WARNING
        self._persistence_warned = True
        _log.log(level, "could not %s (%s); keeping the certificate in memory only", action, error)

    async def _mint(self) -> Binding:
        """A new binding; if the key fails (lost, per-boot key gone), the backend regenerates it once."""
        try:
            return await self._mint_once()
        except BackendError as exc:
            discard_key = getattr(self._runner.backend, "discard_key", None)
            if not callable(discard_key):
                raise
            _log.warning("the binding key failed (%s); regenerating it and minting once more", exc)
            self._stats.key_regenerations += 1
            await anyio.to_thread.run_sync(discard_key)
            if self.current is not None:
                await self.retire(self.current, persisted_too=True)
            return await self._mint_once()

    async def _mint_once(self) -> Binding:
        self._stats.certificate_mints += 1
        correlation_id = str(uuid.uuid4())
        flow = _flow.new_binding(self._settings, correlation_id, utc(self._clock.time()))
        binding = await self._runner.run(flow, correlation_id)
        _log.info(
            "IMDS issued certificate %s for %s, valid until %s",
            binding.certificate.thumbprint_sha256,
            self._settings.identity.describe(),
            binding.certificate.not_after.isoformat(),
        )
        return binding

    async def _persist(self, store: BindingStore, binding: Binding) -> None:
        persisted = PersistedBinding(
            certificate_der=binding.certificate.der,
            client_id=binding.client_id,
            tenant_id=binding.tenant_id,
            mtls_authentication_endpoint=binding.token_endpoint.removesuffix(
                f"/{binding.tenant_id}/oauth2/v2.0/token"
            ),
            attested=binding.attested,
        )
        try:
            await store.save(self._slot, persisted)
        except (OSError, MsiV2Error) as exc:
            self._persistence_failed("persist the certificate", exc)

    async def _load_persisted(self, store: BindingStore) -> Binding | None:
        """A persisted binding that is valid, fresh, for our key and for an allowed endpoint; else None."""
        try:
            persisted = await store.load(self._slot)
        except (OSError, MsiV2Error) as exc:
            self._persistence_failed("read the cache", exc)
            return None
        if persisted is None:
            return None
        now = self._clock.time()
        key = await self._runner.perform(OpenKey(_flow.key_name(persisted.client_id)), "")
        try:
            certificate = _binding.certificate_for_key(
                persisted.certificate_der, key, backend=self._runner.backend.name, now=utc(now)
            )
            endpoint = _sts.token_endpoint(
                persisted.mtls_authentication_endpoint,
                persisted.tenant_id,
                self._settings.allowed_token_hosts,
            )
        except (CertificateIssuanceError, UntrustedEndpointError) as exc:
            _log.warning("discarding the persisted certificate (orphaned or invalid): %s", exc)
            await self._forget_persisted(store)
            return None
        binding = Binding(certificate, persisted.client_id, persisted.tenant_id, endpoint, persisted.attested)
        if self._policy.certificate_due(binding, now) or binding.attested != self._settings.attestation:
            return None
        self._stats.persisted_certificates_loaded += 1
        return binding

    async def _install(self, binding: Binding) -> None:
        previous, self.current = self.current, binding
        if previous is not None and previous is not binding:
            await self.retire(previous, persisted_too=False)

    async def retire(self, binding: Binding, *, persisted_too: bool) -> None:
        """Stop using ``binding``: its tokens, its connections and (optionally) its persisted copy."""
        if self.current is binding:
            self.current = None
        thumbprint = binding.certificate.thumbprint_sha256
        self._tokens.drop_certificate(lambda candidate: candidate == thumbprint)
        await self._runner.retire_certificate(thumbprint)
        if persisted_too and self._store is not None:
            await self._forget_persisted(self._store)

    async def _forget_persisted(self, store: BindingStore) -> None:
        try:
            await store.delete(self._slot)
        except (OSError, MsiV2Error) as exc:
            self._persistence_failed("delete the persisted certificate", exc)
