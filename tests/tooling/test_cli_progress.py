"""Progress in the interactive CLI: each retry with its wait, and the key step announced."""

from __future__ import annotations

import json

from tooling_support import clean_env, run_cli

from msiv2_async.emulator import Emulator, Fault


def test_human_mode_shows_each_retry_with_its_wait_and_announces_the_key(emulator: Emulator) -> None:
    emulator.inject("getplatformmetadata", Fault(status=503))
    result = run_cli("token", "--no-resource-call", env=clean_env(**emulator.env()))
    assert result.returncode == 0, result.stderr
    assert "waiting: IMDS getplatformmetadata: 503; retry 1 in 1 s" in result.stderr
    lines = result.stderr.splitlines()
    metadata = next(i for i, line in enumerate(lines) if "Platform metadata" in line)
    key = next(i for i, line in enumerate(lines) if "Binding key" in line)
    assert "opening the binding key" in "\n".join(lines[metadata:key])
    assert emulator.stats["getplatformmetadata"] == 2


def test_json_mode_prints_no_progress_lines(emulator: Emulator) -> None:
    emulator.inject("getplatformmetadata", Fault(status=503))
    result = run_cli("token", "--json", "--no-resource-call", env=clean_env(**emulator.env()))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["binding_verified"] is True
    assert "waiting:" not in result.stderr
    assert "opening the binding key" not in result.stderr


def test_verbose_mode_logs_the_retry_once_not_twice(emulator: Emulator) -> None:
    emulator.inject("getplatformmetadata", Fault(status=503))
    result = run_cli("token", "-v", "--no-resource-call", env=clean_env(**emulator.env()))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("retry 1 in 1 s") == 1
    assert "waiting:" not in result.stderr
