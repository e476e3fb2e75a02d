"""Fake key backends for the selection tests; importable as ``tooling_fakes`` (for ``module:Class``)."""

from __future__ import annotations

from typing import ClassVar

from msiv2_async import MsiV2UnavailableError
from msiv2_async.backends import SoftwareBackend


class FakeBackend(SoftwareBackend):
    """A software key under another name, priority and strength; counts ``priority()`` calls."""

    name = "fake"
    binding_strength = "software"
    value: ClassVar[float] = 1.0
    calls: ClassVar[int] = 0

    @classmethod
    def priority(cls) -> float:
        cls.calls += 1
        return cls.value


class Strong(FakeBackend):
    name = "strong"
    binding_strength = "keyguard"
    supports_attestation = True
    value = 10.0


class Alpha(FakeBackend):
    name = "alpha"
    value = 5.0


class Beta(FakeBackend):
    name = "beta"
    value = 5.0


class NotHere(FakeBackend):
    name = "nothere"
    binding_strength = "keyguard"

    @classmethod
    def priority(cls) -> float:
        cls.calls += 1
        raise MsiV2UnavailableError("needs Windows with VBS (no Virtual Iso key property)")


class Crashing(FakeBackend):
    name = "crashing"

    @classmethod
    def priority(cls) -> float:
        raise RuntimeError("bug in priority")


class Unregistered(FakeBackend):
    """Registered nowhere: reachable only through MSIV2_ASYNC_BACKEND=tooling_fakes:Unregistered."""

    name = "unregistered"
    value = 0.5


class Impostor(FakeBackend):
    """A plugin claiming the built-in name ``software``."""

    name = "software"
    value = 100.0
