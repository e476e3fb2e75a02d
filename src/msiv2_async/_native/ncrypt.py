"""NCrypt (``ncrypt.dll``): key storage providers, persisted RSA keys, RSA-PSS signing (NATIVE.md §1).

Every provider and key handle is owned by a :class:`Provider` or :class:`Key` object and released
by ``close()`` / ``with``. ``NCryptDeleteKey`` frees the handle on success, so :meth:`Key.delete`
hands the handle over instead of freeing it again. All calls block: run them in a worker thread.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from . import _loader
from ._cdefs import WSTR, int_constants
from ._handle import OwnedHandle
from .errors import NCryptError

ffi = _loader.ffi
_K = int_constants()

MS_KEY_STORAGE_PROVIDER = WSTR["MS_KEY_STORAGE_PROVIDER"]
MS_PLATFORM_CRYPTO_PROVIDER = WSTR["MS_PLATFORM_CRYPTO_PROVIDER"]
LENGTH = WSTR["NCRYPT_LENGTH_PROPERTY"]
EXPORT_POLICY = WSTR["NCRYPT_EXPORT_POLICY_PROPERTY"]
KEY_USAGE = WSTR["NCRYPT_KEY_USAGE_PROPERTY"]
ALGORITHM_NAME = WSTR["NCRYPT_ALGORITHM_PROPERTY"]
NAME = WSTR["NCRYPT_NAME_PROPERTY"]
IMPL_TYPE = WSTR["NCRYPT_IMPL_TYPE_PROPERTY"]
VIRTUAL_ISO = WSTR["NCRYPT_USE_VIRTUAL_ISOLATION_PROPERTY"]
PER_BOOT_KEY = WSTR["NCRYPT_USE_PER_BOOT_KEY_PROPERTY"]

SILENT_FLAG = _K["NCRYPT_SILENT_FLAG"]
MACHINE_KEY_FLAG = _K["NCRYPT_MACHINE_KEY_FLAG"]
OVERWRITE_KEY_FLAG = _K["NCRYPT_OVERWRITE_KEY_FLAG"]
USE_VIRTUAL_ISOLATION_FLAG = _K["NCRYPT_USE_VIRTUAL_ISOLATION_FLAG"]
USE_PER_BOOT_KEY_FLAG = _K["NCRYPT_USE_PER_BOOT_KEY_FLAG"]
PERSIST_FLAG = _K["NCRYPT_PERSIST_FLAG"]
ALLOW_SIGNING_FLAG = _K["NCRYPT_ALLOW_SIGNING_FLAG"]
ALLOW_ALL_USAGES = _K["NCRYPT_ALLOW_ALL_USAGES"]
IMPL_VIRTUAL_ISOLATION_FLAG = _K["NCRYPT_IMPL_VIRTUAL_ISOLATION_FLAG"]
PAD_PSS_FLAG = _K["NCRYPT_PAD_PSS_FLAG"]
RSAPUBLIC_MAGIC = _K["BCRYPT_RSAPUBLIC_MAGIC"]

NTE_BAD_KEYSET = 0x80090016
NTE_NOT_FOUND = 0x80090011
NTE_NO_KEY = 0x8009000D
NTE_EXISTS = 0x8009000F
NTE_BUFFER_TOO_SMALL = 0x80090028
NTE_NO_MORE_ITEMS = 0x8009002A
KEY_ABSENT = frozenset({NTE_BAD_KEYSET, NTE_NOT_FOUND, NTE_NO_KEY})
"""Statuses of ``NCryptOpenKey`` that mean "no key of that name" (.NET uses NTE_BAD_KEYSET)."""

SHA256_DIGEST_SIZE = 32
PSS_SALT_LENGTH = 32


def check(status: int, function: str) -> None:
    """Raise :class:`NCryptError` for a failing ``SECURITY_STATUS``."""
    if status & 0xFFFFFFFF:
        raise NCryptError(function, status)


def library(environ: Mapping[str, str] = os.environ) -> Any:
    """``ncrypt.dll`` (or its stand-in)."""
    return _loader.system_library("ncrypt", environ)


def parse_rsa_public_blob(blob: bytes) -> tuple[int, int]:
    """``(modulus, exponent)`` of an ``RSAPUBLICBLOB`` (``BCRYPT_RSAKEY_BLOB`` + big-endian e and n)."""
    if len(blob) < 24:
        raise NCryptError("NCryptExportKey", 0x80090005, "RSAPUBLICBLOB shorter than its header")
    magic, _bits, cb_exponent, cb_modulus, _p1, _p2 = struct.unpack("<6I", blob[:24])
    if magic != RSAPUBLIC_MAGIC or len(blob) < 24 + cb_exponent + cb_modulus:
        raise NCryptError("NCryptExportKey", 0x80090005, "not an RSAPUBLICBLOB")
    exponent = int.from_bytes(blob[24 : 24 + cb_exponent], "big")
    modulus = int.from_bytes(blob[24 + cb_exponent : 24 + cb_exponent + cb_modulus], "big")
    return modulus, exponent


def _dword(value: int) -> Any:
    return ffi.new("DWORD *", value)


class Provider(OwnedHandle):
    """An open key storage provider (default: the Microsoft Software KSP)."""

    def __init__(self, name: str = MS_KEY_STORAGE_PROVIDER, environ: Mapping[str, str] = os.environ) -> None:
        self.lib = library(environ)
        out = ffi.new("NCRYPT_PROV_HANDLE *")
        check(self.lib.NCryptOpenStorageProvider(out, name, 0), "NCryptOpenStorageProvider")
        super().__init__(int(out[0]))
        self.name = name

    def _release(self, value: Any) -> None:
        self.lib.NCryptFreeObject(value)

    @property
    def handle(self) -> int:
        """The raw ``NCRYPT_PROV_HANDLE``."""
        if self._value is None:
            raise NCryptError("NCryptOpenKey", 0x80090026, "the provider is closed")
        return int(self._value)

    def open_key(self, name: str, *, machine: bool = False, legacy_key_spec: int = 0) -> Key:
        """Open the persisted key ``name`` silently; ``NCryptError`` (often NTE_BAD_KEYSET) if absent."""
        out = ffi.new("NCRYPT_KEY_HANDLE *")
        flags = SILENT_FLAG | (MACHINE_KEY_FLAG if machine else 0)
        check(self.lib.NCryptOpenKey(self.handle, out, name, legacy_key_spec, flags), "NCryptOpenKey")
        return Key(self.lib, int(out[0]), name)

    def create_key(self, name: str | None, *, flags: int = 0, legacy_key_spec: int = 0) -> Key:
        """Start an RSA key (``name`` None = ephemeral); set properties, then :meth:`Key.finalize`."""
        out = ffi.new("NCRYPT_KEY_HANDLE *")
        key_name = ffi.NULL if name is None else name
        status = self.lib.NCryptCreatePersistedKey(
            self.handle, out, WSTR["NCRYPT_RSA_ALGORITHM"], key_name, legacy_key_spec, flags
        )
        check(status, "NCryptCreatePersistedKey")
        return Key(self.lib, int(out[0]), name)

    def key_names(self, *, machine: bool = False) -> list[str]:
        """Names of the persisted keys of this provider (``NCryptEnumKeys``)."""
        names: list[str] = []
        state = ffi.new("PVOID *")
        item = ffi.new("NCryptKeyName **")
        flags = SILENT_FLAG | (MACHINE_KEY_FLAG if machine else 0)
        try:
            while True:
                status = self.lib.NCryptEnumKeys(self.handle, ffi.NULL, item, state, flags) & 0xFFFFFFFF
                if status == NTE_NO_MORE_ITEMS:
                    return names
                check(status, "NCryptEnumKeys")
                try:
                    names.append(str(ffi.string(item[0].pszName)))
                finally:
                    self.lib.NCryptFreeBuffer(item[0])
        finally:
            if state[0] != ffi.NULL:
                self.lib.NCryptFreeBuffer(state[0])


class Key(OwnedHandle):
    """An open NCrypt key handle (persisted or ephemeral)."""

    def __init__(self, lib: Any, handle: int, name: str | None) -> None:
        super().__init__(handle)
        self.lib = lib
        self.name = name

    def __repr__(self) -> str:
        return f"Key(name={self.name!r}, closed={self.closed})"

    def _release(self, value: Any) -> None:
        self.lib.NCryptFreeObject(value)

    @property
    def handle(self) -> int:
        """The raw ``NCRYPT_KEY_HANDLE`` (borrowed: valid until :meth:`close`)."""
        if self._value is None:
            raise NCryptError("NCrypt", 0x80090026, "the key handle is closed")
        return int(self._value)

    def set_dword(self, prop: str, value: int, flags: int = 0) -> None:
        """``NCryptSetProperty`` of a DWORD property."""
        buffer = _dword(value)
        status = self.lib.NCryptSetProperty(self.handle, prop, ffi.cast("PBYTE", buffer), 4, flags)
        check(status, f"NCryptSetProperty({prop})")

    def get_bytes(self, prop: str) -> bytes:
        """``NCryptGetProperty``: size query, then the value."""
        size = ffi.new("DWORD *")
        for _ in range(3):
            check(
                self.lib.NCryptGetProperty(self.handle, prop, ffi.NULL, 0, size, 0),
                f"NCryptGetProperty({prop})",
            )
            buffer = ffi.new("BYTE[]", max(size[0], 1))
            status = self.lib.NCryptGetProperty(self.handle, prop, buffer, size[0], size, 0) & 0xFFFFFFFF
            if status != NTE_BUFFER_TOO_SMALL:
                check(status, f"NCryptGetProperty({prop})")
                return bytes(ffi.buffer(buffer, size[0]))
        raise NCryptError(f"NCryptGetProperty({prop})", NTE_BUFFER_TOO_SMALL)

    def get_dword(self, prop: str) -> int:
        """A DWORD property."""
        value = self.get_bytes(prop)
        if len(value) < 4:
            raise NCryptError(f"NCryptGetProperty({prop})", 0x80090005, f"{len(value)} bytes, not a DWORD")
        return int(struct.unpack("<I", value[:4])[0])

    def get_string(self, prop: str) -> str:
        """A wide-string property (without its terminating NUL)."""
        value = self.get_bytes(prop)
        array = ffi.from_buffer("wchar_t[]", value)
        return str(ffi.string(array, len(value) // ffi.sizeof("wchar_t")))

    def finalize(self) -> None:
        """``NCryptFinalizeKey``: generate and persist the key."""
        check(self.lib.NCryptFinalizeKey(self.handle, 0), "NCryptFinalizeKey")

    def public_numbers(self) -> tuple[int, int]:
        """``(modulus, exponent)`` from the exported ``RSAPUBLICBLOB``."""
        size = ffi.new("DWORD *")
        blob_type = WSTR["BCRYPT_RSAPUBLIC_BLOB"]
        check(
            self.lib.NCryptExportKey(self.handle, 0, blob_type, ffi.NULL, ffi.NULL, 0, size, 0),
            "NCryptExportKey",
        )
        buffer = ffi.new("BYTE[]", size[0])
        status = self.lib.NCryptExportKey(self.handle, 0, blob_type, ffi.NULL, buffer, size[0], size, 0)
        check(status, "NCryptExportKey")
        return parse_rsa_public_blob(bytes(ffi.buffer(buffer, size[0])))

    def sign_pss_sha256(self, digest: bytes, salt_length: int = PSS_SALT_LENGTH) -> bytes:
        """RSASSA-PSS signature (SHA-256, MGF1-SHA-256) of a SHA-256 ``digest``."""
        if len(digest) != SHA256_DIGEST_SIZE:
            raise ValueError("sign_pss_sha256 takes the 32-byte SHA-256 digest, not the data")
        algorithm = ffi.new("wchar_t[]", WSTR["BCRYPT_SHA256_ALGORITHM"])
        padding = ffi.new("BCRYPT_PSS_PADDING_INFO *", {"pszAlgId": algorithm, "cbSalt": salt_length})
        hash_buffer = ffi.from_buffer("BYTE[]", digest)
        size = ffi.new("DWORD *")
        status = self.lib.NCryptSignHash(
            self.handle, padding, hash_buffer, 32, ffi.NULL, 0, size, PAD_PSS_FLAG
        )
        check(status, "NCryptSignHash")
        signature = ffi.new("BYTE[]", size[0])
        status = self.lib.NCryptSignHash(
            self.handle, padding, hash_buffer, 32, signature, size[0], size, PAD_PSS_FLAG
        )
        check(status, "NCryptSignHash")
        return bytes(ffi.buffer(signature, size[0]))

    def verify_pss_sha256(self, digest: bytes, signature: bytes, salt_length: int = PSS_SALT_LENGTH) -> bool:
        """``NCryptVerifySignature`` with the padding of :meth:`sign_pss_sha256`."""
        algorithm = ffi.new("wchar_t[]", WSTR["BCRYPT_SHA256_ALGORITHM"])
        padding = ffi.new("BCRYPT_PSS_PADDING_INFO *", {"pszAlgId": algorithm, "cbSalt": salt_length})
        status = self.lib.NCryptVerifySignature(
            self.handle,
            padding,
            ffi.from_buffer("BYTE[]", digest),
            len(digest),
            ffi.from_buffer("BYTE[]", signature),
            len(signature),
            PAD_PSS_FLAG,
        )
        return bool((status & 0xFFFFFFFF) == 0)

    def delete(self) -> None:
        """``NCryptDeleteKey``; on success the handle is gone too, on failure it is still ours."""
        handle = self.handle
        check(self.lib.NCryptDeleteKey(handle, 0), "NCryptDeleteKey")
        self.detach()


@contextmanager
def borrowed(handle: int, environ: Mapping[str, str] = os.environ) -> Iterator[Key]:
    """A :class:`Key` view of a handle owned elsewhere (never freed by this view)."""
    key = Key(library(environ), handle, None)
    try:
        yield key
    finally:
        key.detach()
