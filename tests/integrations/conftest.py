"""One emulator for the integration tests (real loopback TLS); counters and faults reset per test."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from integration_kit import ResourceLog

from msiv2_async import FakeClock
from msiv2_async.emulator import Emulator


@pytest.fixture
def rotate(emulator: Emulator, clock: FakeClock) -> Iterator[Callable[[], None]]:
    """Moves the client's clock past the current certificate's half-life, so it renews it.

    Certificates issued from then on live 30 days, so the fake clock (4 days ahead of the real one)
    does not find the renewed certificate due as well.
    """
    lifetime = emulator.certificate_lifetime

    def rotate() -> None:
        emulator.certificate_lifetime = timedelta(days=30)
        clock.advance(timedelta(days=4).total_seconds())

    yield rotate
    emulator.certificate_lifetime = lifetime


@pytest.fixture
def resource_log(emulator: Emulator) -> ResourceLog:
    return ResourceLog(emulator)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=time.time())
