"""``KeyGuardBackend``: the binding key in VBS (KeyGuard), attested by MAA, used by SChannel for mTLS.

Viability (``priority()``): the Windows native layer must be there (Windows, or the Linux test mode)
and VBS key isolation must work — probed once per process by creating and freeing an ephemeral
KeyGuard key. Then the priority is 10 (above ``software``). Without VBS the backend is not viable,
unless the user allowed a weaker key (``allow_weaker_key=True`` or
``MSIV2_ASYNC_KEYGUARD_ALLOW_WEAKER=1``): then it offers a non-exportable software CNG key with
priority 5 and ``binding_strength`` ``"software"`` (not ``"keyguard"``) — never silently.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from msiv2_async._errors import BackendError, ConfigurationError, MsiV2UnavailableError
from msiv2_async._models import RsaPublicNumbers
from msiv2_async._native import _loader, ncrypt
from msiv2_async._native.attestation import AttestationLibrary, AttestationLibraryNotFoundError, locate
from msiv2_async._native.crypt32 import CertContext
from msiv2_async._native.errors import NativeError, NativeLibraryError
from msiv2_async.backends import TlsSettings

from ._attestation_cache import AttestationCache
from ._certstore import CertStoreBindingStore
from ._keys import CNG_SOFTWARE, KEYGUARD, OpenedKey, Rung, open_or_create, probe_isolation
from ._transport import WinHttpSyncTransport, WinHttpTransport

ALLOW_WEAKER_ENV = "MSIV2_ASYNC_KEYGUARD_ALLOW_WEAKER"
PRIORITY = 10.0
WEAKER_PRIORITY = 5.0
_log = logging.getLogger("msiv2_async.keyguard")
_probe_lock = threading.Lock()
_probe_results: dict[str, str | None] = {}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def isolation_unavailable_reason(environ: Mapping[str, str] = os.environ) -> str | None:
    """``None`` when KeyGuard keys can be created here, else why not (cached per process and library)."""
    reason = _loader.unavailable_reason(environ)
    if reason is not None:
        return reason
    path = _loader.system_library_path("ncrypt", environ)
    with _probe_lock:
        if path not in _probe_results:
            try:
                with ncrypt.Provider(environ=environ) as provider:
                    _probe_results[path] = probe_isolation(provider)
            except (NativeError, NativeLibraryError) as exc:
                _probe_results[path] = str(exc)
        return _probe_results[path]


def reset_isolation_probe() -> None:
    """Forget the cached VBS probe (tests switch the stand-in's VBS support)."""
    with _probe_lock:
        _probe_results.clear()


class KeyGuardBackend:
    """A per-boot KeyGuard RSA-2048 key per identity (Software KSP, user scope), never exported.

    - ``allow_weaker_key``: fall back to a non-exportable software CNG key (no attestation) when
      KeyGuard is unavailable; default ``$MSIV2_ASYNC_KEYGUARD_ALLOW_WEAKER``, else no.
    - ``attestation_library``: path of ``AttestationClientLib.dll`` (else the search of
      :func:`msiv2_async._native.attestation.locate`). Without it the backend does not attest.
    - ``clock``: Unix time for the attestation cache.
    """

    name = "keyguard"
    binding_strength = "keyguard"  # the instance reports the rung actually in use
    supports_attestation = True  # the instance says False without VBS or AttestationClientLib

    def __init__(
        self,
        *,
        allow_weaker_key: bool | None = None,
        attestation_library: str | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._environ = os.environ if environ is None else environ
        reason = _loader.unavailable_reason(self._environ)
        if reason is not None:
            raise MsiV2UnavailableError(reason)
        allow = _truthy(self._environ.get(ALLOW_WEAKER_ENV)) if allow_weaker_key is None else allow_weaker_key
        isolation_problem = isolation_unavailable_reason(self._environ)
        if isolation_problem is None:
            self._rungs: tuple[Rung, ...] = (KEYGUARD, CNG_SOFTWARE) if allow else (KEYGUARD,)
        elif allow:
            _log.warning(
                "KeyGuard is unavailable (%s); using a software CNG key as allowed", isolation_problem
            )
            self._rungs = (CNG_SOFTWARE,)
        else:
            raise MsiV2UnavailableError(_not_viable_message(isolation_problem))
        self.binding_strength = self._rungs[0].strength
        self._attestation_path = self._find_attestation_library(attestation_library)
        self.supports_attestation = self._rungs[0] is KEYGUARD and self._attestation_path is not None
        self._attestation: AttestationLibrary | None = None
        self._attestations = AttestationCache(clock)
        self._provider: ncrypt.Provider | None = None
        self._key: OpenedKey | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        key = self._key
        return f"KeyGuardBackend(strength={self.binding_strength!r}, key={key.name if key else None!r})"

    @classmethod
    def priority(cls) -> float:
        """10 where KeyGuard works; 5 with only a software CNG key when allowed; else not viable."""
        reason = _loader.unavailable_reason()
        if reason is not None:
            raise MsiV2UnavailableError(reason)
        problem = isolation_unavailable_reason()
        if problem is None:
            return PRIORITY
        if _truthy(os.environ.get(ALLOW_WEAKER_ENV)):
            return WEAKER_PRIORITY
        raise MsiV2UnavailableError(_not_viable_message(problem))

    def _find_attestation_library(self, explicit: str | None) -> str | None:
        try:
            return locate(explicit, environ=self._environ)
        except AttestationLibraryNotFoundError as exc:
            if explicit:
                raise ConfigurationError(str(exc)) from None
            _log.warning("KeyGuard keys will not be attested: %s", exc)
            return None

    @property
    def key_container(self) -> str | None:
        """The CNG container name of the open key (what certificates are bound to), or ``None``."""
        key = self._key
        return key.name if key else None

    @property
    def attestation_library(self) -> str | None:
        """The path of the attestation library in use, or ``None``."""
        return self._attestation_path

    def binding_store(self, **kwargs: object) -> CertStoreBindingStore:
        """A :class:`CertStoreBindingStore` for this backend (pass it as ``MsiV2Client(store=...)``)."""
        return CertStoreBindingStore(self, environ=self._environ, **kwargs)  # type: ignore[arg-type]

    def _require_key(self) -> OpenedKey:
        if self._key is None:
            raise BackendError("the KeyGuard backend has no key yet: open_key() must come first")
        return self._key

    def open_key(self, key_name: str) -> RsaPublicNumbers:
        """Open (or create) the identity's key along the allowed rungs; its public numbers."""
        with self._lock:
            key = self._key
            if key is None or not (key.name == key_name or key.name == key_name + key.rung.name_suffix):
                self._close_key()
                key = self._key = self._open_along_ladder(key_name)
                self.binding_strength = key.rung.strength
            return RsaPublicNumbers(modulus=key.modulus, exponent=key.exponent)

    def _open_along_ladder(self, key_name: str) -> OpenedKey:
        if self._provider is None:
            self._provider = ncrypt.Provider(environ=self._environ)
        failures: list[str] = []
        for rung in self._rungs:
            try:
                opened = open_or_create(self._provider, rung, key_name)
            except NativeError as exc:
                _log.warning("%s key %s unavailable: %s", rung.strength, key_name, exc)
                failures.append(f"{rung.strength}: {exc}")
                continue
            if rung is not self._rungs[0]:
                _log.warning("using the weaker %s key %s (allowed by the caller)", rung.strength, opened.name)
            _log.info("%s key %s %s", rung.strength, opened.name, "created" if opened.created else "opened")
            return opened
        hint = (
            "" if CNG_SOFTWARE in self._rungs else f"; set {ALLOW_WEAKER_ENV}=1 to allow a software CNG key"
        )
        raise BackendError(f"no binding key could be opened or created ({'; '.join(failures)}){hint}")

    def sign(self, data: bytes) -> bytes:
        """RSASSA-PSS (SHA-256, MGF1-SHA-256, salt 32) through ``NCryptSignHash`` on SHA-256(``data``)."""
        with self._lock:
            return self._require_key().key.sign_pss_sha256(hashlib.sha256(data).digest())

    def attest(self, *, endpoint: str, client_id: str) -> str | None:
        """The MAA JWT of the KeyGuard key (cached until 5 min before ``exp``); ``None`` if not attestable."""
        with self._lock:
            key = self._require_key()
            if key.rung is not KEYGUARD or self._attestation_path is None:
                return None
            if self._attestation is None:
                self._attestation = AttestationLibrary(self._attestation_path, self._environ)
            library = self._attestation
            cache_key = f"{endpoint.rstrip('/').lower()}|{key.key_id}"
            return self._attestations.get(
                cache_key, lambda: library.attest_keyguard_key(endpoint, key.key.handle, client_id)
            )

    def bind_certificate(self, certificate_der: bytes) -> CertContext:
        """A Crypt32 context of ``certificate_der`` bound by name to the open key, checked to match it."""
        key = self._require_key()
        try:
            public_key = x509.load_der_x509_certificate(certificate_der).public_key()
        except ValueError:
            raise BackendError("the certificate to present is not valid DER X.509") from None
        if not isinstance(public_key, rsa.RSAPublicKey) or public_key.public_numbers().n != key.modulus:
            raise BackendError("the certificate is not for the KeyGuard backend's key")
        context = CertContext.from_der(certificate_der, self._environ)
        try:
            context.bind_key_by_name(key.name)
            with context.private_key() as handle, ncrypt.borrowed(handle, self._environ) as bound:
                if bound.public_numbers()[0] != key.modulus:
                    raise BackendError("the key bound to the certificate is not ours")
        except BaseException:
            context.close()
            raise
        return context

    def mtls_transport(self, certificate_der: bytes, tls: TlsSettings) -> httpx.AsyncBaseTransport:
        """A WinHTTP transport presenting ``certificate_der`` with the CNG key (SChannel signs)."""
        with self._lock:
            return WinHttpTransport(self.bind_certificate(certificate_der), tls, environ=self._environ)

    def mtls_sync_transport(self, certificate_der: bytes, tls: TlsSettings) -> httpx.BaseTransport:
        """The blocking twin of :meth:`mtls_transport` (for sync httpx clients)."""
        with self._lock:
            return WinHttpSyncTransport(self.bind_certificate(certificate_der), tls, environ=self._environ)

    def _close_key(self) -> None:
        key, self._key = self._key, None
        if key is not None:
            self._attestations.forget(key.key_id)
            key.key.close()

    def close(self) -> None:
        """Release the key and provider handles (the persisted per-boot key itself stays)."""
        with self._lock:
            self._close_key()
            provider, self._provider = self._provider, None
            if provider is not None:
                provider.close()


def _not_viable_message(problem: str) -> str:
    return (
        f"VBS key isolation (KeyGuard) is not available here ({problem}); set {ALLOW_WEAKER_ENV}=1 to use a "
        "non-exportable software CNG key instead"
    )
