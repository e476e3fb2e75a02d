"""STS (mTLS client credentials) and mTLS-bound resource rules of the emulator, over real TLS on loopback."""

from __future__ import annotations

import json
import ssl
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from emulator_kit import (
    V2,
    b64url,
    call_resource,
    issue_certificate,
    jwt_parts,
    request_token,
    tls_context,
    x5t_s256,
)

from msiv2_async.emulator import Emulator


@pytest.fixture(scope="module")
def bound(
    running_emulator: Emulator, client_key: rsa.RSAPrivateKey, tmp_path_factory: pytest.TempPathFactory
) -> tuple[x509.Certificate, ssl.SSLContext]:
    """A certificate issued for the system identity and a TLS context that presents it."""
    certificate = issue_certificate(running_emulator, client_key)
    directory = tmp_path_factory.mktemp("bound")
    return certificate, tls_context(running_emulator, directory, certificate, client_key)


def _token(emu: Emulator, context: ssl.SSLContext, scope: str = "https://vault.azure.net/.default") -> str:
    response = request_token(emu, context, client_id=emu.system_identity.client_id, scope=scope)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _oauth_error(response: httpx.Response, status: int, error: str, code: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    assert body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    return str(body["error_description"])


def _unauthorized(response: httpx.Response, check: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith(
        'mtls_pop error="invalid_token", error_description="'
    )
    assert response.json()["error"] == "invalid_token"
    assert response.json()["failed_check"] == check


# -- STS -----------------------------------------------------------------------------------------------


def test_sts_without_client_certificate_is_aadsts392200(emu: Emulator) -> None:
    response = request_token(emu, tls_context(emu), client_id=emu.system_identity.client_id)
    description = _oauth_error(response, 400, "invalid_request", 392200)
    assert "Client certificate is missing from the request" in description
    assert emu.stats["token"] == 1


def test_sts_mtls_pop_token_is_bound_to_the_presented_certificate(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]
) -> None:
    certificate, context = bound
    response = request_token(emu, context, client_id=emu.system_identity.client_id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "mtls_pop"
    assert body["expires_in"] == 86400
    assert body["ext_expires_in"] == 86400
    assert body["refresh_in"] == 43200
    header, claims, signing_input, signature = jwt_parts(body["access_token"])
    assert header["alg"] == "RS256"
    assert header["typ"] == "JWT"
    assert header["kid"]
    emu.sts_public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    assert claims["cnf"] == {"x5t#S256": x5t_s256(certificate)}
    assert len(claims["cnf"]["x5t#S256"]) == 43
    assert claims["aud"] == "https://vault.azure.net"
    assert claims["iss"] == f"https://sts.windows.net/{emu.tenant_id}/"
    assert claims["tid"] == emu.tenant_id
    assert claims["appid"] == emu.system_identity.client_id
    assert claims["oid"] == claims["sub"] == emu.system_identity.object_id
    assert claims["idtyp"] == "app"
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] - claims["iat"] == 86400
    assert abs(claims["iat"] - time.time()) < 30


def test_sts_token_for_user_assigned_identity(
    emu: Emulator, client_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    uami = emu.user_assigned[0]
    certificate = issue_certificate(
        emu, client_key, client_id=uami.client_id, params={**V2, "client_id": uami.client_id}
    )
    response = request_token(
        emu, tls_context(emu, tmp_path, certificate, client_key), client_id=uami.client_id
    )
    assert response.status_code == 200, response.text
    _, claims, _, _ = jwt_parts(response.json()["access_token"])
    assert (claims["appid"], claims["oid"]) == (uami.client_id, uami.object_id)


def test_sts_client_id_must_match_certificate_cn(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]
) -> None:
    response = request_token(emu, bound[1], client_id=emu.user_assigned[0].client_id)
    assert "does not match client_id" in _oauth_error(response, 401, "invalid_client", 700027)


def test_sts_tenant_path_must_be_the_tenant(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]
) -> None:
    response = request_token(
        emu, bound[1], client_id=emu.system_identity.client_id, tenant="11111111-1111-4111-8111-111111111111"
    )
    assert "not found" in _oauth_error(response, 400, "invalid_request", 90002)


def test_custom_tenant_flows_into_certificate_dc_and_token_path(
    client_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    with Emulator(tenant_id="22222222-2222-4222-8222-222222222222") as emu:
        certificate = issue_certificate(emu, client_key)
        assert certificate.subject.get_attributes_for_oid(NameOID.DOMAIN_COMPONENT)[0].value == emu.tenant_id
        context = tls_context(emu, tmp_path, certificate, client_key)
        good = request_token(emu, context, client_id=emu.system_identity.client_id)
        wrong = request_token(
            emu,
            context,
            client_id=emu.system_identity.client_id,
            tenant="5c4b6f1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b",
        )
    assert good.status_code == 200
    _oauth_error(wrong, 400, "invalid_request", 90002)


def test_sts_without_token_type_issues_bearer_token_without_cnf(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]
) -> None:
    response = request_token(emu, bound[1], client_id=emu.system_identity.client_id, token_type=None)
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "Bearer"
    _, claims, _, _ = jwt_parts(response.json()["access_token"])
    assert "cnf" not in claims
    assert claims["aud"] == "https://vault.azure.net"


def test_sts_grant_type_must_be_client_credentials(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]
) -> None:
    response = request_token(emu, bound[1], client_id=emu.system_identity.client_id, grant_type="password")
    assert "unsupported grant type" in _oauth_error(response, 400, "invalid_request", 70003)


