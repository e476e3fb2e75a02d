"""IMDS rules of the emulator (PROTOCOL.md §2, §3, §4, §13 items 1-5), over real loopback HTTP."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from emulator_kit import (
    CUID,
    IA5,
    METADATA,
    PRINTABLE,
    PSS_NET,
    PSS_PY,
    UTF8,
    V2,
    build_csr,
    csr_for,
    cuid_attribute,
    explicit,
    get_metadata,
    http,
    oid,
    post_csr,
    pss_algorithm,
    seq,
    set_of,
    tlv,
)

from msiv2_async.emulator import Emulator


def _error(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    return str(body["error_description"])


def test_kit_writes_both_pss_identifiers_exactly_as_specified() -> None:
    assert pss_algorithm() == PSS_NET
    assert len(PSS_NET) == 63
    assert pss_algorithm(nulls=True, trailer=True) == PSS_PY
    assert len(PSS_PY) == 72


def test_server_header_on_every_response(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    responses = [
        get_metadata(emu),
        get_metadata(emu, headers={}),
        get_metadata(emu, params={"cred-api-version": "1.0"}),
        post_csr(emu, csr_for(emu, client_key)),
        post_csr(emu, "bm90IGEgY3Ny"),
        http("GET", f"{emu.imds_url}/metadata/identity/unknown"),
        http("GET", f"{emu.imds_url}/_emulator/stats"),
    ]
    assert [r.status_code for r in responses] == [200, 400, 400, 200, 400, 404, 200]
    assert all(r.headers.get("Server") == "IMDS/150.870.65.1854" for r in responses)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_missing_metadata_header_is_400(emu: Emulator, method: str) -> None:
    path = "getplatformmetadata" if method == "GET" else "issuecredential"
    response = http(method, f"{emu.imds_url}/metadata/identity/{path}", params=V2, json={})
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "Required metadata header not specified",
    }


def test_metadata_header_must_be_true(emu: Emulator) -> None:
    assert "metadata header" in _error(get_metadata(emu, headers={"Metadata": "false"}))


def test_x_forwarded_for_is_400(emu: Emulator) -> None:
    response = get_metadata(emu, headers={**METADATA, "X-Forwarded-For": "10.0.0.1"})
    assert "X-Forwarded-For" in _error(response)


@pytest.mark.parametrize(
    "params",
    [{}, {"cred-api-version": "1.0"}, {"api-version": "2.0"}, {"cred-api-version": "2.0,2.0"}],
    ids=["missing", "1.0", "api-version-instead", "garbage"],
)
def test_wrong_cred_api_version_is_400(emu: Emulator, params: dict[str, str]) -> None:
    assert "cred-api-version" in _error(get_metadata(emu, params=params))


def test_platform_metadata_for_system_assigned_identity(emu: Emulator) -> None:
    response = get_metadata(emu)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.json() == {
        "cuId": {"vmId": emu.vm_id},
        "clientId": emu.system_identity.client_id,
        "tenantId": emu.tenant_id,
        "attestationEndpoint": "https://sharedeus2.eus2.attest.azure.net",
    }


@pytest.mark.parametrize("selector", ["client_id", "object_id", "mi_res_id", "msi_res_id"])
def test_identity_selection_by_each_selector(emu: Emulator, selector: str) -> None:
    uami = emu.user_assigned[0]
    value = {"client_id": uami.client_id, "object_id": uami.object_id}.get(selector, uami.resource_id)
    response = get_metadata(emu, params={**V2, selector: value})
    assert response.status_code == 200, response.text
    assert response.json()["clientId"] == uami.client_id
    assert uami.client_id != emu.system_identity.client_id


@pytest.mark.parametrize("selector", ["client_id", "object_id", "mi_res_id", "msi_res_id"])
def test_unknown_identity_is_400(emu: Emulator, selector: str) -> None:
    unknown = (
        "/subscriptions/x/resourcegroups/y"
        if selector.endswith("res_id")
        else "deadbeef-0000-4000-8000-000000000000"
    )
    assert "Identity not found" in _error(get_metadata(emu, params={**V2, selector: unknown}))


def test_two_identity_selectors_are_400(emu: Emulator) -> None:
    uami = emu.user_assigned[0]
    params = {**V2, "mi_res_id": uami.resource_id, "msi_res_id": uami.resource_id}
    assert "Multiple identity selectors" in _error(get_metadata(emu, params=params))


def test_csr_in_net_layout_is_accepted_and_certificate_profile(
    emu: Emulator, client_key: rsa.RSAPrivateKey
) -> None:
    csr = csr_for(emu, client_key, layout="net")
    assert PSS_NET in csr
    before = len(emu.issued_certificates)
    response = post_csr(emu, csr)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "client_id",
        "tenant_id",
        "certificate",
        "identity_type",
        "mtls_authentication_endpoint",
    }
    assert body["client_id"] == emu.system_identity.client_id
    assert body["tenant_id"] == emu.tenant_id
    assert body["identity_type"] == "SystemAssigned"
    assert body["mtls_authentication_endpoint"] == emu.sts_url
    certificate = x509.load_der_x509_certificate(base64.b64decode(body["certificate"], validate=True))
    assert emu.issued_certificates[before:] == [certificate]
    subject = certificate.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == emu.system_identity.client_id
    assert subject.get_attributes_for_oid(NameOID.DOMAIN_COMPONENT)[0].value == emu.tenant_id
    assert subject.rfc4514_string() == f"CN={emu.system_identity.client_id},DC={emu.tenant_id}"
    assert "managedidentitysnissuer.login.microsoft.com" in certificate.issuer.rfc4514_string()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert certificate.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ) == client_key.public_key().public_bytes(serialization.Encoding.DER, spki)
    now = datetime.now(timezone.utc)
    assert abs(certificate.not_valid_before_utc - (now - timedelta(minutes=5))) < timedelta(seconds=30)
    assert abs(certificate.not_valid_after_utc - (now + timedelta(days=7))) < timedelta(seconds=30)
    eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    key_usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert key_usage.digital_signature
    assert not key_usage.key_cert_sign
    assert certificate.signature_hash_algorithm is not None
    assert certificate.signature_hash_algorithm.name == "sha256"
    ca = x509.load_pem_x509_certificate(emu.ca_pem)
    assert certificate.issuer == ca.subject
    ca_key = ca.public_key()
    assert isinstance(ca_key, rsa.RSAPublicKey)
    ca_key.verify(
        certificate.signature, certificate.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA256()
    )


def test_csr_in_py_layout_is_accepted(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    uami = emu.user_assigned[0]
    csr = csr_for(emu, client_key, uami.client_id, layout="py")
    assert PSS_PY in csr
    response = post_csr(emu, csr, params={**V2, "msi_res_id": uami.resource_id})
    assert response.status_code == 200, response.text
    assert response.json()["identity_type"] == "UserAssigned"
    assert response.json()["client_id"] == uami.client_id
    certificate = x509.load_der_x509_certificate(base64.b64decode(response.json()["certificate"]))
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == uami.client_id


@pytest.mark.parametrize(
    ("layout", "cn_tag", "dc_tag"),
    [("net", UTF8, IA5), ("net", IA5, UTF8), ("py", PRINTABLE, PRINTABLE), ("py", IA5, IA5)],
)
def test_csr_string_types_and_rdn_orders_are_accepted(
    emu: Emulator, client_key: rsa.RSAPrivateKey, layout: str, cn_tag: int, dc_tag: int
) -> None:
    response = post_csr(emu, csr_for(emu, client_key, layout=layout, cn_tag=cn_tag, dc_tag=dc_tag))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "cuid_json",
    [
        '{ "vmId" : "9a8b7c6d-5e4f-4a3b-9c2d-1e0f2a3b4c5d" }',
        '{"vmssId":null,"vmId":"9a8b7c6d-5e4f-4a3b-9c2d-1e0f2a3b4c5d"}',
        '{"vmId":"9a8b7c6d-5e4f-4a3b-9c2d-1e0f2a3b4c5d","extra":1}',
    ],
    ids=["whitespace", "null-vmssId-first", "extra-key"],
)
def test_csr_cuid_is_compared_semantically(
    emu: Emulator, client_key: rsa.RSAPrivateKey, cuid_json: str
) -> None:
    assert emu.vm_id in cuid_json
    response = post_csr(emu, csr_for(emu, client_key, attributes=cuid_attribute(cuid_json)))
    assert response.status_code == 200, response.text


def test_csr_with_bad_signature_is_400(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    assert "signature does not verify" in _error(
        post_csr(emu, csr_for(emu, client_key, corrupt_signature=True))
    )


def test_csr_with_wrong_salt_length_is_400(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    description = _error(
        post_csr(emu, csr_for(emu, client_key, salt_length=20, algorithm=pss_algorithm(salt=20)))
    )
    assert "saltLength must be 32" in description


def test_csr_with_non_pss_signature_algorithm_is_400(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    sha256_with_rsa = seq(oid("1.2.840.113549.1.1.11"), b"\x05\x00")
    description = _error(post_csr(emu, csr_for(emu, client_key, algorithm=sha256_with_rsa)))
    assert "must be RSASSA-PSS" in description


def test_csr_with_wrong_cn_is_400(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    csr = csr_for(emu, client_key, client_id=emu.user_assigned[0].client_id)
    assert "subject CN" in _error(post_csr(emu, csr))


def test_csr_with_wrong_dc_is_400(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    csr = build_csr(
        client_key,
        client_id=emu.system_identity.client_id,
        tenant_id="11111111-1111-4111-8111-111111111111",
        cuid={"vmId": emu.vm_id},
    )
    assert "subject DC" in _error(post_csr(emu, csr))


@pytest.mark.parametrize(
    "cuid",
    [
        {"vmId": "00000000-0000-4000-8000-000000000000"},
        {"vmId": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f2a3b4c5d", "vmssId": "x"},
        {},
    ],
    ids=["other-vm", "unexpected-vmssId", "empty"],
)
def test_csr_with_wrong_cuid_is_400(
    emu: Emulator, client_key: rsa.RSAPrivateKey, cuid: dict[str, str]
) -> None:
    csr = build_csr(client_key, client_id=emu.system_identity.client_id, tenant_id=emu.tenant_id, cuid=cuid)
    assert "cuId attribute" in _error(post_csr(emu, csr))


def test_csr_without_or_with_two_attributes_is_400(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    attribute = seq(oid(CUID), set_of(tlv(UTF8, f'{{"vmId":"{emu.vm_id}"}}'.encode())))
    none = csr_for(emu, client_key, attributes=explicit(0, b""))
    two = csr_for(emu, client_key, attributes=explicit(0, attribute + attribute))
    assert "exactly one attribute" in _error(post_csr(emu, none))
    assert "exactly one attribute" in _error(post_csr(emu, two))


def test_csr_with_1024_bit_key_is_400(emu: Emulator) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert "at least 2048 bits" in _error(post_csr(emu, csr_for(emu, small)))


def test_csr_with_trailing_bytes_is_400(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    assert "trailing bytes" in _error(post_csr(emu, csr_for(emu, client_key, trailing=b"\x00\x00")))


@pytest.mark.parametrize(
    "transform",
    [
        lambda b64: f"-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----",
        lambda b64: b64[:64] + "\n" + b64[64:],
        lambda b64: b64.rstrip("=").replace("+", "-").replace("/", "_") + "-_",
    ],
    ids=["pem", "line-break", "base64url"],
)
def test_csr_must_be_single_line_standard_base64(
    emu: Emulator, client_key: rsa.RSAPrivateKey, transform: object
) -> None:
    assert callable(transform)
    wire = transform(base64.b64encode(csr_for(emu, client_key)).decode())
    assert "base64" in _error(post_csr(emu, wire))


def test_issuecredential_requires_post(emu: Emulator) -> None:
    response = http("GET", f"{emu.imds_url}/metadata/identity/issuecredential", params=V2, headers=METADATA)
    assert "not supported" in _error(response)


def test_require_attestation(client_key: rsa.RSAPrivateKey) -> None:
    with Emulator(require_attestation=True) as emu:
        missing = post_csr(emu, csr_for(emu, client_key))
        empty = post_csr(emu, csr_for(emu, client_key), attestation_token="")
        present = post_csr(emu, csr_for(emu, client_key), attestation_token="eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
    expected = {
        "error": "invalid_request",
        "error_description": "Attestation Token is missing / empty in the issue credential request",
    }
    assert (missing.status_code, missing.json()) == (400, expected)
    assert (empty.status_code, empty.json()) == (400, expected)
    assert present.status_code == 200, present.text


def test_certificate_lifetime_is_configurable(emu: Emulator, client_key: rsa.RSAPrivateKey) -> None:
    emu.certificate_lifetime = timedelta(hours=12)
    try:
        response = post_csr(emu, csr_for(emu, client_key))
    finally:
        emu.certificate_lifetime = timedelta(days=7)
    certificate = x509.load_der_x509_certificate(base64.b64decode(response.json()["certificate"]))
    remaining = certificate.not_valid_after_utc - datetime.now(timezone.utc)
    assert timedelta(hours=11, minutes=59) < remaining <= timedelta(hours=12)
