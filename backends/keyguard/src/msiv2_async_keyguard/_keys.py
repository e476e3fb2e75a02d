"""The key ladder (NATIVE.md §1.4): open the named key if it is present and alive, else create it.

Rungs, strongest first:

- ``keyguard``: Software KSP, user scope, ``NCRYPT_USE_VIRTUAL_ISOLATION_FLAG |
  NCRYPT_USE_PER_BOOT_KEY_FLAG``, non-exportable, RSA-2048; "Virtual Iso" must read non-zero.
- ``software`` (rung ``CNG_SOFTWARE``): Software KSP, user scope, non-exportable, signing only (MSAL.NET's
  "hardware" rung, named honestly); no VBS, no attestation. Used only when the caller allowed a weaker key.

An existing key is used only if it passes the checks of its rung and a liveness probe (one PSS
signature: a per-boot key left over from an earlier boot opens but cannot sign). A dead or
non-isolated key is deleted and re-created. Creation never overwrites: when another process created
the key between our open and our create (``NTE_EXISTS``), we open theirs. Creation is serialised
within the process.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from dataclasses import dataclass

from msiv2_async._native import ncrypt
from msiv2_async._native.errors import NCryptError

KEY_LENGTH = 2048
ATTEMPTS = 3
_CREATION_LOCK = threading.Lock()
_log = logging.getLogger("msiv2_async.keyguard.keys")


@dataclass(frozen=True)
class Rung:
    """One rung of the ladder: how its key is created and what an existing key must satisfy."""

    strength: str
    name_suffix: str
    create_flags: int
    key_usage: int
    requires_isolation: bool


KEYGUARD = Rung(
    "keyguard",
    "",
    ncrypt.USE_VIRTUAL_ISOLATION_FLAG | ncrypt.USE_PER_BOOT_KEY_FLAG,
    ncrypt.ALLOW_ALL_USAGES,
    True,
)
CNG_SOFTWARE = Rung("software", "_cng", 0, ncrypt.ALLOW_SIGNING_FLAG, False)
LADDER = (KEYGUARD, CNG_SOFTWARE)


@dataclass
class OpenedKey:
    """A usable key: its handle (owned), rung, container name, public numbers, and how it came to be."""

    key: ncrypt.Key
    rung: Rung
    name: str
    modulus: int
    exponent: int
    created: bool
    replaced: bool

    @property
    def key_id(self) -> str:
        """Container name plus a hash of the modulus: changes whenever the key material does."""
        digest = hashlib.sha256(
            self.modulus.to_bytes((self.modulus.bit_length() + 7) // 8, "big")
        ).hexdigest()
        return f"{self.name}#{digest[:16]}"


def is_isolated(key: ncrypt.Key) -> bool:
    """ "Virtual Iso" is present and non-zero (MSAL.NET's KeyGuard check)."""
    try:
        return key.get_dword(ncrypt.VIRTUAL_ISO) != 0
    except NCryptError:
        return False


def is_alive(key: ncrypt.Key) -> bool:
    """The liveness probe: one RSA-PSS signature of SHA-256(b"\\x00")."""
    try:
        key.sign_pss_sha256(hashlib.sha256(b"\x00").digest())
    except NCryptError as exc:
        _log.info("key %s failed its liveness probe: %s", key.name, exc)
        return False
    return True


def _usable(key: ncrypt.Key, rung: Rung) -> bool:
    if rung.requires_isolation and not is_isolated(key):
        _log.warning("key %s exists but is not VBS-isolated; replacing it", key.name)
        return False
    return is_alive(key)


def _create(provider: ncrypt.Provider, rung: Rung, name: str | None, *, overwrite: bool) -> ncrypt.Key:
    flags = rung.create_flags | (ncrypt.OVERWRITE_KEY_FLAG if overwrite else 0)
    key = provider.create_key(name, flags=flags)
    finalized = False
    try:
        key.set_dword(ncrypt.EXPORT_POLICY, 0, ncrypt.PERSIST_FLAG)
        key.set_dword(ncrypt.KEY_USAGE, rung.key_usage, ncrypt.PERSIST_FLAG)
        key.set_dword(ncrypt.LENGTH, KEY_LENGTH)
        key.finalize()
        finalized = True
        if rung.requires_isolation and not is_isolated(key):
            raise NCryptError("NCryptFinalizeKey", 0x80890014, "the new key is not VBS-isolated")
    except BaseException:
        if finalized and name is not None:
            with contextlib.suppress(NCryptError):
                key.delete()
        key.close()
        raise
    return key


def _discard(key: ncrypt.Key) -> bool:
    """Delete a dead key; True if it is gone (else the create must overwrite)."""
    try:
        key.delete()
        return True
    except NCryptError as exc:
        _log.warning("could not delete key %s (%s); it will be overwritten", key.name, exc)
        key.close()
        return False


def open_or_create(provider: ncrypt.Provider, rung: Rung, base_name: str) -> OpenedKey:
    """The rung's key called ``base_name + rung.name_suffix``: opened if usable, else (re)created."""
    name = base_name + rung.name_suffix
    replaced = False
    with _CREATION_LOCK:
        for _ in range(ATTEMPTS):
            overwrite = False
            try:
                key: ncrypt.Key | None = provider.open_key(name)
            except NCryptError as exc:
                if exc.code not in ncrypt.KEY_ABSENT:
                    raise
                key = None
            if key is not None:
                if _usable(key, rung):
                    return _opened(key, rung, name, created=False, replaced=False)
                replaced = True
                overwrite = not _discard(key)
            try:
                key = _create(provider, rung, name, overwrite=overwrite)
            except NCryptError as exc:
                if exc.code == ncrypt.NTE_EXISTS:
                    _log.info("key %s was created by another process meanwhile; opening it", name)
                    continue
                raise
            return _opened(key, rung, name, created=True, replaced=replaced)
    raise NCryptError("NCryptCreatePersistedKey", ncrypt.NTE_EXISTS, f"key {name} kept changing under us")


def _opened(key: ncrypt.Key, rung: Rung, name: str, *, created: bool, replaced: bool) -> OpenedKey:
    try:
        modulus, exponent = key.public_numbers()
    except BaseException:
        key.close()
        raise
    return OpenedKey(key, rung, name, modulus, exponent, created, replaced)


def probe_isolation(provider: ncrypt.Provider) -> str | None:
    """Create (and free) an ephemeral KeyGuard key; ``None`` if VBS isolation works, else why not."""
    try:
        key = _create(provider, KEYGUARD, None, overwrite=False)
    except NCryptError as exc:
        return str(exc)
    key.close()
    return None
