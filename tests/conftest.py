"""Shared test configuration.

- Every ``@pytest.mark.anyio`` test runs on asyncio and on trio.
- One emulator (real HTTP and TLS on loopback) serves the whole session; ``emulator`` hands it to a test
  with counters, queued faults and TLS modes reset, and ``client_kwargs`` points an ``MsiV2Client`` at it.
  Directories with special needs (tests/faults, tests/emulator) override these fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from msiv2_async.emulator import Emulator


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each ``@pytest.mark.anyio`` test once per event loop implementation."""
    return str(request.param)


@pytest.fixture(scope="session")
def running_emulator() -> Iterator[Emulator]:
    """The session's emulator."""
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def emulator(running_emulator: Emulator) -> Emulator:
    """The session's emulator with counters, faults and TLS modes reset."""
    running_emulator.reset()
    running_emulator.sts_tls = "normal"
    return running_emulator


@pytest.fixture
def client_kwargs(emulator: Emulator) -> dict[str, Any]:
    """``MsiV2Client`` arguments that point at the emulator and trust its CA and STS host."""
    return {
        "imds_endpoint": emulator.imds_url,
        "ca_bundle": emulator.ca_bundle_path,
        "allowed_token_hosts": [emulator.allowed_token_host],
    }
