"""End to end on Linux: the KeyGuard backend against the emulator, every DLL replaced by its stand-in.

Key ladder, CSR signed through the NCrypt stand-in, attestation through the AttestationClientLib
stand-in (the emulator demands it), mTLS to the STS and the resource through the WinHTTP stand-in,
persistence in the Crypt32 stand-in's certificate store; and the CLI in the documented test mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from msiv2_async_keyguard import CertStoreBindingStore, KeyGuardBackend
from native_support import Controls

from msiv2_async import MsiV2Client
from msiv2_async.emulator import Emulator

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def attested_emulator() -> Iterator[Emulator]:
    with Emulator(require_attestation=True) as emulator:
        yield emulator


@pytest.fixture
def emulator(attested_emulator: Emulator) -> Emulator:
    attested_emulator.reset_stats()
    attested_emulator.clear_faults()
    return attested_emulator


def client(emulator: Emulator, **kwargs: object) -> MsiV2Client:
    return MsiV2Client(
        imds_endpoint=emulator.imds_url,
        ca_bundle=emulator.ca_bundle_path,
        allowed_token_hosts=[emulator.allowed_token_host],
        **kwargs,  # type: ignore[arg-type]
    )


async def test_keyguard_is_the_default_backend_in_the_test_mode(native: Controls, emulator: Emulator) -> None:
    async with client(emulator) as msi:
        assert msi.backend.name == "keyguard"


async def test_token_and_resource_call_through_the_stand_ins(native: Controls, emulator: Emulator) -> None:
    async with client(emulator, backend="keyguard") as msi:
        token = await msi.acquire_token("https://graph.microsoft.com/.default")
        assert token.token_type == "mtls_pop"
        assert token.binding_certificate.backend == "keyguard"
        assert msi.backend.binding_strength == "keyguard"
        async with await msi.resource_client(token) as http:
            response = await http.get(emulator.resource_url + "/v1.0/me")
        assert response.status_code == 200
        assert response.json()["verified"] is True
        assert response.json()["x5t#S256"] == token.binding_certificate.thumbprint_sha256
        again = await msi.acquire_token("https://graph.microsoft.com/.default")
        assert again.access_token == token.access_token  # from the cache
    stats = emulator.stats
    assert (stats["issuecredential"], stats["token"], stats["resource"]) == (1, 1, 1)
    assert native.attest.StandinAttestCalls() == 1
    assert native.ncrypt.StandinNCryptSignCount() == 1  # the CSR (a new key needs no liveness probe)
    assert native.ncrypt.StandinNCryptBorrowCount() >= 2  # SChannel's handshakes with the CNG key
    assert native.winhttp.StandinWinHttpRequestsSent() == 2


async def test_failed_attestation_fails_closed(native: Controls, emulator: Emulator) -> None:
    native.attest.StandinAttestSetResult(-6)
    async with client(emulator, backend="keyguard") as msi:
        with pytest.raises(Exception, match="ERRORATTESTATIONFAILED"):
            await msi.acquire_token()
    assert emulator.stats["issuecredential"] == 0


async def test_binding_persists_in_the_certificate_store(
    native: Controls, emulator: Emulator, tmp_path: Path
) -> None:
    locks = str(tmp_path / "locks")
    first = KeyGuardBackend()
    async with client(
        emulator, backend=first, store=CertStoreBindingStore(first, lock_directory=locks)
    ) as msi:
        token = await msi.acquire_token()
    assert native.store_count() == 1
    second = KeyGuardBackend()
    async with client(
        emulator, backend=second, store=CertStoreBindingStore(second, lock_directory=locks)
    ) as msi:
        reused = await msi.acquire_token()
        assert msi.cache_stats["persisted_certificates_loaded"] == 1
    assert reused.binding_certificate.thumbprint_sha256 == token.binding_certificate.thumbprint_sha256
    assert emulator.stats["issuecredential"] == 1
    assert emulator.stats["token"] == 2


def run_cli(native: Controls, *arguments: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "MSIV2_ASYNC_NATIVE_STANDINS": str(native.directory)}
    return subprocess.run(
        [sys.executable, "-m", "msiv2_async", *arguments],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_cli_demo_with_the_keyguard_backend(native: Controls) -> None:
    result = run_cli(native, "demo", "--backend", "keyguard", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["binding_verified"] is True
    assert report["resource_status"] == 200
    assert {"key", "csr_sign", "attest", "token", "resource"} <= {step["name"] for step in report["steps"]}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_cli_lists_backends_with_viability_and_priority(native: Controls) -> None:
    result = run_cli(native, "backends", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)["backends"]}
    assert (rows["keyguard"]["viable"], rows["keyguard"]["priority"]) == (True, 10.0)
    assert rows["keyguard"]["distribution"] == "msiv2-async-keyguard"
    assert (rows["software"]["viable"], rows["software"]["priority"]) == (True, 1.0)
    outside = subprocess.run(
        [sys.executable, "-m", "msiv2_async", "backends"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "MSIV2_ASYNC_NATIVE_STANDINS"},
        timeout=60,
        check=False,
    )
    assert "keyguard: not viable" in outside.stdout
    assert "software: viable, priority 1" in outside.stdout
