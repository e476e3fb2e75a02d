"""Numbers measured by the fault-matrix tests, printed by ``test_zz_figures.py`` (RELIABILITY.md §8).

Tests add to :data:`FIGURES` under a section name; nothing here asserts anything.
"""

from __future__ import annotations

from typing import Any

FIGURES: dict[str, dict[str, Any]] = {}


def record(section: str, name: str, value: Any) -> None:
    """Remember ``value`` as figure ``name`` of ``section`` (the last value wins)."""
    FIGURES.setdefault(section, {})[name] = value
