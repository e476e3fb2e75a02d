"""Bookkeeping of inner transports per certificate (pure): keep two, close older ones once idle."""

from __future__ import annotations

import pytest

from msiv2_async import ConfigurationError
from msiv2_async._httpx import _Routes


def test_a_third_certificate_closes_the_least_recently_used_idle_transport() -> None:
    routes: _Routes[str] = _Routes(keep=2)
    a, closed = routes.add("A", "transport-A")
    assert closed == []
    routes.release(a)
    b, _ = routes.add("B", "transport-B")
    routes.release(b)
    used = routes.acquire("A")  # A is now more recent than B
    assert used is a
    routes.release(a)
    _, closed = routes.add("C", "transport-C")
    assert closed == ["transport-B"]
    assert routes.thumbprints == ["A", "C"]
    assert routes.acquire("B") is None


def test_a_transport_pushed_out_with_open_responses_is_closed_after_the_last_one() -> None:
    routes: _Routes[str] = _Routes(keep=2)
    a, _ = routes.add("A", "transport-A")
    second = routes.acquire("A")
    assert second is a
    routes.add("B", "transport-B")
    _, closed = routes.add("C", "transport-C")
    assert closed == []  # A still has two open responses
    assert routes.release(a) == []
    assert routes.release(a) == ["transport-A"]
    assert routes.release(a) == []  # never twice


def test_clear_returns_every_transport_once_and_keep_must_be_positive() -> None:
    routes: _Routes[str] = _Routes(keep=1)
    a, _ = routes.add("A", "transport-A")
    routes.add("B", "transport-B")  # A is retired, still open
    assert sorted(routes.clear()) == ["transport-A", "transport-B"]
    assert routes.release(a) == []
    with pytest.raises(ConfigurationError):
        _Routes(keep=0)
