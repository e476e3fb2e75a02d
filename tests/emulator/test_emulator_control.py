"""The control API on the IMDS listener: faults, reset, settings, sentinels, over plain loopback HTTP."""

from __future__ import annotations

import base64
import ssl
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from emulator_kit import (
    METADATA,
    V2,
    counts,
    csr_for,
    get_metadata,
    http,
    post_csr,
    request_token,
    tls_context,
)

from msiv2_async.emulator import REMOVE, Emulator, Fault
from msiv2_async.emulator._control import _is_loopback, fault_from_json


def control(
    emu: Emulator, method: str, name: str, payload: Any = None, raw: bytes | None = None
) -> httpx.Response:
    url = f"{emu.control_url}/{name}"
    if raw is not None:
        return http(method, url, content=raw)
    return http(method, url, json=payload) if payload is not None else http(method, url)


def test_control_url(emu: Emulator) -> None:
    assert emu.control_url == f"{emu.imds_url}/_emulator"


def test_post_faults_queues_them_in_order(emu: Emulator) -> None:
    response = control(
        emu,
        "POST",
        "faults",
        {
            "endpoint": "getplatformmetadata",
            "faults": [
                {"status": 429, "headers": {"Retry-After": "7"}, "body": '{"error":"throttled"}'},
                {"status": 500, "server_header": None},
                {"response_fields": {"clientId": 123, "cuId": {"$remove": True}}},
            ],
        },
    )
    assert response.status_code == 204
    assert response.content == b""
    throttled, bare, altered, normal = (get_metadata(emu) for _ in range(4))
    assert (throttled.status_code, throttled.headers["Retry-After"]) == (429, "7")
    assert throttled.json() == {"error": "throttled"}
    assert bare.status_code == 500
    assert "Server" not in bare.headers
    assert altered.json()["clientId"] == 123
    assert "cuId" not in altered.json()
    assert normal.status_code == 200
    assert emu.stats == counts(getplatformmetadata=4)


def test_post_faults_accepts_every_fault_field(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    fault = {
        "status": None,
        "headers": {"X-Scripted": "yes"},
        "body": "",
        "delay": 0.01,
        "server_header": "IMDS/1.0",
        "action": "respond",
        "interval": 0.25,
        "body_size": None,
        "certificate": "short_lived",
        "certificate_seconds": 300,
        "response_fields": {"token_endpoint": "https://127.0.0.1:9/t"},
        "token": None,
    }
    assert (
        control(emu, "POST", "faults", {"endpoint": "issuecredential", "faults": [fault]}).status_code == 204
    )
    response = post_csr(emu, csr_for(emu, client_key))
    assert response.status_code == 200
    assert response.headers["X-Scripted"] == "yes"
    assert response.headers["Server"] == "IMDS/1.0"
    body = response.json()
    assert body["token_endpoint"] == "https://127.0.0.1:9/t"
    certificate = x509.load_der_x509_certificate(base64.b64decode(body["certificate"]))
    remaining = certificate.not_valid_after_utc - datetime.now(timezone.utc)
    assert timedelta(seconds=280) < remaining <= timedelta(seconds=301)


def test_fault_json_maps_onto_fault() -> None:
    assert fault_from_json({}) == Fault()
    assert fault_from_json({"status": 503, "delay": 1, "action": "hang"}) == Fault(
        status=503, delay=1, action="hang"
    )
    parsed = fault_from_json({"response_fields": {"a": {"$remove": True}, "b": {"$other": True}}})
    assert parsed.response_fields == {"a": REMOVE, "b": {"$other": True}}


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"endpoint": "oauth2", "faults": [{}]}, "unknown endpoint"),
        ({"endpoint": "token", "faults": [{"colour": "red"}]}, "unknown fault field(s): colour"),
        ({"endpoint": "token", "faults": [{"status": "500"}]}, "status must be an integer"),
        ({"endpoint": "token", "faults": [{"status": True}]}, "status must be an integer"),
        ({"endpoint": "token", "faults": [{"delay": "1"}]}, "delay must be a number"),
        ({"endpoint": "token", "faults": [{"headers": {"A": 1}}]}, "headers must map names to strings"),
        ({"endpoint": "token", "faults": [{"action": "explode"}]}, "unknown action 'explode'"),
        ({"endpoint": "token", "faults": [{"token": "opaque"}]}, "unknown token variant"),
        ({"endpoint": "token", "faults": [{"certificate": "expired"}]}, "issuecredential only"),
        ({"endpoint": "token", "faults": [{"interval": 0}]}, "interval must be positive"),
        ({"endpoint": "token", "faults": [[]]}, "every fault must be a JSON object"),
        ({"endpoint": "token", "faults": {}}, "faults a list"),
        ({"endpoint": "token"}, "the body must be"),
        ({"endpoint": "token", "faults": [], "extra": 1}, "the body must be"),
    ],
)
def test_post_faults_rejects_bad_input_and_queues_nothing(
    emu: Emulator, payload: dict[str, Any], fragment: str
) -> None:
    if payload.get("endpoint") == "token" and isinstance(payload.get("faults"), list):
        payload = {**payload, "faults": [{"status": 418}, *payload["faults"]]}
    response = control(emu, "POST", "faults", payload)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert fragment in response.json()["error_description"]
    with emu._state.lock:
        assert all(not queue for queue in emu._state.faults.values())


