"""Fixtures for the emulator tests: one running emulator per module, shared client keys, anyio backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from msiv2_async.emulator import Emulator


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def running_emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.fixture
def emu(running_emulator: Emulator) -> Iterator[Emulator]:
    """The module's emulator with its counters at zero, no queued faults and normal TLS."""
    running_emulator.reset()
    running_emulator.sts_tls = running_emulator.resource_tls = "normal"
    yield running_emulator
    running_emulator.reset()
    running_emulator.sts_tls = running_emulator.resource_tls = "normal"


@pytest.fixture(scope="session")
def client_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
