"""One emulator for the tooling tests (real TLS on loopback); counters and faults reset per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from msiv2_async.emulator import Emulator


@pytest.fixture(scope="session")
def running_emulator() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def emulator(running_emulator: Emulator) -> Emulator:
    running_emulator.reset()
    return running_emulator