def test_post_faults_rejects_a_body_that_is_not_json(emu: Emulator) -> None:
    response = control(emu, "POST", "faults", raw=b"status=500")
    assert response.status_code == 400
    assert "JSON" in response.json()["error_description"]


def test_delete_faults_clears_every_queue(emu: Emulator) -> None:
    emu.inject("getplatformmetadata", Fault(status=500))
    emu.inject("token", Fault(status=500))
    assert control(emu, "DELETE", "faults").status_code == 204
    assert get_metadata(emu).status_code == 200


def test_reset_clears_counters_faults_and_pending_rejections(emu: Emulator) -> None:
    emu.inject("getplatformmetadata", Fault(status=500))
    get_metadata(emu, headers={})
    emu.inject("getplatformmetadata", Fault(status=500))
    emu.reject_client_certificates(4)
    assert emu.stats["getplatformmetadata"] == 1
    assert control(emu, "POST", "reset").status_code == 204
    assert emu.stats == counts()
    assert get_metadata(emu).status_code == 200
    assert control(emu, "GET", "settings").json()["reject_client_certificates"] == 0


def test_stats_and_control_requests_are_not_counted(emu: Emulator) -> None:
    get_metadata(emu)
    control(emu, "GET", "settings")
    control(emu, "DELETE", "faults")
    assert control(emu, "GET", "stats").json() == counts(getplatformmetadata=1)


def test_get_settings_reports_the_defaults(emu: Emulator) -> None:
    assert control(emu, "GET", "settings").json() == {
        "certificate_lifetime_seconds": 7 * 24 * 3600.0,
        "token_lifetime_seconds": 24 * 3600.0,
        "require_attestation": False,
        "sts_tls": "normal",
        "resource_tls": "normal",
        "reject_client_certificates": 0,
    }


