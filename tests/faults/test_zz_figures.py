"""The figures of RELIABILITY.md §8 for the fault matrix: asserted here, then printed for the record.

This module runs last in ``tests/faults`` (file order). It asserts over the conftest's ``LEDGER``: every
row that ran behaved as specified (except the known bugs below, which are strict ``xfail`` tests), no
untyped exception escaped, no sentinel leaked into DEBUG logs, exception texts/reprs or files, no decoy
was contacted, and at least 50 of the 64 rows are covered (counted statically from the ``fault_row``
markers of the test files, so the count does not depend on which tests were selected).

Coverage: all 64 rows of §7 are marked. None is left out entirely; where a row could only be approximated
here, that is said below and in the printed figures.

Known bugs: none open. A row with a strict ``xfail`` test would count as covered, not as "behaved as
specified". Found by this suite and fixed: row 45 (``expires_in: 0`` was accepted), a replayed error
whose ``__traceback__`` grew with every fail-fast call (``_singleflight.py``, found by row 52), and
rows 36 (TLS 1.3 client-certificate alert on asyncio), 59 (failed persistence writes), 60 (key
regeneration) and 63 (second event loop, fork) failed against the code as this suite was written and pass
with the fixes made alongside it (``_http.py``, ``client.py``, ``_driver.py``, ``backends/software.py``).

Approximations: row 56 reports the no-lock figure (lock replaced by a no-op in the worker) without
asserting it; row 58 runs up to 200 kill cycles (15 s budget) instead of 1 000; row 59 simulates ENOSPC by
making the store's write raise, and makes the directory read-only with ``chattr +i`` when running as root
(``chmod 0500`` otherwise); row 62 uses -9 min rather than -10 min for a local clock behind the emulator,
because the emulator back-dates NotBefore by 5 min and the library tolerates 5 min, so -10 min sits exactly
on the edge; row 63's fork case runs in a subprocess.
Not measured here (other suites): §8.8 memory bound beyond row 22's 1 MiB cap, §8.9 30 simulated days
(tests/cache/test_simulated_days.py), §8.13 TLS static checks, §8.15 fuzzing (hypothesis tests).
"""

from __future__ import annotations

import ast
import time
from pathlib import Path
from typing import Any

import pytest

from msiv2_async import FakeClock, ImdsError, ImdsThrottledError, MsiV2Client, MsiV2TimeoutError
from msiv2_async.emulator import Emulator, Fault

from ._figures import FIGURES, record
from .conftest import LEDGER, record_error

HERE = Path(__file__).resolve().parent
TOTAL_ROWS = 64


def _is_mark(node: ast.expr, name: str) -> bool:
    """``node`` is ``pytest.mark.<name>(...)`` (or the bare attribute)."""
    target = node.func if isinstance(node, ast.Call) else node
    return isinstance(target, ast.Attribute) and target.attr == name and "mark" in ast.unparse(target)


def static_rows() -> tuple[dict[int, list[str]], set[int]]:
    """Rows marked by each test of ``tests/faults`` and the rows that have an xfail (known-bug) test."""
    rows: dict[int, list[str]] = {}
    buggy: set[int] = set()
    for path in sorted(HERE.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            marked: list[int] = []
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and _is_mark(decorator, "fault_row"):
                    marked += [
                        arg.value
                        for arg in decorator.args
                        if isinstance(arg, ast.Constant) and isinstance(arg.value, int)
                    ]
            if not marked:
                continue
            source = ast.unparse(node)
            has_xfail = any(_is_mark(d, "xfail") for d in node.decorator_list) or "xfail(" in source
            for row in marked:
                rows.setdefault(row, []).append(f"{path.name}::{node.name}")
                if has_xfail:
                    buggy.add(row)
    return rows, buggy


def test_static_row_count_covers_at_least_50_rows() -> None:
    rows, buggy = static_rows()
    assert set(rows) <= set(range(1, TOTAL_ROWS + 1))
    assert len(rows) >= 50
    assert len(set(rows) - buggy) >= 50


@pytest.mark.anyio
async def test_retry_fidelity_on_the_fake_clock(
    emulator: Emulator, client_kwargs: dict[str, Any], clock: FakeClock, seen: list[BaseException]
) -> None:
    """§8.6: observed IMDS back-off per status class against the policy (metadata call, fake clock)."""
    cases: list[tuple[str, list[Fault], list[float], int]] = [
        ("404 x4", [Fault(status=404)] * 4, [1.0, 2.0, 4.0], 4),
        ("500 x4", [Fault(status=500)] * 4, [1.0, 2.0, 4.0], 4),
        ("503 x4", [Fault(status=503)] * 4, [1.0, 2.0, 4.0], 4),
        ("429 x4 (no Retry-After)", [Fault(status=429)] * 4, [1.0, 2.0, 4.0], 4),
        ("410 x8", [Fault(status=410)] * 8, [10.0] * 7, 8),
        ("429 Retry-After 2, then 200", [Fault(status=429, headers={"Retry-After": "2"})], [2.0], 2),
        ("503 Retry-After 45, then 200", [Fault(status=503, headers={"Retry-After": "45"})], [45.0], 2),
        ("429 Retry-After 999999", [Fault(status=429, headers={"Retry-After": "999999"})], [], 1),
        ("400", [Fault(status=400)], [], 1),
    ]
    for label, faults, expected, requests in cases:
        emulator.reset_stats()
        emulator.clear_faults()
        emulator.inject("getplatformmetadata", *faults)
        clock.sleeps.clear()
        async with MsiV2Client(**client_kwargs) as client:
            try:
                await client.acquire_token()
                outcome = "token"
            except ImdsThrottledError as exc:
                record_error(seen, exc)
                outcome = f"ImdsThrottledError retry_after={exc.retry_after:.0f} s"
            except ImdsError as exc:
                record_error(seen, exc)
                outcome = f"{type(exc).__name__} {exc.status}"
        assert clock.sleeps == expected, label
        assert emulator.stats["getplatformmetadata"] == requests, label
        record(
            "retry fidelity",
            f"IMDS {label}: delays (s) / requests / outcome",
            f"{clock.sleeps} / {requests} / {outcome}",
        )


@pytest.mark.anyio
@pytest.mark.parametrize("action", ["hang", "slowloris"])
async def test_deadline_overshoot_on_the_real_clock(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], action: str
) -> None:
    """§8.6: how far past its deadline an acquisition against a black-hole / slowloris IMDS ends."""
    emulator.inject("getplatformmetadata", Fault(action=action, status=200, body=b" " * 64, interval=0.1))
    deadline = 0.5
    started = time.monotonic()
    async with MsiV2Client(**client_kwargs, timeout=deadline) as client:
        with pytest.raises(MsiV2TimeoutError) as caught:
            await client.acquire_token()
    record_error(seen, caught.value)
    overshoot = time.monotonic() - started - deadline
    assert overshoot < 1.0
    label = "black hole" if action == "hang" else "slowloris"
    record("retry fidelity", f"real-clock deadline overshoot, IMDS {label} (s)", round(overshoot, 3))


