"""``msiv2-async doctor`` as a subprocess against the emulator (healthy and broken), and its pure parts."""

from __future__ import annotations

import json
import socket
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from tooling_support import clean_env, run_cli

from msiv2_async import SoftwareBackend, _doctor
from msiv2_async._doctor import Check, DoctorOptions, Report, diagnose
from msiv2_async._effects import HttpResponse
from msiv2_async.emulator import Emulator, Fault


def _doctor_json(
    emulator: Emulator, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    result = run_cli(
        "doctor",
        "--json",
        *extra,
        "--imds-endpoint",
        emulator.imds_url,
        "--ca-bundle",
        emulator.ca_bundle_path,
        "--allowed-token-host",
        emulator.allowed_token_host,
        env=env,
    )
    document = json.loads(result.stdout)
    assert document["ok"] is (result.returncode == 0), result.stderr
    return result.returncode, document


def _statuses(document: dict[str, Any]) -> dict[str, str]:
    return {check["name"]: check["status"] for check in document["checks"]}


def _check(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(check for check in document["checks"] if check["name"] == name)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_healthy_emulator_is_all_ok(emulator: Emulator) -> None:
    status, document = _doctor_json(emulator)
    assert status == 0
    assert _statuses(document) == {name: "OK" for name in _doctor.ORDER}
    assert _check(document, "identity")["details"]["client_id"] == emulator.system_identity.client_id
    assert _check(document, "imds")["details"]["source"] == "imds_v2"
    assert abs(_check(document, "clock")["details"]["skew_seconds"]) < 5
    assert emulator.stats["getplatformmetadata"] == 2  # the probe (no Metadata header) and the identity check
    assert emulator.stats["metadata_header_missing"] == 1
    assert emulator.stats["issuecredential"] == 0


def test_closed_imds_port_fails_quickly_with_exit_1() -> None:
    started = time.monotonic()
    result = run_cli("doctor", "--json", "--imds-endpoint", f"http://127.0.0.1:{_closed_port()}")
    elapsed = time.monotonic() - started
    document = json.loads(result.stdout)
    assert result.returncode == 1
    statuses = _statuses(document)
    assert statuses["imds"] == "FAIL"
    assert (statuses["mtls_pop"], statuses["identity"], statuses["clock"]) == ("SKIP", "SKIP", "SKIP")
    assert "--imds-endpoint" in _check(document, "imds")["fix"]
    assert elapsed < 10


def test_v1_only_imds_warns_and_fails_mtls_pop(emulator: Emulator) -> None:
    emulator.inject("getplatformmetadata", Fault(status=404))
    status, document = _doctor_json(emulator)
    assert status == 1
    statuses = _statuses(document)
    assert statuses["imds"] == "WARN"
    assert statuses["mtls_pop"] == "FAIL"
    assert statuses["identity"] == "SKIP"
    assert statuses["clock"] == "OK"
    assert _check(document, "imds")["details"]["source"] == "imds_v1_only"
    assert "bearer" in _check(document, "imds")["summary"]


def test_https_proxy_warns_without_showing_credentials_and_imds_bypasses_it(emulator: Emulator) -> None:
    env = clean_env(
        HTTPS_PROXY="http://alice:s3cret@proxy.invalid:3128", http_proxy="http://proxy.invalid:3128"
    )
    status, document = _doctor_json(emulator, env=env)
    assert status == 0
    proxy = _check(document, "proxy")
    assert proxy["status"] == "WARN"
    assert "never sends IMDS traffic through a proxy" in proxy["summary"]
    assert "NO_PROXY" in proxy["fix"]
    assert "s3cret" not in json.dumps(document)
    assert _statuses(document)["imds"] == "OK"  # the proxy (which does not exist) was not used


def test_human_output_has_one_line_per_check_and_fix_lines(emulator: Emulator) -> None:
    emulator.inject("getplatformmetadata", Fault(status=404))
    result = run_cli(
        "doctor",
        "--imds-endpoint",
        emulator.imds_url,
        "--ca-bundle",
        emulator.ca_bundle_path,
        env=clean_env(HTTPS_PROXY="http://proxy.invalid:3128"),
    )
    lines = result.stdout.splitlines()
    assert result.returncode == 1
    assert any(line.split()[:2] == ["WARN", "imds"] for line in lines if line.strip())
    assert any(line.split()[:2] == ["FAIL", "mtls_pop"] for line in lines if line.strip())
    assert sum(line.strip().startswith("fix:") for line in lines) == 3  # imds, mtls_pop, proxy
    assert lines[-1].startswith("1 FAIL, 2 WARN")


# -- in process: the same checks through diagnose(), against the same emulator -----------------------


def _options(emulator: Emulator, **overrides: Any) -> DoctorOptions:
    settings: dict[str, Any] = {
        "imds_endpoint": emulator.imds_url,
        "ca_bundle": emulator.ca_bundle_path,
        "allowed_token_hosts": (emulator.allowed_token_host,),
    }
    settings.update(overrides)
    return DoctorOptions(**settings)


def _by_name(report: Report) -> dict[str, Check]:
    return {check.name: check for check in report.checks}


@pytest.mark.anyio
async def test_user_assigned_identity_shows_its_client_id(emulator: Emulator) -> None:
    identity = emulator.user_assigned[0]
    report = await diagnose(_options(emulator, object_id=identity.object_id), clean_env())
    assert report.ok
    assert _by_name(report)["identity"].details["client_id"] == identity.client_id
    assert report.identity == f"object_id={identity.object_id}"


@pytest.mark.anyio
async def test_unknown_identity_fails_the_identity_check(emulator: Emulator) -> None:
    unknown = "00000000-1111-4222-8333-444444444444"
    report = await diagnose(_options(emulator, client_id=unknown), clean_env())
    identity = _by_name(report)["identity"]
    assert not report.ok
    assert identity.status == "FAIL"
    assert f"client_id={unknown}" in identity.summary
    assert identity.fix is not None
    assert "assign the identity" in identity.fix


@pytest.mark.anyio
async def test_no_proxy_covering_imds_is_recognised(emulator: Emulator) -> None:
    env = clean_env(HTTP_PROXY="http://proxy.invalid:3128", NO_PROXY="localhost,127.0.0.0/8")
    proxy = _by_name(await diagnose(_options(emulator), env))["proxy"]
    assert proxy.status == "WARN"
    assert proxy.details["applies_to_imds"] is False
    assert "do not apply to IMDS" in proxy.summary


@pytest.mark.anyio
async def test_a_hanging_imds_is_bounded_by_timeout(emulator: Emulator) -> None:
    emulator.inject("getplatformmetadata", Fault(action="hang"))
    started = time.monotonic()
    report = await diagnose(_options(emulator, timeout=1.0), clean_env())
    assert time.monotonic() - started < 3
    assert _by_name(report)["imds"].status == "FAIL"
    assert not report.ok


@pytest.mark.anyio
async def test_clock_skew_against_the_imds_date_header_fails(emulator: Emulator) -> None:
    hour_ago = format_datetime(datetime.now(timezone.utc) - timedelta(hours=1), usegmt=True)
    skewed = Fault(response_fields={}, headers={"Date": hour_ago})
    emulator.inject("getplatformmetadata", skewed, skewed)  # the probe, then the identity check
    clock = _by_name(await diagnose(_options(emulator), clean_env()))["clock"]
    assert clock.status == "FAIL"
    assert 3590 < clock.details["skew_seconds"] < 3610
    assert clock.fix is not None
    assert "synchronise the system clock" in clock.fix


@pytest.mark.anyio
async def test_bad_ca_bundle_broad_token_host_and_unknown_backend(emulator: Emulator, tmp_path: Path) -> None:
    options = _options(
        emulator, ca_bundle=str(tmp_path / "missing.pem"), allowed_token_hosts=("*",), backend="tpm"
    )
    checks = _by_name(await diagnose(options, clean_env()))
    assert checks["tls"].status == "FAIL"
    assert checks["token_hosts"].status == "WARN"
    assert checks["backends"].status == "FAIL"
    assert "'tpm'" in checks["backends"].summary
    assert checks["mtls_pop"].status == "FAIL"
    assert checks["imds"].status == "OK"


@pytest.mark.anyio
async def test_invalid_imds_endpoint_fails_configuration_and_skips_the_network() -> None:
    report = await diagnose(DoctorOptions(imds_endpoint="ftp://example.invalid"), clean_env())
    checks = _by_name(report)
    assert not report.ok
    assert checks["configuration"].status == "FAIL"
    assert [checks[name].status for name in ("imds", "mtls_pop", "identity", "clock")] == ["SKIP"] * 4


# -- pure parts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "expected"), [(0.0, "OK"), (-30.0, "OK"), (120.0, "WARN"), (-120.0, "WARN"), (600.0, "FAIL")]
)
def test_clock_thresholds(offset: float, expected: str) -> None:
    server = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    response = HttpResponse(200, {"date": format_datetime(server, usegmt=True)}, b"")
    check = _doctor._clock_check(response, server.timestamp() + 0.5 + offset)
    assert check.status == expected
    assert check.details["skew_seconds"] == pytest.approx(offset, abs=0.1)


@pytest.mark.parametrize(
    ("host", "no_proxy", "covered"),
    [
        ("169.254.169.254", "169.254.169.254", True),
        ("169.254.169.254", "localhost, 169.254.0.0/16", True),
        ("169.254.169.254", "*", True),
        ("169.254.169.254", "localhost,.internal", False),
        ("imds.internal", ".internal", True),
        ("imds.internal", "internal:80", True),
        ("notinternal", "internal", False),
    ],
)
def test_no_proxy_matching(host: str, no_proxy: str, covered: bool) -> None:
    assert _doctor._no_proxy_covers(host, no_proxy) is covered


@pytest.mark.parametrize(
    ("pattern", "broad"),
    [("*", True), ("*.com", True), ("*:*", True), ("*.microsoft.com", False), ("127.0.0.1:*", False)],
)
def test_over_broad_token_host_patterns(pattern: str, broad: bool) -> None:
    assert _doctor._too_broad(pattern) is broad


def test_attestation_library_is_found_and_its_path_shown(tmp_path: Path) -> None:
    library = tmp_path / "standins" / "libAttestationClientLib.so"
    library.parent.mkdir()
    library.write_bytes(b"")
    environ = {"MSIV2_ASYNC_NATIVE_STANDINS": str(library.parent), "HOME": str(tmp_path)}
    check = _doctor._attestation_library([], None, environ)
    assert check.status == "OK"
    assert check.details["path"] == str(library)


def test_missing_attestation_library_warns_when_a_keyguard_key_is_in_use(tmp_path: Path) -> None:
    class KeyGuardLike(SoftwareBackend):
        name = "keyguard"
        binding_strength = "keyguard"

    environ = {"MSIV2_ASYNC_NATIVE_STANDINS": str(tmp_path), "HOME": str(tmp_path)}
    check = _doctor._attestation_library([], KeyGuardLike(), environ)
    assert check.status == "WARN"
    assert check.summary.startswith("not found")
    assert check.fix is not None
    assert "KeyGuardAttestation" in check.fix
    assert _doctor._attestation_library([], SoftwareBackend(), environ).status == "OK"
