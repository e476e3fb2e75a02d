"""Summaries of timing samples: median, p10/p90 and ratios to a baseline from the same run."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The ``fraction`` percentile by linear interpolation between closest ranks (NaN when empty)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(samples: Sequence[float], unit: str) -> dict[str, Any]:
    """``{"unit", "n", "median", "p10", "p90", "min", "max"}`` of ``samples`` (rounded for the report)."""
    if not samples:
        return {"unit": unit, "n": 0, "median": None, "p10": None, "p90": None, "min": None, "max": None}
    return {
        "unit": unit,
        "n": len(samples),
        "median": _round(statistics.median(samples)),
        "p10": _round(percentile(samples, 0.10)),
        "p90": _round(percentile(samples, 0.90)),
        "min": _round(min(samples)),
        "max": _round(max(samples)),
    }


def ratio(value: float | None, baseline: float | None) -> float | None:
    """``value / baseline`` (None when either is missing or the baseline is zero)."""
    if value is None or baseline is None or baseline == 0:
        return None
    return round(value / baseline, 4)


def add_ratios(contenders: dict[str, dict[str, Any]], baseline: str) -> None:
    """Give every contender ``ratio`` = its median / the baseline's median (the baseline gets 1.0)."""
    base = contenders.get(baseline, {}).get("median")
    for stats in contenders.values():
        stats["ratio"] = ratio(stats.get("median"), base)


def _round(value: float) -> float:
    """Four significant decimals are plenty for timings; keeps the JSON readable."""
    if value == 0 or not math.isfinite(value):
        return value
    digits = max(0, 4 - math.floor(math.log10(abs(value))))
    return round(value, digits)
