"""Crypt32 bindings against the stand-in: contexts, key binding by name, friendly names, the store."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from native_support import Controls, Pki

from msiv2_async._native import ncrypt
from msiv2_async._native.crypt32 import CertContext, CertStore
from msiv2_async._native.errors import Win32Error


def keyguard_key(provider: ncrypt.Provider, name: str) -> ncrypt.Key:
    key = provider.create_key(name, flags=ncrypt.USE_VIRTUAL_ISOLATION_FLAG | ncrypt.USE_PER_BOOT_KEY_FLAG)
    key.set_dword(ncrypt.EXPORT_POLICY, 0, ncrypt.PERSIST_FLAG)
    key.finalize()
    return key


def certificate_for(pki: Pki, key: ncrypt.Key, name: str = "client") -> bytes:
    modulus, exponent = key.public_numbers()
    public = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    return pki.issue(public, name).public_bytes(serialization.Encoding.DER)


def test_context_copies_the_der(native: Controls, pki: Pki) -> None:
    der = pki.server_cert.public_bytes(serialization.Encoding.DER)
    with CertContext.from_der(der) as context:
        assert context.der == der
        assert context.sha1_thumbprint() == hashlib.sha1(der).digest()


def test_invalid_der_is_crypt_e_asn1_badtag(native: Controls) -> None:
    with pytest.raises(Win32Error, match="CRYPT_E_ASN1_BADTAG"):
        CertContext.from_der(b"\x30\x03\x02\x01")


def test_bind_key_by_name_then_acquire_it(native: Controls, pki: Pki) -> None:
    with (
        ncrypt.Provider() as provider,
        keyguard_key(provider, "bound") as key,
        CertContext.from_der(certificate_for(pki, key)) as context,
    ):
        assert context.key_container() is None
        context.bind_key_by_name("bound")
        assert context.key_container() == ("bound", ncrypt.MS_KEY_STORAGE_PROVIDER)
        with context.private_key() as handle, ncrypt.borrowed(handle) as acquired:
            assert acquired.public_numbers() == key.public_numbers()


def test_acquire_without_a_bound_key_is_no_key_property(native: Controls, pki: Pki) -> None:
    der = pki.server_cert.public_bytes(serialization.Encoding.DER)
    with (
        CertContext.from_der(der) as context,
        pytest.raises(Win32Error, match="CRYPT_E_NO_KEY_PROPERTY"),
        context.private_key(),
    ):
        pass


def test_friendly_name_round_trip(native: Controls, pki: Pki) -> None:
    der = pki.server_cert.public_bytes(serialization.Encoding.DER)
    with CertContext.from_der(der) as context:
        assert context.friendly_name() is None
        context.set_friendly_name("msiv2_async|v=1|slot=abc")
        assert context.friendly_name() == "msiv2_async|v=1|slot=abc"


def test_store_add_enumerate_delete(native: Controls, pki: Pki) -> None:
    der = pki.server_cert.public_bytes(serialization.Encoding.DER)
    with CertStore("My") as store, CertContext.from_der(der) as context:
        context.set_friendly_name("first")
        store.add(context).close()
        context.set_friendly_name("second")
        store.add(context).close()  # same certificate: replaced, one entry
        assert native.store_count("My") == 1
        listed = store.certificates()
        assert [c.friendly_name() for c in listed] == ["second"]
        store.delete(listed[0])
        for c in listed:
            c.close()
        assert native.store_count("My") == 0


def test_replace_inherits_properties_it_does_not_set(native: Controls, pki: Pki) -> None:
    der = pki.server_cert.public_bytes(serialization.Encoding.DER)
    with CertStore("My") as store:
        with CertContext.from_der(der) as context:
            context.set_friendly_name("keep me")
            store.add(context).close()
        with CertContext.from_der(der) as bare:
            added = store.add(bare)
        with added:
            assert added.friendly_name() == "keep me"


def test_read_only_store_refuses_writes(native: Controls, pki: Pki) -> None:
    der = pki.server_cert.public_bytes(serialization.Encoding.DER)
    with (
        CertStore("My", readonly=True) as store,
        CertContext.from_der(der) as context,
        pytest.raises(Win32Error, match="E_ACCESSDENIED"),
    ):
        store.add(context)


def test_opening_a_missing_store_read_only_fails(native: Controls) -> None:
    with pytest.raises(Win32Error, match="ERROR_FILE_NOT_FOUND"):
        CertStore("NoSuchStore", readonly=True)
