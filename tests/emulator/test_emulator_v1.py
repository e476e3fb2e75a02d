"""The MSI v1 token endpoint, the IMDS request-hygiene counters and the secret sentinels."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from emulator_kit import (
    METADATA,
    V2,
    call_resource,
    counts,
    csr_for,
    get_metadata,
    http,
    issue_certificate,
    jwt_parts,
    post_csr,
    request_token,
    tls_context,
)

from msiv2_async.emulator import Emulator, Fault

V1 = {"api-version": "2018-02-01", "resource": "https://vault.azure.net"}


def v1(
    emu: Emulator, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    return http(
        "GET",
        f"{emu.imds_url}/metadata/identity/oauth2/token",
        params=V1 if params is None else params,
        headers=METADATA if headers is None else headers,
    )


def test_v1_token_has_the_shape_azure_identity_and_msal_parse(emu: Emulator) -> None:
    before = int(time.time())
    response = v1(emu)
    assert response.status_code == 200, response.text
    assert response.headers["Server"] == "IMDS/150.870.65.1854"
    body = response.json()
    assert set(body) == {
        "access_token",
        "client_id",
        "expires_in",
        "expires_on",
        "ext_expires_in",
        "not_before",
        "resource",
        "token_type",
    }
    assert all(isinstance(value, str) for value in body.values())
    assert body["token_type"] == "Bearer"
    assert body["resource"] == "https://vault.azure.net"
    assert body["client_id"] == emu.system_identity.client_id
    assert body["expires_in"] == body["ext_expires_in"] == "86399"
    assert before <= int(body["not_before"]) <= int(time.time())
    assert int(body["expires_on"]) == int(body["not_before"]) + 86399
    header, claims, signing_input, signature = jwt_parts(body["access_token"])
    assert header["alg"] == "RS256"
    emu.sts_public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    assert "cnf" not in claims
    assert claims["aud"] == "https://vault.azure.net"
    assert claims["appid"] == emu.system_identity.client_id
    assert claims["oid"] == emu.system_identity.object_id
    assert claims["tid"] == emu.tenant_id
    assert claims["exp"] == int(body["expires_on"])
    assert claims["uti"].startswith("SENTINEL-AT-")
    assert emu.stats == counts(v1_token=1)


@pytest.mark.parametrize("selector", ["client_id", "object_id", "msi_res_id", "mi_res_id"])
def test_v1_token_selects_a_user_assigned_identity(emu: Emulator, selector: str) -> None:
    identity = emu.user_assigned[0]
    value = {
        "client_id": identity.client_id,
        "object_id": identity.object_id,
        "msi_res_id": identity.resource_id,
        "mi_res_id": identity.resource_id,
    }[selector]
    body = v1(emu, {**V1, selector: value}).json()
    assert body["client_id"] == identity.client_id
    assert jwt_parts(body["access_token"])[1]["oid"] == identity.object_id


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"resource": "https://vault.azure.net"}, "api-version"),
        ({"api-version": "2018-02-01"}, "audience"),
        ({**V1, "client_id": "00000000-0000-0000-0000-000000000000"}, "Identity not found"),
        ({**V1, "client_id": "a", "object_id": "b"}, "Multiple identity selectors"),
    ],
)
def test_v1_token_rejects_bad_queries(emu: Emulator, params: dict[str, str], fragment: str) -> None:
    response = v1(emu, params)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert fragment in response.json()["error_description"]
    assert emu.stats["rejected_requests"] == 0


def test_v1_token_wants_get(emu: Emulator) -> None:
    response = http("POST", f"{emu.imds_url}/metadata/identity/oauth2/token", params=V1, headers=METADATA)
    assert response.status_code == 400


def test_v1_token_faults(emu: Emulator) -> None:
    emu.inject(
        "v1_token",
        Fault(status=503, headers={"Retry-After": "1"}),
        Fault(response_fields={"expires_in": 3600, "access_token": Fault.DELETE}),
    )
    throttled, altered = v1(emu), v1(emu)
    assert (throttled.status_code, throttled.headers["Retry-After"]) == (503, "1")
    assert altered.json()["expires_in"] == 3600
    assert "access_token" not in altered.json()
    assert emu.stats["v1_token"] == 2


def test_probes_without_metadata_are_400_and_counted_apart(emu: Emulator) -> None:
    v2_probe = get_metadata(emu, headers={})
    v1_probe = v1(emu, headers={})
    for probe in (v2_probe, v1_probe):
        assert probe.status_code == 400
        assert probe.json() == {
            "error": "invalid_request",
            "error_description": "Required metadata header not specified",
        }
        assert probe.headers["Server"] == "IMDS/150.870.65.1854"
    assert emu.stats == counts(
        getplatformmetadata=1, v1_token=1, metadata_header_missing=2, rejected_requests=2
    )


def test_forwarded_for_is_rejected_and_counted(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    forwarded = {**METADATA, "X-Forwarded-For": "10.1.2.3"}
    assert get_metadata(emu, headers=forwarded).status_code == 400
    assert post_csr(emu, csr_for(emu, client_key), headers=forwarded).status_code == 400
    assert v1(emu, headers={"X-Forwarded-For": "10.1.2.3"}).status_code == 400
    stats = emu.stats
    assert (stats["forwarded_for"], stats["metadata_header_missing"], stats["rejected_requests"]) == (3, 1, 4)


def test_hygiene_is_counted_even_when_a_fault_answers(emu: Emulator) -> None:
    emu.inject("getplatformmetadata", Fault(status=200, body="{}"))
    assert get_metadata(emu, headers={}).status_code == 200
    assert emu.stats["metadata_header_missing"] == 1


def test_a_correct_flow_leaves_the_hygiene_counters_at_zero(
    emu: Emulator, client_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    assert get_metadata(emu).status_code == 200
    certificate = issue_certificate(emu, client_key)
    context = tls_context(emu, tmp_path, certificate, client_key)
    token = request_token(emu, context, client_id=emu.system_identity.client_id).json()["access_token"]
    assert call_resource(emu, context, f"mtls_pop {token}").status_code == 200
    assert v1(emu).status_code == 200
    assert http("GET", f"{emu.imds_url}/_emulator/stats").status_code == 200
    assert emu.stats == counts(getplatformmetadata=1, issuecredential=1, token=1, resource=1, v1_token=1)


def test_sentinels_list_every_token_secret_and_nothing_is_logged(
    emu: Emulator, client_key: rsa.RSAPrivateKey, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    context = tls_context(emu, tmp_path, issue_certificate(emu, client_key), client_key)
    sts_token = request_token(emu, context, client_id=emu.system_identity.client_id).json()["access_token"]
    assert call_resource(emu, context, f"mtls_pop {sts_token}").status_code == 200
    assert call_resource(emu, context, f"Bearer {sts_token}").status_code == 401
    v1_token = v1(emu).json()["access_token"]
    sentinels = emu.sentinels()
    for token in (sts_token, v1_token):
        uti = jwt_parts(token)[1]["uti"]
        assert uti.startswith("SENTINEL-AT-")
        assert len(uti) > len("SENTINEL-AT-") + 16
        assert {token, token.rsplit(".", 1)[1], uti} <= set(sentinels)
    assert sentinels.index(sts_token) < sentinels.index(v1_token)
    assert http("GET", f"{emu.imds_url}/_emulator/sentinels").json() == {"sentinels": emu.sentinels()}
    logged = caplog.text + repr(emu.resource_log) + repr(emu.stats)
    assert not [secret for secret in sentinels if secret in logged]


def test_sentinels_survive_reset(emu: Emulator) -> None:
    token = v1(emu).json()["access_token"]
    emu.reset()
    assert token in emu.sentinels()


def test_v2_flow_still_requires_the_cred_api_version(emu: Emulator) -> None:
    assert get_metadata(emu, params={}).status_code == 400
    assert get_metadata(emu, params=V2).status_code == 200
