"""The clock behind every expiry, refresh and back-off decision; injectable so tests run days in seconds."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Protocol

import anyio
import anyio.lowlevel


class Clock(Protocol):
    """Wall time for expiry (Unix seconds), monotonic time for windows and back-off."""

    def time(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock."""
        ...


class SystemClock:
    """The real clocks: ``time.monotonic`` and ``time.time`` themselves (no Python call per reading)."""

    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    async def sleep(self, seconds: float) -> None:
        """``anyio.sleep``."""
        await anyio.sleep(seconds)


class FakeClock:
    """A clock that moves only when told to; both readings advance together."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        self._wall = start
        self._monotonic = 0.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        """The simulated wall time."""
        return self._wall

    def monotonic(self) -> float:
        """The simulated monotonic time."""
        return self._monotonic

    async def sleep(self, seconds: float) -> None:
        """Record the sleep, move the clocks, and let other tasks run (no real time passes)."""
        self.sleeps.append(seconds)
        self.advance(seconds)
        await anyio.lowlevel.checkpoint()

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        self._wall += seconds
        self._monotonic += seconds


def utc(timestamp: float) -> datetime:
    """A Unix time as an aware UTC datetime."""
    return datetime.fromtimestamp(timestamp, timezone.utc)
