"""One emulator for the end-to-end tests; counters are reset before each test."""

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
    running_emulator.reset_stats()
    running_emulator.clear_faults()
    return running_emulator