def _report(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str], lines: list[str]) -> None:
    """Write to the terminal with capturing off, so the figures show in CI logs with or without ``-s``."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    with capsys.disabled():
        if reporter is None:
            print("\n".join(lines))
            return
        reporter.ensure_newline()
        reporter.write_sep("=", "RELIABILITY.md §8 figures (fault matrix)")
        for line in lines:
            reporter.write_line(line)
        reporter.write_sep("=", "end of figures")


def test_zz_figures_are_as_specified_and_printed(
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, buggy = static_rows()
    selected = {
        row
        for item in request.session.items
        if (marker := item.get_closest_marker("fault_row")) is not None
        for row in marker.args
    }
    if not LEDGER.rows:
        pytest.skip("no fault-matrix row ran in this session; run the whole tests/faults directory")

    misbehaved = sorted(row for row, ok in LEDGER.rows.items() if not ok and row not in buggy)
    assert misbehaved == [], f"rows that did not behave as specified: {misbehaved}"
    assert LEDGER.untyped_escapes == []
    assert LEDGER.sentinel_leaks == []
    assert LEDGER.decoy_hits == 0
    assert selected <= set(LEDGER.rows)  # every selected row really ran through the ledger
    behaved = sorted(row for row, ok in LEDGER.rows.items() if ok)
    complete = set(rows) <= set(LEDGER.rows)
    if complete:
        assert len(behaved) >= 50

    def fmt(numbers: list[int] | set[int]) -> str:
        return ", ".join(map(str, sorted(numbers))) or "none"

    lines = [
        "1. Fault matrix",
        f"   fault kinds (rows of §7) covered by tests: {len(rows)}/{TOTAL_ROWS} (rows {fmt(set(rows))})",
        f"   rows run in this session: {len(LEDGER.rows)}{'' if complete else ' (partial selection)'}",
        f"   behaved as specified: {len(behaved)}",
        f"   known bugs / gaps (strict xfail): rows {fmt(buggy)}; rows left out: "
        f"{fmt(set(range(1, TOTAL_ROWS + 1)) - set(rows))}",
        f"   untyped exceptions escaped: {len(LEDGER.untyped_escapes)}",
        f"   sentinel leaks (DEBUG logs, exception str/repr, files): {len(LEDGER.sentinel_leaks)} "
        f"over {len(LEDGER.observed_errors)} recorded exceptions",
        f"   decoy hits (proxy / redirect targets): {LEDGER.decoy_hits}",
    ]
    known_bugs = sorted(
        {
            str(marker.kwargs.get("reason", ""))
            for item in request.session.items
            if (marker := item.get_closest_marker("xfail")) is not None
        }
    )
    lines.append(f"   known-bug tests (strict xfail) in this session: {len(known_bugs)} distinct")
    lines += [f"     - {reason}" for reason in known_bugs]
    titles = {
        "cold start": "2. Cold-start single flight",
        "warm path": "3. Warm path",
        "outage storm": "4. Outage storm",
        "multi-process": "5. Multi-process",
        "retry fidelity": "6. Retry fidelity",
        "throttle": "7. Throttle effectiveness",
        "refresh damping": "   Refresh damping (row 54)",
        "lifecycle": "   Key lifecycle (row 60)",
        "event loops": "   Event loops and fork (row 63)",
        "remediation": "10. Remediation bound",
        "binding": "11. Binding",
        "files": "14. Files",
    }
    for section, title in titles.items():
        values = FIGURES.get(section)
        if not values:
            continue
        lines.append(title)
        lines += [f"   {name}: {value}" for name, value in values.items()]
    _report(request, capsys, lines)
