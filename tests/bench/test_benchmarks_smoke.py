"""``python -m benchmarks --quick`` on tiny sizes: every section runs and reports numbers.

No speed is asserted: benchmarks are not part of the suite's pass/fail, this only keeps them from rotting.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--rounds",
            "2",
            "--concurrency",
            "1,20",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "## Goals" in completed.stdout
    assert (out / "latest-emulator.md").read_text(encoding="utf-8").startswith("# msiv2_async benchmarks")
    data: dict[str, Any] = json.loads((out / "latest-emulator.json").read_text(encoding="utf-8"))
    return data


def test_every_section_ran_without_error(result: dict[str, Any]) -> None:
    sections = result["sections"]
    assert set(sections) == {"csr", "handshake", "warm", "cold", "concurrency"}
    assert [name for name, data in sections.items() if "error" in data] == []
    assert {"python", "openssl", "libraries", "cpu_count"} <= set(result["environment"])


def test_csr_section_has_ratios_and_valid_requests(result: dict[str, Any]) -> None:
    software = result["sections"]["csr"]["backends"]["software"]
    for name in ("bare_sign", "ours", "cryptography_builder"):
        stats = software["contenders"][name]
        assert all(_number(stats[key]) for key in ("median", "p10", "p90", "ratio"))
    assert software["checks"]["ours"]["signature_valid"] is True
    assert software["checks"]["ours"]["imds_accepts"] is True


def test_handshake_section_counts_handshakes_server_side(result: dict[str, Any]) -> None:
    for label in ("tls1.3", "tls1.2"):
        data = result["sections"]["handshake"][label]
        assert data["negotiated"] == [{"tls1.3": "TLSv1.3", "tls1.2": "TLSv1.2"}[label]]
        contenders = data["contenders"]
        assert all(_number(contenders[name]["ratio"]) for name in ("bare", "ours_fresh", "ours_pooled"))
        assert contenders["ours_fresh"]["server_handshakes"] == contenders["ours_fresh"]["n"]
        assert contenders["ours_pooled"]["server_handshakes"] == 0


def test_warm_section_has_calls_per_second(result: dict[str, Any]) -> None:
    warm = result["sections"]["warm"]
    for stats in warm["contenders"].values():
        assert _number(stats["median"])
        assert _number(stats["calls_per_second"])
    assert warm["network_calls_during_timing"] == {}


def test_cold_section_has_steps_and_ratios(result: dict[str, Any]) -> None:
    for mode in ("existing_key", "fresh_key"):
        data = result["sections"]["cold"][mode]
        assert _number(data["ratio"])
        assert _number(data["ours_total"]["median"])
        assert {"getplatformmetadata", "key", "csr_sign", "issuecredential", "token"} <= set(
            data["ours_steps"]
        )
        assert {"getplatformmetadata", "key", "csr_sign", "issuecredential", "handshake"} <= set(
            data["alone_steps"]
        )


def test_concurrency_section_single_flight(result: dict[str, Any]) -> None:
    rows = result["sections"]["concurrency"]["rows"]
    assert [row["callers"] for row in rows] == [1, 20]
    for row in rows:
        assert row["cold_callers"] == row["callers"]
        assert row["errors"] == 0
        assert row["network_calls"] == {"getplatformmetadata": 1, "issuecredential": 1, "token": 1}
        assert all(_number(row[key]) for key in ("p50_ms", "p99_ms", "longest_stall_ms"))


def test_goals_are_evaluated(result: dict[str, Any]) -> None:
    assert [goal["goal"] for goal in result["goals"]] == ["csr", "handshake", "warm", "cold", "concurrency"]
    assert all(goal["measured"] for goal in result["goals"])
