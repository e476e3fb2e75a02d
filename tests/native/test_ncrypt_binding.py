"""NCrypt bindings against the stand-in: providers, persisted keys, properties, PSS signatures, errors."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from native_support import Controls

from msiv2_async._native import ncrypt
from msiv2_async._native.errors import NCryptError

PSS_32 = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def create(provider: ncrypt.Provider, name: str | None, flags: int = 0) -> ncrypt.Key:
    key = provider.create_key(name, flags=flags)
    key.set_dword(ncrypt.EXPORT_POLICY, 0, ncrypt.PERSIST_FLAG)
    key.set_dword(ncrypt.KEY_USAGE, ncrypt.ALLOW_ALL_USAGES, ncrypt.PERSIST_FLAG)
    key.set_dword(ncrypt.LENGTH, 2048)
    key.finalize()
    return key


def test_opening_a_missing_key_is_nte_bad_keyset(native: Controls) -> None:
    with ncrypt.Provider() as provider, pytest.raises(NCryptError) as caught:
        provider.open_key("absent")
    assert caught.value.code == ncrypt.NTE_BAD_KEYSET
    assert caught.value.name == "NTE_BAD_KEYSET"
    assert "NCryptOpenKey failed: NTE_BAD_KEYSET (0x80090016)" in str(caught.value)


def test_unknown_provider_is_a_typed_error(native: Controls) -> None:
    with pytest.raises(NCryptError, match="NTE_PROV_DLL_NOT_FOUND"):
        ncrypt.Provider("No Such Provider")


def test_keyguard_key_properties(native: Controls) -> None:
    flags = ncrypt.USE_VIRTUAL_ISOLATION_FLAG | ncrypt.USE_PER_BOOT_KEY_FLAG
    with ncrypt.Provider() as provider, create(provider, "kg", flags) as key:
        assert key.get_dword(ncrypt.VIRTUAL_ISO) == 1
        assert key.get_dword(ncrypt.IMPL_TYPE) & ncrypt.IMPL_VIRTUAL_ISOLATION_FLAG
        assert key.get_dword(ncrypt.PER_BOOT_KEY) == 1
        assert key.get_dword(ncrypt.LENGTH) == 2048
        assert key.get_dword(ncrypt.EXPORT_POLICY) == 0
        assert key.get_string(ncrypt.NAME) == "kg"
        assert key.get_string(ncrypt.ALGORITHM_NAME) == "RSA"


def test_software_key_has_no_virtual_iso_property(native: Controls) -> None:
    with ncrypt.Provider() as provider, create(provider, "sw") as key, pytest.raises(NCryptError) as caught:
        key.get_dword(ncrypt.VIRTUAL_ISO)
    assert caught.value.name == "NTE_NOT_FOUND"


def test_pss_signature_verifies_with_cryptography(native: Controls) -> None:
    with ncrypt.Provider() as provider, create(provider, None) as key:
        modulus, exponent = key.public_numbers()
        assert modulus.bit_length() == 2048
        assert exponent == 65537
        data = b"CertificationRequestInfo"
        signature = key.sign_pss_sha256(hashlib.sha256(data).digest())
        assert len(signature) == 256
        public = rsa.RSAPublicNumbers(exponent, modulus).public_key()
        public.verify(signature, data, PSS_32, hashes.SHA256())
        assert key.verify_pss_sha256(hashlib.sha256(data).digest(), signature)
        assert not key.verify_pss_sha256(hashlib.sha256(b"other").digest(), signature)


def test_sign_takes_a_digest_not_data(native: Controls) -> None:
    with (
        ncrypt.Provider() as provider,
        create(provider, None) as key,
        pytest.raises(ValueError, match="digest"),
    ):
        key.sign_pss_sha256(b"not a digest")


def test_persisted_key_is_shared_by_handles_and_listed(native: Controls) -> None:
    with ncrypt.Provider() as provider:
        with create(provider, "shared") as first, provider.open_key("shared") as second:
            assert first.public_numbers() == second.public_numbers()
        assert provider.key_names() == ["shared"]


def test_create_without_overwrite_on_an_existing_name_is_nte_exists(native: Controls) -> None:
    with ncrypt.Provider() as provider, create(provider, "taken"):
        with pytest.raises(NCryptError) as caught:
            provider.create_key("taken")
        assert caught.value.code == ncrypt.NTE_EXISTS


def test_delete_frees_the_handle_and_the_key(native: Controls) -> None:
    with ncrypt.Provider() as provider:
        key = create(provider, "doomed")
        key.delete()
        assert key.closed
        with pytest.raises(NCryptError, match="NTE_BAD_KEYSET"):
            provider.open_key("doomed")


def test_failed_finalize_leaves_the_handle_ours_to_free(native: Controls) -> None:
    native.ncrypt.StandinNCryptSetVbs(0)
    with ncrypt.Provider() as provider:
        key = provider.create_key("novbs", flags=ncrypt.USE_VIRTUAL_ISOLATION_FLAG)
        with pytest.raises(NCryptError) as caught:
            key.finalize()
        assert caught.value.code == 0x80890014
        assert caught.value.name == "VBS_KEY_ISOLATION_UNAVAILABLE"
        key.close()


def test_per_boot_key_opens_but_cannot_sign_after_a_reboot(native: Controls) -> None:
    with ncrypt.Provider() as provider:
        create(provider, "perboot", ncrypt.USE_VIRTUAL_ISOLATION_FLAG | ncrypt.USE_PER_BOOT_KEY_FLAG).close()
        native.ncrypt.StandinNCryptReboot()
        with provider.open_key("perboot") as key, pytest.raises(NCryptError, match="NTE_BAD_KEY_STATE"):
            key.sign_pss_sha256(hashlib.sha256(b"\x00").digest())


def test_closed_handle_is_an_error_not_a_crash(native: Controls) -> None:
    with ncrypt.Provider() as provider:
        key = create(provider, None)
        key.close()
        key.close()
        with pytest.raises(NCryptError, match="NTE_INVALID_HANDLE"):
            key.sign_pss_sha256(hashlib.sha256(b"x").digest())


def test_rsa_public_blob_parser_rejects_garbage() -> None:
    with pytest.raises(NCryptError):
        ncrypt.parse_rsa_public_blob(b"\x00" * 30)
