"""Fault-matrix plumbing: one emulator, a ledger of RELIABILITY.md §7 rows, sentinel and decoy checks.

Every test names its row(s) with ``@pytest.mark.fault_row(n, ...)``. After each test the ledger records
whether the row behaved (the test passed), whether any non-``MsiV2Error`` escaped from the library
(``untyped_escape``), and whether a secret the emulator handed out (its sentinels) appears in the DEBUG
logs, in the text or repr of any exception the test saw, or in any file under the test's ``tmp_path``.
``test_zz_figures.py`` asserts the totals and prints the figures of RELIABILITY.md §8.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from msiv2_async import FakeClock, MsiV2Error, RetryPolicy
from msiv2_async.emulator import Emulator


@dataclass
class Ledger:
    """What the fault matrix observed, summed over the session."""

    rows: dict[int, bool] = field(default_factory=dict)
    untyped_escapes: list[str] = field(default_factory=list)
    sentinel_leaks: list[str] = field(default_factory=list)
    decoy_hits: int = 0
    observed_errors: list[BaseException] = field(default_factory=list)


LEDGER = Ledger()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fault_row(*numbers): the RELIABILITY.md section 7 rows a test covers")


@pytest.fixture(scope="session")
def matrix_emulator() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def emulator(matrix_emulator: Emulator) -> Emulator:
    matrix_emulator.reset_stats()
    matrix_emulator.clear_faults()
    matrix_emulator.sts_tls = "normal"
    return matrix_emulator


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting at the real time (so real TLS still accepts the emulator's certificates)."""
    return FakeClock(start=time.time())


@pytest.fixture
def client_kwargs(emulator: Emulator, clock: FakeClock) -> dict[str, Any]:
    return {
        "imds_endpoint": emulator.imds_url,
        "ca_bundle": emulator.ca_bundle_path,
        "allowed_token_hosts": [emulator.allowed_token_host],
        "clock": clock,
        "environ": {},
        "retry": RetryPolicy(jitter=0.0),
    }


@pytest.fixture
def seen() -> list[BaseException]:
    """Exceptions a test caught from the library; scanned for sentinels and checked for their type."""
    return []


def record_error(seen: list[BaseException], error: BaseException) -> BaseException:
    """Keep ``error`` for the sentinel scan; fail the row if it is not one of ours."""
    seen.append(error)
    if not isinstance(error, MsiV2Error):
        LEDGER.untyped_escapes.append(f"{type(error).__name__}: {error}")
    return error


class Decoy:
    """A TCP listener that counts connections and answers 502: a decoy proxy or redirect target."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        self.connections = 0
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.https_url = f"https://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            with contextlib.suppress(OSError):
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            conn.close()

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def decoy() -> Iterator[Decoy]:
    target = Decoy()
    yield target
    LEDGER.decoy_hits += target.connections
    target.close()


def _file_texts(root: Path) -> Iterator[tuple[Path, str]]:
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            if path.is_file() and not path.is_symlink():
                yield path, path.read_bytes().decode("latin-1")


@pytest.fixture(autouse=True)
def fault_row_ledger(
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
    seen: list[BaseException],
    tmp_path: Path,
) -> Iterator[None]:
    """DEBUG logging on; afterwards the row's outcome and the sentinel scan go into the ledger."""
    caplog.set_level(logging.DEBUG)
    marker = request.node.get_closest_marker("fault_row")
    yield
    if marker is None:
        return
    emulator: Emulator | None = (
        request.getfixturevalue("matrix_emulator") if "emulator" in request.fixturenames else None
    )
    secrets = emulator.sentinels() if emulator is not None else []
    texts = [("logs", caplog.text)]
    texts += [(f"error {type(e).__name__}", f"{e!s} {e!r} {e.__cause__!s}") for e in seen]
    texts += [(f"file {path.name}", text) for path, text in _file_texts(tmp_path)]
    for where, text in texts:
        for secret in secrets:
            if secret and secret in text:
                LEDGER.sentinel_leaks.append(f"{request.node.name}: {where}")
    outcome = getattr(request.node, "rep_call", None)
    passed = outcome is not None and outcome.passed
    for row in marker.args:
        LEDGER.rows[row] = LEDGER.rows.get(row, True) and passed
    LEDGER.observed_errors.extend(seen)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
