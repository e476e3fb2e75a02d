"""On a real Azure Windows VM with VBS: what only the real DLLs can show (NATIVE.md §8), and timings.

Skipped off Windows. Run on the VM (README, "KeyGuard backend (Windows)")::

    .venv\\Scripts\\pytest tests/native/test_windows_vbs.py -m windows_vbs -v -s

With ``MSIV2_ASYNC_TEST_REAL_IMDS=1`` the last test also acquires a token from the VM's real IMDS and
the regional mTLS STS. The benchmark prints one JSON line (``KEYGUARD_BENCHMARKS {...}``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

pytestmark = [
    pytest.mark.windows_vbs,
    pytest.mark.skipif(sys.platform != "win32", reason="needs a real Windows host with VBS (KeyGuard)"),
]

ENDPOINT_ENV = "MSIV2_ASYNC_TEST_ATTESTATION_ENDPOINT"
DEFAULT_ENDPOINT = "https://sharedeus2.eus2.attest.azure.net"


@pytest.fixture
def key_name() -> Iterator[str]:
    """A fresh key name; the key is deleted afterwards."""
    from msiv2_async._native import ncrypt

    name = f"MsiV2AsyncTest_{uuid.uuid4().hex[:12]}"
    yield name
    with ncrypt.Provider() as provider:
        for suffix in ("", "_cng"):
            with contextlib.suppress(ncrypt.NCryptError):
                provider.open_key(name + suffix).delete()


def test_keyguard_key_is_vbs_isolated_and_per_boot(key_name: str) -> None:
    from msiv2_async_keyguard._keys import KEYGUARD, open_or_create

    from msiv2_async._native import ncrypt

    with ncrypt.Provider() as provider:
        opened = open_or_create(provider, KEYGUARD, key_name)
        with opened.key as key:
            assert key.get_dword(ncrypt.VIRTUAL_ISO) != 0
            assert key.get_dword(ncrypt.EXPORT_POLICY) == 0
            impl_type = key.get_dword(ncrypt.IMPL_TYPE)  # NATIVE.md §8.5
            per_boot = key.get_dword(ncrypt.PER_BOOT_KEY)
            print(f"\nImpl Type 0x{impl_type:x}, Per Boot Key {per_boot}")
            assert impl_type & ncrypt.IMPL_VIRTUAL_ISOLATION_FLAG
        reopened = open_or_create(provider, KEYGUARD, key_name)
        with reopened.key:
            assert not reopened.created
            assert reopened.modulus == opened.modulus


def test_private_key_cannot_be_exported(key_name: str) -> None:
    from msiv2_async_keyguard._keys import KEYGUARD, open_or_create

    from msiv2_async._native import ncrypt

    with ncrypt.Provider() as provider, open_or_create(provider, KEYGUARD, key_name).key as key:
        size = ncrypt.ffi.new("DWORD *")
        status = key.lib.NCryptExportKey(
            key.handle, 0, "RSAPRIVATEBLOB", ncrypt.ffi.NULL, ncrypt.ffi.NULL, 0, size, 0
        )
        assert status & 0xFFFFFFFF != 0


def test_pss_signature_of_the_keyguard_key_verifies(key_name: str) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from msiv2_async_keyguard._keys import KEYGUARD, open_or_create

    from msiv2_async._native import ncrypt

    with ncrypt.Provider() as provider:
        opened = open_or_create(provider, KEYGUARD, key_name)
        with opened.key as key:
            signature = key.sign_pss_sha256(hashlib.sha256(b"csr").digest())
    public = rsa.RSAPublicNumbers(opened.exponent, opened.modulus).public_key()
    public.verify(signature, b"csr", padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())


def test_maa_attests_the_keyguard_key(key_name: str) -> None:
    from msiv2_async_keyguard._attestation_cache import jwt_expiry
    from msiv2_async_keyguard._keys import KEYGUARD, open_or_create

    from msiv2_async._native import ncrypt
    from msiv2_async._native.attestation import AttestationLibrary

    library = AttestationLibrary.find()
    endpoint = os.environ.get(ENDPOINT_ENV, DEFAULT_ENDPOINT)
    with ncrypt.Provider() as provider, open_or_create(provider, KEYGUARD, key_name).key as key:
        token = library.attest_keyguard_key(
            endpoint, key.handle, os.environ.get("MSIV2_ASYNC_TEST_CLIENT_ID", "")
        )
    expiry = jwt_expiry(token)
    assert expiry is not None
    assert expiry > time.time()


def test_schannel_mtls_with_the_keyguard_key_against_the_emulator() -> None:
    import anyio

    from msiv2_async import MsiV2Client
    from msiv2_async.emulator import Emulator

    async def flow() -> None:
        async with (
            Emulator() as emulator,
            MsiV2Client(
                backend="keyguard",
                attestation=False,
                imds_endpoint=emulator.imds_url,
                ca_bundle=emulator.ca_bundle_path,
                allowed_token_hosts=[emulator.allowed_token_host],
            ) as client,
        ):
            token = await client.acquire_token()
            async with await client.resource_client(token) as http:
                response = await http.get(emulator.resource_url + "/v1.0/me")
            assert response.status_code == 200
            assert response.json()["verified"] is True

    anyio.run(flow)


def test_closing_a_request_from_another_thread_unblocks_it() -> None:
    """NATIVE.md §8.4: a synchronous WinHTTP call returns once its handle is closed elsewhere."""
    import socket

    from msiv2_async._native import winhttp
    from msiv2_async._native.errors import WinHttpError

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the TCP connection, never answers the TLS handshake
    try:
        with winhttp.Session() as session:
            exchange = winhttp.Exchange(
                session,
                "GET",
                f"https://127.0.0.1:{listener.getsockname()[1]}/",
                [],
                b"",
                client_certificate=None,
                timeouts=winhttp.Timeouts(connect=10_000, send=10_000, receive=10_000),
            )
            threading.Timer(0.5, exchange.cancel).start()
            started = time.monotonic()
            with pytest.raises(WinHttpError):
                exchange.run()
            assert time.monotonic() - started < 5
    finally:
        listener.close()


def _timed(action: Callable[[], object], rounds: int) -> dict[str, float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return {"median_ms": round(statistics.median(samples), 2), "max_ms": round(max(samples), 2)}


def test_benchmarks(key_name: str) -> None:
    """Key creation, reopen with liveness probe, PSS signing and (if available) attestation."""
    from msiv2_async_keyguard._keys import KEYGUARD, open_or_create

    from msiv2_async._native import ncrypt
    from msiv2_async._native.attestation import AttestationLibrary

    results: dict[str, object] = {}
    with ncrypt.Provider() as provider:
        started = time.perf_counter()
        opened = open_or_create(provider, KEYGUARD, key_name)
        results["create_keyguard_key_ms"] = round((time.perf_counter() - started) * 1000, 2)
        opened.key.close()
        results["open_and_probe"] = _timed(
            lambda: open_or_create(provider, KEYGUARD, key_name).key.close(), 5
        )
        with provider.open_key(key_name) as key:
            digest = hashlib.sha256(b"bench").digest()
            results["sign_pss"] = _timed(lambda: key.sign_pss_sha256(digest), 20)
            try:
                library = AttestationLibrary.find()
            except Exception as exc:
                results["attest"] = f"skipped: {exc}"
            else:
                endpoint = os.environ.get(ENDPOINT_ENV, DEFAULT_ENDPOINT)
                results["attest"] = _timed(lambda: library.attest_keyguard_key(endpoint, key.handle, ""), 3)
    print("\nKEYGUARD_BENCHMARKS " + json.dumps(results))


@pytest.mark.skipif(
    not os.environ.get("MSIV2_ASYNC_TEST_REAL_IMDS"), reason="set MSIV2_ASYNC_TEST_REAL_IMDS=1"
)
def test_real_imds_token_with_keyguard_and_attestation() -> None:
    import anyio

    from msiv2_async import MsiV2Client

    async def flow() -> None:
        async with MsiV2Client(backend="keyguard", attestation=True) as client:
            token = await client.acquire_token(
                os.environ.get("MSIV2_ASYNC_TEST_SCOPE", "https://graph.microsoft.com/.default")
            )
            assert token.token_type == "mtls_pop"
            assert client.backend.binding_strength == "keyguard"

    anyio.run(flow)