def test_sts_scope_must_end_with_default(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]
) -> None:
    response = request_token(
        emu, bound[1], client_id=emu.system_identity.client_id, scope="https://vault.azure.net"
    )
    assert "/.default" in _oauth_error(response, 400, "invalid_request", 1002012)


def test_sts_rejects_foreign_client_certificate_in_the_handshake(
    emu: Emulator, client_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, emu.system_identity.client_id)])
    now = datetime.now(timezone.utc)
    self_signed = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(client_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(client_key, hashes.SHA256())
    )
    context = tls_context(emu, tmp_path, self_signed, client_key)
    with pytest.raises(httpx.TransportError):
        request_token(emu, context, client_id=emu.system_identity.client_id)
    assert emu.stats["token"] == 0


def test_sts_expired_certificate_is_refused(client_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    with Emulator(certificate_lifetime=timedelta(minutes=-1)) as emu:
        certificate = issue_certificate(emu, client_key)
        assert certificate.not_valid_after_utc < datetime.now(timezone.utc)
        with pytest.raises(httpx.TransportError):
            request_token(
                emu,
                tls_context(emu, tmp_path, certificate, client_key),
                client_id=emu.system_identity.client_id,
            )
        assert emu.stats["token"] == 0


# -- resource ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_resource_accepts_bound_token_over_the_same_certificate(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext], method: str
) -> None:
    certificate, context = bound
    token = _token(emu, context, scope="https://graph.microsoft.com/.default")
    before = len(emu.resource_log)
    response = call_resource(emu, context, f"mtls_pop {token}", method=method)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "verified": True,
        "aud": "https://graph.microsoft.com",
        "appid": emu.system_identity.client_id,
        "tid": emu.tenant_id,
        "x5t#S256": x5t_s256(certificate),
        "path": "/v1.0/applications",
    }
    assert emu.resource_log[before:] == [
        {
            "presented_x5t": x5t_s256(certificate),
            "cnf_x5t": x5t_s256(certificate),
            "scheme": "mtls_pop",
            "status": 200,
        }
    ]
    assert emu.stats["resource"] == 1


def test_resource_accepts_its_own_base_url_as_audience(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]
) -> None:
    own = emu.resource_url.removesuffix("/v1.0/applications")
    token = _token(emu, bound[1], scope=f"{own}/.default")
    response = call_resource(emu, bound[1], f"mtls_pop {token}")
    assert response.status_code == 200, response.text
    assert response.json()["aud"] == own


def test_resource_refuses_token_bound_to_another_certificate(
    emu: Emulator,
    bound: tuple[x509.Certificate, ssl.SSLContext],
    other_key: rsa.RSAPrivateKey,
    tmp_path: Path,
) -> None:
    token = _token(emu, bound[1])
    second = issue_certificate(emu, other_key)
    response = call_resource(emu, tls_context(emu, tmp_path, second, other_key), f"mtls_pop {token}")
    _unauthorized(response, "cnf")
    entry = emu.resource_log[-1]
    assert entry["presented_x5t"] == x5t_s256(second)
    assert entry["cnf_x5t"] == x5t_s256(bound[0])
    assert entry["status"] == 401


def test_resource_refuses_bound_token_under_bearer_scheme(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]
) -> None:
    token = _token(emu, bound[1])
    _unauthorized(call_resource(emu, bound[1], f"Bearer {token}"), "scheme")
    assert emu.resource_log[-1]["scheme"] == "Bearer"


def test_resource_refuses_unbound_bearer_token(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]
) -> None:
    response = request_token(emu, bound[1], client_id=emu.system_identity.client_id, token_type=None)
    token = response.json()["access_token"]
    _unauthorized(call_resource(emu, bound[1], f"mtls_pop {token}"), "cnf")
    _unauthorized(call_resource(emu, bound[1], f"Bearer {token}"), "scheme")


def test_resource_requires_client_certificate(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]
) -> None:
    token = _token(emu, bound[1])
    _unauthorized(call_resource(emu, tls_context(emu), f"mtls_pop {token}"), "client_certificate")
    assert emu.resource_log[-1]["presented_x5t"] is None


def test_resource_requires_authorization_header(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]
) -> None:
    _unauthorized(call_resource(emu, bound[1], None), "authorization")


def test_resource_refuses_expired_token(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]
) -> None:
    emu.token_lifetime = timedelta(minutes=-5)
    try:
        token = _token(emu, bound[1])
    finally:
        emu.token_lifetime = timedelta(hours=24)
    _unauthorized(call_resource(emu, bound[1], f"mtls_pop {token}"), "expiry")


def test_resource_refuses_forged_token(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext], other_key: rsa.RSAPrivateKey
) -> None:
    header, claims, _, _ = jwt_parts(_token(emu, bound[1]))
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = other_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    _unauthorized(call_resource(emu, bound[1], f"mtls_pop {signing_input}.{b64url(signature)}"), "signature")


def test_resource_refuses_tampered_claims(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]
) -> None:
    head, _, signature = _token(emu, bound[1]).split(".")
    _, claims, _, _ = jwt_parts(_token(emu, bound[1]))
    claims["exp"] += 3600
    forged = f"{head}.{b64url(json.dumps(claims).encode())}.{signature}"
    _unauthorized(call_resource(emu, bound[1], f"mtls_pop {forged}"), "signature")


def test_resource_refuses_unknown_audience(
    emu: Emulator, bound: tuple[x509.Certificate, ssl.SSLContext]
) -> None:
    token = _token(emu, bound[1], scope="https://storage.azure.com/.default")
    _unauthorized(call_resource(emu, bound[1], f"mtls_pop {token}"), "audience")
