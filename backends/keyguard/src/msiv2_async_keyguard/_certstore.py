"""Binding certificates persisted in the Windows certificate store (``CurrentUser\\My``), NATIVE.md §2.3.

Each certificate is stored with its key bound by name (``CERT_KEY_PROV_INFO_PROP_ID``: the KeyGuard
container in the Software KSP) and a friendly name that carries what the core persists::

    msiv2_async|v=1|slot=<32 hex of SHA-256(slot)>|cid=<client id>|tid=<tenant>|ep=<mTLS endpoint>|att=<0|1>

Loading picks the newest certificate of the slot whose key still exists and still matches the
certificate (a per-boot key re-created after a reboot orphans its certificates, which are deleted
then). Saving replaces every older certificate of the slot. The mint lock is a lock file (one per
slot) in ``%LOCALAPPDATA%\\msiv2_async\\locks``. Store access is best effort: a failing store never
fails token acquisition (it is logged and reads as "nothing persisted").
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

import anyio.to_thread
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from msiv2_async._native import ncrypt
from msiv2_async._native.crypt32 import CertContext, CertStore
from msiv2_async._native.errors import NativeError
from msiv2_async._store import PersistedBinding

from ._filelock import default_lock_directory, file_lock

if TYPE_CHECKING:
    from ._backend import KeyGuardBackend

PREFIX = "msiv2_async"
VERSION = "1"
_FORBIDDEN = ("|", "\r", "\n", "\0")
_log = logging.getLogger("msiv2_async.keyguard.store")


def slot_tag(slot: str) -> str:
    """The slot's name in the friendly name (the slot itself may contain ``|``)."""
    return hashlib.sha256(slot.encode("utf-8")).hexdigest()[:32]


def encode_friendly_name(slot: str, binding: PersistedBinding) -> str | None:
    """The friendly name for ``binding``, or ``None`` if a value cannot be encoded safely."""
    fields = {
        "v": VERSION,
        "slot": slot_tag(slot),
        "cid": binding.client_id,
        "tid": binding.tenant_id,
        "ep": binding.mtls_authentication_endpoint,
        "att": "1" if binding.attested else "0",
    }
    if any(not value or any(c in value for c in _FORBIDDEN) for value in fields.values()):
        return None
    return PREFIX + "".join(f"|{key}={value}" for key, value in fields.items())


def decode_friendly_name(name: str | None) -> dict[str, str] | None:
    """The fields of one of our friendly names, or ``None`` for anything else."""
    if not name or not name.startswith(PREFIX + "|"):
        return None
    fields: dict[str, str] = {}
    for part in name[len(PREFIX) + 1 :].split("|"):
        key, separator, value = part.partition("=")
        if separator and key.strip():
            fields[key.strip().lower()] = value.strip()
    required = ("v", "slot", "cid", "tid", "ep", "att")
    if (
        fields.get("v") != VERSION
        or not all(fields.get(k) for k in required)
        or fields["att"] not in ("0", "1")
    ):
        return None
    return fields


def _bound_key_matches(context: CertContext, certificate: x509.Certificate) -> bool:
    """The certificate's key container exists and holds the certificate's public key (else: orphan)."""
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        return False
    try:
        with context.private_key() as handle, ncrypt.borrowed(handle) as key:
            modulus, exponent = key.public_numbers()
    except NativeError:
        return False
    numbers = public_key.public_numbers()
    return (modulus, exponent) == (numbers.n, numbers.e)


class CertStoreBindingStore:
    """A :class:`msiv2_async.BindingStore` in the Windows certificate store, for :class:`KeyGuardBackend`."""

    def __init__(
        self,
        backend: KeyGuardBackend,
        *,
        store_name: str = "My",
        lock_directory: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._backend = backend
        self._store_name = store_name
        self._lock_directory = lock_directory or default_lock_directory()
        self._environ = os.environ if environ is None else environ

    def __repr__(self) -> str:
        return f"CertStoreBindingStore(CurrentUser\\{self._store_name})"

    def _matching(self, store: CertStore, slot: str) -> list[tuple[CertContext, dict[str, str]]]:
        tag = slot_tag(slot)
        matches: list[tuple[CertContext, dict[str, str]]] = []
        for context in store.certificates():
            fields = decode_friendly_name(context.friendly_name())
            if fields is not None and fields["slot"] == tag:
                matches.append((context, fields))
            else:
                context.close()
        return matches

    def _load(self, slot: str) -> PersistedBinding | None:
        best: tuple[x509.Certificate, CertContext, dict[str, str]] | None = None
        with CertStore(self._store_name, environ=self._environ) as store:
            matches = self._matching(store, slot)
            try:
                for context, fields in matches:
                    certificate = x509.load_der_x509_certificate(context.der)
                    if not _bound_key_matches(context, certificate):
                        _log.info("deleting orphaned binding certificate %s", certificate.serial_number)
                        store.delete(context)
                        continue
                    if best is None or certificate.not_valid_after_utc > best[0].not_valid_after_utc:
                        best = (certificate, context, fields)
                if best is None:
                    return None
                certificate, context, fields = best
                return PersistedBinding(
                    certificate_der=context.der,
                    client_id=fields["cid"],
                    tenant_id=fields["tid"],
                    mtls_authentication_endpoint=fields["ep"],
                    attested=fields["att"] == "1",
                )
            finally:
                for context, _ in matches:
                    context.close()

    def _save(self, slot: str, binding: PersistedBinding) -> None:
        container = self._backend.key_container
        name = encode_friendly_name(slot, binding)
        if container is None or name is None:
            _log.warning("not persisting the binding certificate: no key container or an unencodable value")
            return
        with CertContext.from_der(binding.certificate_der, self._environ) as context:
            context.bind_key_by_name(container)
            context.set_friendly_name(name)
            with CertStore(self._store_name, environ=self._environ) as store:
                for old, _ in self._matching(store, slot):
                    with old:
                        if old.der != binding.certificate_der:
                            store.delete(old)
                store.add(context).close()

    def _delete(self, slot: str) -> None:
        with CertStore(self._store_name, environ=self._environ) as store:
            for context, _ in self._matching(store, slot):
                with context:
                    store.delete(context)

    async def load(self, slot: str) -> PersistedBinding | None:
        """The newest live binding of ``slot`` (orphans are deleted on the way), or ``None``."""
        try:
            return await anyio.to_thread.run_sync(self._load, slot)
        except (NativeError, ValueError) as exc:
            _log.warning("reading the certificate store failed; minting instead: %s", exc)
            return None

    async def save(self, slot: str, binding: PersistedBinding) -> None:
        """Store ``binding`` (bound to the backend's key) and drop older certificates of ``slot``."""
        try:
            await anyio.to_thread.run_sync(self._save, slot, binding)
        except NativeError as exc:
            _log.warning("persisting the binding certificate failed: %s", exc)

    async def delete(self, slot: str) -> None:
        """Delete every certificate of ``slot``."""
        try:
            await anyio.to_thread.run_sync(self._delete, slot)
        except NativeError as exc:
            _log.warning("deleting persisted binding certificates failed: %s", exc)

    @contextlib.asynccontextmanager
    async def mint_lock(self, slot: str) -> AsyncIterator[None]:
        """One process at a time mints for ``slot`` (a lock file; given up after 60 s)."""
        path = os.path.join(self._lock_directory, f"binding-{slot_tag(slot)}.lock")
        async with file_lock(path) as acquired:
            if not acquired:
                _log.warning("mint lock %s not acquired in time; minting anyway", path)
            yield
