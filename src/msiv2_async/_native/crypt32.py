"""Crypt32 (``crypt32.dll``): certificate contexts, their binding to a CNG key, the CurrentUser\\My store.

The issued certificate is bound to the non-exportable key **by name** (``CERT_KEY_PROV_INFO_PROP_ID``,
NATIVE.md §2.2 (A)): SChannel reopens the key from the provider and container name, the binding
survives ``CertAddCertificateContextToStore``, and no key handle changes owner. Each
:class:`CertContext` owns one reference (``CertFreeCertificateContext`` on close); each
:class:`CertStore` owns its store handle.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from . import _loader
from ._cdefs import int_constants
from ._handle import OwnedHandle
from .errors import Win32Error
from .ncrypt import MS_KEY_STORAGE_PROVIDER

ffi = _loader.ffi
_K = int_constants()

ENCODING = _K["X509_ASN_ENCODING"] | _K["PKCS_7_ASN_ENCODING"]
KEY_PROV_INFO_PROP_ID = _K["CERT_KEY_PROV_INFO_PROP_ID"]
SHA1_HASH_PROP_ID = _K["CERT_SHA1_HASH_PROP_ID"]
FRIENDLY_NAME_PROP_ID = _K["CERT_FRIENDLY_NAME_PROP_ID"]
CERT_NCRYPT_KEY_SPEC = _K["CERT_NCRYPT_KEY_SPEC"]
CRYPT_MACHINE_KEYSET = _K["CRYPT_MACHINE_KEYSET"]
STORE_PROV_SYSTEM_W = _K["CERT_STORE_PROV_SYSTEM_W"]
SYSTEM_STORE_CURRENT_USER = _K["CERT_SYSTEM_STORE_CURRENT_USER"]
STORE_OPEN_EXISTING_FLAG = _K["CERT_STORE_OPEN_EXISTING_FLAG"]
STORE_READONLY_FLAG = _K["CERT_STORE_READONLY_FLAG"]
ADD_REPLACE_EXISTING_INHERIT_PROPERTIES = _K["CERT_STORE_ADD_REPLACE_EXISTING_INHERIT_PROPERTIES"]
ACQUIRE_SILENT_FLAG = _K["CRYPT_ACQUIRE_SILENT_FLAG"]
ACQUIRE_ONLY_NCRYPT_KEY_FLAG = _K["CRYPT_ACQUIRE_ONLY_NCRYPT_KEY_FLAG"]

CRYPT_E_NOT_FOUND = 0x80092004
ERROR_MORE_DATA = 234


def library(environ: Mapping[str, str] = os.environ) -> Any:
    """``crypt32.dll`` (or its stand-in)."""
    return _loader.system_library("crypt32", environ)


def _fail(function: str) -> Win32Error:
    return Win32Error(function, _loader.last_error())


class CertContext(OwnedHandle):
    """One reference to a ``CERT_CONTEXT``."""

    def __init__(self, lib: Any, pointer: Any) -> None:
        super().__init__(pointer)
        self.lib = lib

    @classmethod
    def from_der(cls, der: bytes, environ: Mapping[str, str] = os.environ) -> CertContext:
        """``CertCreateCertificateContext`` (the DER is copied by Crypt32)."""
        lib = library(environ)
        pointer = lib.CertCreateCertificateContext(ENCODING, ffi.from_buffer("BYTE[]", der), len(der))
        if pointer == ffi.NULL:
            raise _fail("CertCreateCertificateContext")
        return cls(lib, pointer)

    def _release(self, value: Any) -> None:
        self.lib.CertFreeCertificateContext(value)

    @property
    def pointer(self) -> Any:
        """The ``PCCERT_CONTEXT`` (borrowed: valid until :meth:`close`)."""
        if self._value is None:
            raise Win32Error("CertContext", 6, "the certificate context is closed")
        return self._value

    @property
    def der(self) -> bytes:
        """The encoded certificate."""
        context = self.pointer
        return bytes(ffi.buffer(context.pbCertEncoded, context.cbCertEncoded))

    def duplicate(self) -> CertContext:
        """A second reference (``CertDuplicateCertificateContext``)."""
        return CertContext(self.lib, self.lib.CertDuplicateCertificateContext(self.pointer))

    def get_property(self, prop_id: int) -> bytes | None:
        """A property's bytes (size query first), or ``None`` when it is not set."""
        found = self._property_buffer(prop_id)
        return None if found is None else bytes(ffi.buffer(found[0], found[1]))

    def _property_buffer(self, prop_id: int) -> tuple[Any, int] | None:
        """The property in a cffi buffer (pointers inside it point into it: keep it alive) and its size."""
        size = ffi.new("DWORD *")
        for _ in range(3):
            if not self.lib.CertGetCertificateContextProperty(self.pointer, prop_id, ffi.NULL, size):
                error = _loader.last_error()
                if error == CRYPT_E_NOT_FOUND:
                    return None
                raise Win32Error(f"CertGetCertificateContextProperty({prop_id})", error)
            buffer = ffi.new("BYTE[]", max(size[0], 1))
            if self.lib.CertGetCertificateContextProperty(self.pointer, prop_id, buffer, size):
                return buffer, int(size[0])
            error = _loader.last_error()
            if error != ERROR_MORE_DATA:
                raise Win32Error(f"CertGetCertificateContextProperty({prop_id})", error)
        raise Win32Error(f"CertGetCertificateContextProperty({prop_id})", ERROR_MORE_DATA)

    def _set_property(self, prop_id: int, data: Any, flags: int = 0) -> None:
        if not self.lib.CertSetCertificateContextProperty(self.pointer, prop_id, flags, data):
            raise _fail(f"CertSetCertificateContextProperty({prop_id})")

    def bind_key_by_name(
        self, container: str, provider: str = MS_KEY_STORAGE_PROVIDER, *, machine: bool = False
    ) -> None:
        """Set ``CERT_KEY_PROV_INFO_PROP_ID``: the CNG key ``container`` of ``provider`` (dwProvType 0)."""
        container_w = ffi.new("wchar_t[]", container)
        provider_w = ffi.new("wchar_t[]", provider)
        info = ffi.new(
            "CRYPT_KEY_PROV_INFO *",
            {
                "pwszContainerName": container_w,
                "pwszProvName": provider_w,
                "dwProvType": 0,
                "dwFlags": CRYPT_MACHINE_KEYSET if machine else 0,
                "cProvParam": 0,
                "rgProvParam": ffi.NULL,
                "dwKeySpec": 0,
            },
        )
        self._set_property(KEY_PROV_INFO_PROP_ID, info)

    def key_container(self) -> tuple[str, str] | None:
        """``(container, provider)`` of the bound key, or ``None`` without ``CERT_KEY_PROV_INFO_PROP_ID``."""
        found = self._property_buffer(KEY_PROV_INFO_PROP_ID)
        if found is None:
            return None
        buffer = found[0]  # the strings live inside this buffer
        info: Any = ffi.cast("CRYPT_KEY_PROV_INFO *", buffer)
        container = ffi.string(info.pwszContainerName) if info.pwszContainerName != ffi.NULL else ""
        provider = ffi.string(info.pwszProvName) if info.pwszProvName != ffi.NULL else ""
        return str(container), str(provider)

    def set_friendly_name(self, name: str) -> None:
        """``CERT_FRIENDLY_NAME_PROP_ID``: the wide string including its terminating NUL."""
        text = ffi.new("wchar_t[]", name)
        blob = ffi.new("CRYPT_DATA_BLOB *", {"cbData": ffi.sizeof(text), "pbData": ffi.cast("BYTE *", text)})
        self._set_property(FRIENDLY_NAME_PROP_ID, blob)

    def friendly_name(self) -> str | None:
        """The friendly name, or ``None``."""
        raw = self.get_property(FRIENDLY_NAME_PROP_ID)
        if raw is None:
            return None
        width = ffi.sizeof("wchar_t")
        array = ffi.from_buffer("wchar_t[]", raw[: len(raw) - len(raw) % width])
        return str(ffi.string(array, len(raw) // width))

    def sha1_thumbprint(self) -> bytes:
        """``CERT_SHA1_HASH_PROP_ID`` (computed by Crypt32)."""
        raw = self.get_property(SHA1_HASH_PROP_ID)
        if raw is None:
            raise Win32Error("CertGetCertificateContextProperty(3)", CRYPT_E_NOT_FOUND)
        return raw

    @contextmanager
    def private_key(self) -> Iterator[int]:
        """The bound CNG key handle (``CryptAcquireCertificatePrivateKey``), freed afterwards if ours."""
        handle = ffi.new("HCRYPTPROV_OR_NCRYPT_KEY_HANDLE *")
        spec = ffi.new("DWORD *")
        caller_free = ffi.new("BOOL *")
        flags = ACQUIRE_ONLY_NCRYPT_KEY_FLAG | ACQUIRE_SILENT_FLAG
        if not self.lib.CryptAcquireCertificatePrivateKey(
            self.pointer, flags, ffi.NULL, handle, spec, caller_free
        ):
            raise _fail("CryptAcquireCertificatePrivateKey")
        try:
            if spec[0] != CERT_NCRYPT_KEY_SPEC:
                raise Win32Error("CryptAcquireCertificatePrivateKey", 0x80090008, "not a CNG key")
            yield int(handle[0])
        finally:
            if caller_free[0]:
                _loader.system_library("ncrypt").NCryptFreeObject(handle[0])


class CertStore(OwnedHandle):
    """An open system certificate store (default ``CurrentUser\\My``)."""

    def __init__(
        self, name: str = "My", *, readonly: bool = False, environ: Mapping[str, str] = os.environ
    ) -> None:
        self.lib = library(environ)
        flags = SYSTEM_STORE_CURRENT_USER | (
            STORE_OPEN_EXISTING_FLAG | STORE_READONLY_FLAG if readonly else 0
        )
        store = self.lib.CertOpenStore(
            ffi.cast("LPCSTR", STORE_PROV_SYSTEM_W), 0, 0, flags, ffi.new("wchar_t[]", name)
        )
        if store == ffi.NULL:
            raise _fail(f"CertOpenStore({name})")
        super().__init__(store)
        self.name = name

    def _release(self, value: Any) -> None:
        self.lib.CertCloseStore(value, 0)

    @property
    def handle(self) -> Any:
        """The ``HCERTSTORE``."""
        if self._value is None:
            raise Win32Error("CertStore", 6, "the store is closed")
        return self._value

    def certificates(self) -> list[CertContext]:
        """A snapshot of every certificate; the caller closes each returned context."""
        found: list[CertContext] = []
        previous = ffi.NULL
        while True:
            current = self.lib.CertEnumCertificatesInStore(self.handle, previous)  # frees ``previous``
            if current == ffi.NULL:
                error = _loader.last_error()
                if error not in (CRYPT_E_NOT_FOUND, 0):
                    for context in found:
                        context.close()
                    raise Win32Error("CertEnumCertificatesInStore", error)
                return found
            found.append(CertContext(self.lib, self.lib.CertDuplicateCertificateContext(current)))
            previous = current

    def add(
        self, context: CertContext, disposition: int = ADD_REPLACE_EXISTING_INHERIT_PROPERTIES
    ) -> CertContext:
        """Add a copy of ``context`` (with its properties); returns the store's context."""
        out = ffi.new("PCCERT_CONTEXT *")
        if not self.lib.CertAddCertificateContextToStore(self.handle, context.pointer, disposition, out):
            raise _fail("CertAddCertificateContextToStore")
        return CertContext(self.lib, out[0])

    def delete(self, context: CertContext) -> None:
        """Remove ``context``'s certificate from the store; the call consumes a reference, so a
        duplicate is passed and ``context`` stays the caller's to close."""
        if not self.lib.CertDeleteCertificateFromStore(
            self.lib.CertDuplicateCertificateContext(context.pointer)
        ):
            raise _fail("CertDeleteCertificateFromStore")
