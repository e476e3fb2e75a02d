"""Native tests: the stand-ins are compiled once per session and the bindings pointed at them.

Every test that uses ``native`` ends with a leak check: no NCrypt handle or buffer, Crypt32 context
reference or store, WinHTTP handle or attestation token may be left (NATIVE.md: every handle released
on every path).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from native_support import Controls, Pki
from standins.build import build

from msiv2_async._native import STANDINS_ENV

ENVIRONMENT_TO_CLEAR = (
    "MSIV2_ASYNC_ATTESTATION_LIB",
    "ATTESTATION_CLIENTLIB_PATH",
    "NUGET_PACKAGES",
    "MSIV2_ASYNC_KEYGUARD_ALLOW_WEAKER",
    "MSIV2_ASYNC_BACKEND",
    "MSIV2_STANDIN_VBS",
    "MSIV2_STANDIN_ATTEST_RESULT",
    "MSIV2_STANDIN_ATTEST_LIFETIME",
    "MSIV2_STANDIN_ROOT_CA",
    "USERPROFILE",
)


def _forget_backend_viability() -> None:
    """The core caches each backend's viability per process; the test mode changes it."""
    from msiv2_async import backends

    clear = getattr(backends, "_clear_caches", None)
    if clear is not None:
        clear()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "windows_vbs: needs a real Windows host with VBS (KeyGuard), TPM and AttestationClientLib.dll",
    )


@pytest.fixture(scope="session")
def standin_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four stand-ins, compiled with gcc (Linux only)."""
    if sys.platform == "win32":
        pytest.skip("the stand-ins are Linux shared libraries; on Windows the real DLLs are tested")
    return build(tmp_path_factory.mktemp("standins"))["libncrypt.so"].parent


@pytest.fixture(scope="session")
def controls(standin_directory: Path) -> Controls:
    """The stand-ins' test controls."""
    return Controls(standin_directory)


@pytest.fixture
def native(
    standin_directory: Path, controls: Controls, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Controls]:
    """The Linux test mode with fresh stand-in state; fails the test if a handle leaked."""
    from msiv2_async_keyguard._backend import reset_isolation_probe

    for name in ENVIRONMENT_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(STANDINS_ENV, str(standin_directory))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    controls.reset()
    reset_isolation_probe()
    _forget_backend_viability()
    yield controls
    gc.collect()
    leaks = {name: count for name, count in controls.leaks().items() if count}
    reset_isolation_probe()
    _forget_backend_viability()
    assert not leaks, f"native resources leaked: {leaks}"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A test CA, a server certificate for 127.0.0.1 and a client-certificate issuer."""
    return Pki(tmp_path_factory.mktemp("pki"))
