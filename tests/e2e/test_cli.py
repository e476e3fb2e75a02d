"""The msiv2-async command, run as a user runs it: a separate process, real emulator, real TLS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from msiv2_async.emulator import Emulator, Fault


def _run(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "msiv2_async", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


def test_demo_json_prints_a_verified_token_and_a_200_from_the_resource() -> None:
    result = _run("demo", "--json")
    assert result.returncode == 0, result.stderr
    document = _json(result)
    assert document["token_type"] == "mtls_pop"
    assert document["binding_verified"] is True
    assert document["cnf_thumbprint"] == document["cert_thumbprint"]
    assert document["resource_status"] == 200
    assert json.loads(document["resource_body"])["verified"] is True
    step_names = [step["name"] for step in document["steps"] if not step["name"].endswith("_setup")]
    assert step_names[:5] == ["getplatformmetadata", "key", "csr_sign", "issuecredential", "token"]
    assert "access_token" not in document


def test_demo_human_output_numbers_the_steps_and_abbreviates_the_token() -> None:
    result = _run("demo")
    assert result.returncode == 0, result.stderr
    assert "[1] IMDS HTTP client" in result.stderr
    assert "[2] Platform metadata" in result.stderr
    assert "Resource call over mTLS" in result.stderr
    assert json.loads(result.stdout)["verified"] is True
    assert "...(" in result.stderr


def test_token_json_against_a_running_emulator_configured_by_environment(emulator: Emulator) -> None:
    result = _run("token", "--json", "--no-resource-call", env=emulator.env())
    assert result.returncode == 0, result.stderr
    document = _json(result)
    assert document["binding_verified"] is True
    assert document["resource_status"] is None
    assert emulator.stats["resource"] == 0
    assert emulator.stats["token"] == 1


def test_token_json_with_resource_url_presents_the_same_certificate(emulator: Emulator) -> None:
    result = _run("token", "--json", "-ResourceUrl", emulator.resource_url, env=emulator.env())
    assert result.returncode == 0, result.stderr
    document = _json(result)
    assert document["resource_status"] == 200
    assert emulator.resource_log[-1]["presented_x5t"] == document["cert_thumbprint"]


def test_show_full_token_prints_the_token_that_is_otherwise_hidden(emulator: Emulator) -> None:
    hidden = _run("token", "--json", "--no-resource-call", env=emulator.env())
    shown = _run("token", "--json", "--no-resource-call", "-ShowFullToken", env=emulator.env())
    token = _json(shown)["access_token"]
    assert token.count(".") == 2
    assert "access_token" not in _json(hidden)
    assert token.split(".")[2] not in hidden.stdout + hidden.stderr


def test_resource_403_fails_with_exit_1_and_a_hint(emulator: Emulator) -> None:
    emulator.inject("resource", Fault(status=403, body=b'{"error":"Forbidden"}'))
    result = _run("token", "--json", "--resource-url", emulator.resource_url, env=emulator.env())
    assert result.returncode == 1
    assert _json(result)["resource_status"] == 403
    assert "lacks permission" in result.stderr


def test_unreachable_imds_fails_with_exit_1_and_one_line() -> None:
    result = _run(
        "token",
        "--no-resource-call",
        "--timeout",
        "2",
        env={"AZURE_POD_IDENTITY_AUTHORITY_HOST": "http://127.0.0.1:9"},
    )
    assert result.returncode == 1
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("msiv2-async: error:")]
    assert len(error_lines) == 1
    assert "IMDS" in error_lines[0]


def test_usage_error_exits_2() -> None:
    result = _run("token", "--client-id", "a", "--object-id", "b")
    assert result.returncode == 2
