"""The KeyGuard backend on the stand-ins: viability, the key ladder, signing, attestation cache, store."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import anyio
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from msiv2_async_keyguard import ALLOW_WEAKER_ENV, KeyGuardBackend
from msiv2_async_keyguard._attestation_cache import jwt_expiry
from msiv2_async_keyguard._backend import reset_isolation_probe
from native_support import Controls, Pki

from msiv2_async import BackendError, MsiV2UnavailableError
from msiv2_async._native import ncrypt
from msiv2_async._store import PersistedBinding

KEY_NAME = "MsiV2AsyncKey_0f1e2d3c-4b5a-4697-8877-665544332211"
ENDPOINT = "https://sharedeus2.eus2.attest.azure.net"
VBS_UNAVAILABLE = 0x80890014


def public_key(backend: KeyGuardBackend) -> rsa.RSAPublicKey:
    numbers = backend.open_key(KEY_NAME)
    return rsa.RSAPublicNumbers(numbers.exponent, numbers.modulus).public_key()


def test_viable_with_priority_above_software_in_the_test_mode(native: Controls) -> None:
    assert KeyGuardBackend.priority() == 10.0


def test_not_viable_without_windows_or_stand_ins(native: Controls, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MSIV2_ASYNC_NATIVE_STANDINS")
    with pytest.raises(MsiV2UnavailableError, match="needs Windows"):
        KeyGuardBackend.priority()
    with pytest.raises(MsiV2UnavailableError):
        KeyGuardBackend()


def test_without_vbs_not_viable_unless_a_weaker_key_is_allowed(
    native: Controls, monkeypatch: pytest.MonkeyPatch
) -> None:
    native.ncrypt.StandinNCryptSetVbs(0)
    with pytest.raises(MsiV2UnavailableError, match=f"VBS_KEY_ISOLATION_UNAVAILABLE.*{ALLOW_WEAKER_ENV}"):
        KeyGuardBackend.priority()
    monkeypatch.setenv(ALLOW_WEAKER_ENV, "1")
    assert KeyGuardBackend.priority() == 5.0
    backend = KeyGuardBackend()
    try:
        assert (backend.binding_strength, backend.supports_attestation) == ("software", False)
        public_key(backend)
        assert backend.key_container == KEY_NAME + "_cng"
        assert backend.attest(endpoint=ENDPOINT, client_id="c") is None
    finally:
        backend.close()


def test_creates_a_keyguard_key_then_reopens_it(native: Controls) -> None:
    first, second = KeyGuardBackend(), KeyGuardBackend()
    try:
        created = public_key(first)
        assert first.binding_strength == "keyguard"
        assert first.supports_attestation
        assert public_key(second).public_numbers() == created.public_numbers()
        assert native.ncrypt.StandinNCryptKeyCount() == 1
        with ncrypt.Provider() as provider, provider.open_key(KEY_NAME) as key:
            assert key.get_dword(ncrypt.VIRTUAL_ISO) == 1
            assert key.get_dword(ncrypt.EXPORT_POLICY) == 0
    finally:
        first.close()
        second.close()


def test_stale_per_boot_key_is_replaced(native: Controls) -> None:
    backend = KeyGuardBackend()
    before = public_key(backend).public_numbers()
    backend.close()
    native.ncrypt.StandinNCryptReboot()
    backend = KeyGuardBackend()
    try:
        assert public_key(backend).public_numbers() != before
        assert native.ncrypt.StandinNCryptKeyCount() == 1
    finally:
        backend.close()


def test_a_concurrent_creator_wins_and_we_open_its_key(native: Controls) -> None:
    other = KeyGuardBackend()
    theirs = public_key(other).public_numbers()
    other.close()
    native.fail_next("NCryptOpenKey", ncrypt.NTE_BAD_KEYSET)  # we look before they finish: absent
    backend = KeyGuardBackend()
    try:
        assert public_key(backend).public_numbers() == theirs  # our create hit NTE_EXISTS, we reopened
    finally:
        backend.close()


def test_keyguard_failure_is_not_silently_downgraded(native: Controls) -> None:
    backend = KeyGuardBackend()
    native.fail_next("NCryptFinalizeKey", VBS_UNAVAILABLE)
    try:
        with pytest.raises(
            BackendError, match=f"keyguard: .*VBS_KEY_ISOLATION_UNAVAILABLE.*{ALLOW_WEAKER_ENV}"
        ):
            backend.open_key(KEY_NAME)
    finally:
        backend.close()


def test_keyguard_failure_falls_back_when_allowed_and_says_so(native: Controls) -> None:
    backend = KeyGuardBackend(allow_weaker_key=True)
    native.fail_next("NCryptFinalizeKey", VBS_UNAVAILABLE)
    try:
        public_key(backend)
        assert backend.binding_strength == "software"
        assert backend.attest(endpoint=ENDPOINT, client_id="c") is None
    finally:
        backend.close()


def test_sign_is_pss_sha256_salt_32_over_the_data(native: Controls) -> None:
    backend = KeyGuardBackend()
    try:
        key = public_key(backend)
        signature = backend.sign(b"request info")
        key.verify(
            signature, b"request info", padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256()
        )
    finally:
        backend.close()


def test_attestation_is_cached_until_shortly_before_exp(native: Controls) -> None:
    now = [datetime.now(timezone.utc).timestamp()]
    backend = KeyGuardBackend(clock=lambda: now[0])
    try:
        public_key(backend)
        token = backend.attest(endpoint=ENDPOINT, client_id="c")
        assert token is not None
        assert backend.attest(endpoint=ENDPOINT + "/", client_id="c") == token
        assert native.attest.StandinAttestCalls() == 1
        expiry = jwt_expiry(token)
        assert expiry is not None
        now[0] = expiry - 299
        backend.attest(endpoint=ENDPOINT, client_id="c")
        assert native.attest.StandinAttestCalls() == 2  # less than 5 minutes left: attested again
    finally:
        backend.close()


def test_short_lived_attestation_is_not_cached(native: Controls) -> None:
    native.attest.StandinAttestSetLifetime(120)
    backend = KeyGuardBackend()
    try:
        public_key(backend)
        backend.attest(endpoint=ENDPOINT, client_id="c")
        backend.attest(endpoint=ENDPOINT, client_id="c")
        assert native.attest.StandinAttestCalls() == 2
    finally:
        backend.close()


def test_no_attestation_library_means_no_attestation(
    native: Controls, monkeypatch: pytest.MonkeyPatch
) -> None:
    (native.directory / "libAttestationClientLib.so").rename(native.directory / "hidden.so")
    try:
        reset_isolation_probe()
        backend = KeyGuardBackend()
        assert backend.supports_attestation is False
        backend.close()
    finally:
        (native.directory / "hidden.so").rename(native.directory / "libAttestationClientLib.so")


def test_mtls_transport_refuses_a_certificate_for_another_key(native: Controls, pki: Pki) -> None:
    backend = KeyGuardBackend()
    try:
        public_key(backend)
        der = pki.server_cert.public_bytes(serialization.Encoding.DER)
        with pytest.raises(BackendError, match="not for the KeyGuard backend's key"):
            backend.mtls_transport(der, tls=__import__("msiv2_async").backends.TlsSettings())
    finally:
        backend.close()


def binding_for(pki: Pki, key: rsa.RSAPublicKey, days: int = 1) -> PersistedBinding:
    der = pki.issue(key, "11111111-2222-3333-4444-555555555555", days=days).public_bytes(
        serialization.Encoding.DER
    )
    return PersistedBinding(der, "client-id", "tenant-id", "https://127.0.0.1:1", attested=True)


@pytest.mark.anyio
async def test_certificate_store_round_trip_and_orphans(native: Controls, pki: Pki) -> None:
    backend = KeyGuardBackend()
    try:
        key = await anyio.to_thread.run_sync(public_key, backend)
        store = backend.binding_store(lock_directory=str(native.directory / "locks"))
        assert await store.load("slot") is None
        older, newer = binding_for(pki, key, days=1), binding_for(pki, key, days=2)
        await store.save("slot", older)
        await store.save("slot", newer)
        assert native.store_count() == 1
        assert await store.load("slot") == newer
        assert await store.load("other slot") is None
        async with store.mint_lock("slot"):
            pass
        await anyio.to_thread.run_sync(backend.close)
        native.ncrypt.StandinNCryptReboot()
        backend = KeyGuardBackend()
        await anyio.to_thread.run_sync(public_key, backend)  # re-created: the stored certificate is orphaned
        assert await store.load("slot") is None
        assert native.store_count() == 0
    finally:
        backend.close()


def test_jwt_expiry_parsing() -> None:
    assert jwt_expiry("a.b") is None
    assert jwt_expiry("e30.eyJleHAiOjEyM30.x") == 123.0
    assert jwt_expiry("e30.eyJleHAiOnRydWV9.x") is None
    assert hashlib.sha256(b"").hexdigest()  # keep hashlib for readers: the key id hashes the modulus