def test_put_settings_changes_the_emulator(
    running_emulator: Emulator, client_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    emu = running_emulator
    original = (emu.certificate_lifetime, emu.token_lifetime)
    try:
        response = control(
            emu,
            "PUT",
            "settings",
            {
                "certificate_lifetime_seconds": 3600,
                "token_lifetime_seconds": 600.5,
                "require_attestation": True,
            },
        )
        assert response.status_code == 204
        assert emu.certificate_lifetime == timedelta(hours=1)
        assert emu.token_lifetime == timedelta(seconds=600.5)
        assert emu.require_attestation is True
        assert post_csr(emu, csr_for(emu, client_key)).status_code == 400
        certificate = issue_certificate_attested(emu, client_key)
        remaining = certificate.not_valid_after_utc - datetime.now(timezone.utc)
        assert timedelta(minutes=55) < remaining <= timedelta(hours=1)
        context = tls_context(emu, tmp_path, certificate, client_key)
        token = request_token(emu, context, client_id=emu.system_identity.client_id).json()
        assert token["expires_in"] == 600
        assert control(emu, "PUT", "settings", {"require_attestation": False}).status_code == 204
        assert emu.require_attestation is False
    finally:
        emu.certificate_lifetime, emu.token_lifetime = original
        emu.require_attestation = False


def issue_certificate_attested(emu: Emulator, key: rsa.RSAPrivateKey) -> x509.Certificate:
    response = post_csr(emu, csr_for(emu, key), attestation_token="eyJhbGciOiJub25lIn0.e30.")
    assert response.status_code == 200, response.text
    return x509.load_der_x509_certificate(base64.b64decode(response.json()["certificate"]))


def test_put_settings_tls_modes_and_rejections(emu: Emulator) -> None:
    payload = {"sts_tls": "unknown_ca", "resource_tls": "wrong_hostname", "reject_client_certificates": 2}
    assert control(emu, "PUT", "settings", payload).status_code == 204
    assert (emu.sts_tls, emu.resource_tls) == ("unknown_ca", "wrong_hostname")
    assert control(emu, "GET", "settings").json()["reject_client_certificates"] == 2
    context = ssl.create_default_context(cadata=emu.ca_pem.decode())
    with pytest.raises(httpx.TransportError, match="alert"):
        httpx.get(f"{emu.sts_url}/x", verify=context)
    assert emu.stats["token_handshake_rejections"] == 1
    assert control(emu, "PUT", "settings", {"reject_client_certificates": 0}).status_code == 204
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{emu.sts_url}/x", verify=context)
    assert control(emu, "PUT", "settings", {"sts_tls": "normal"}).status_code == 204
    assert httpx.get(f"{emu.sts_url}/x", verify=context).status_code == 404
    assert emu.stats["token_handshake_rejections"] == 1


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"colour": 1}, "unknown setting(s): colour"),
        ({"certificate_lifetime_seconds": "60"}, "must be a number"),
        ({"token_lifetime_seconds": True}, "must be a number"),
        ({"require_attestation": 1}, "true or false"),
        ({"sts_tls": "ssl3"}, "sts_tls must be one of"),
        ({"resource_tls": 5}, "must be a string"),
        ({"reject_client_certificates": -1}, "integer >= 0"),
        ({"reject_client_certificates": 1.5}, "integer >= 0"),
    ],
)
def test_put_settings_rejects_bad_input_and_changes_nothing(
    emu: Emulator, payload: dict[str, Any], fragment: str
) -> None:
    before = control(emu, "GET", "settings").json()
    response = control(emu, "PUT", "settings", {"require_attestation": True, **payload})
    assert response.status_code == 400
    assert fragment in response.json()["error_description"]
    assert control(emu, "GET", "settings").json() == before


def test_put_settings_wants_an_object(emu: Emulator) -> None:
    assert control(emu, "PUT", "settings", [1]).status_code == 400


def test_wrong_methods_are_405(emu: Emulator) -> None:
    assert control(emu, "GET", "faults").status_code == 405
    assert control(emu, "POST", "stats").status_code == 405
    assert control(emu, "GET", "reset").status_code == 405


def test_control_answers_only_loopback_clients() -> None:
    assert _is_loopback("127.0.0.1")
    assert _is_loopback("127.8.9.10")
    assert _is_loopback("::1")
    assert not _is_loopback("10.0.0.4")
    assert not _is_loopback("169.254.169.254")
    assert not _is_loopback(None)
    assert not _is_loopback("not-an-address")


def test_hang_via_control_then_stop_is_quick() -> None:
    with Emulator() as emu:
        fault = {"endpoint": "getplatformmetadata", "faults": [{"action": "hang"}]}
        assert control(emu, "POST", "faults", fault).status_code == 204
        with pytest.raises(httpx.ReadTimeout):
            http(
                "GET",
                f"{emu.imds_url}/metadata/identity/getplatformmetadata",
                params=V2,
                headers=METADATA,
                timeout=0.2,
            )
        started = time.perf_counter()
    assert time.perf_counter() - started < 1.0
