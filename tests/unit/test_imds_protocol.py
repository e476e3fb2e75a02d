"""IMDS requests and answers: PROTOCOL.md §1 (endpoints, headers), §2 (metadata), §4 (issuecredential)."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from unit_support import (
    ATTESTATION_ENDPOINT,
    CANNED_ISSUE_EXAMPLE,
    CANNED_ISSUE_TEST,
    CANNED_METADATA_EXAMPLE,
    CANNED_METADATA_TEST,
    CLIENT_ID,
    CORRELATION_ID,
    MTLS_ENDPOINT,
    RESOURCE_ID,
    TENANT_ID,
    VM_ID,
    imds_response,
    issue_body,
    make_jwt,
)

from msiv2_async import _imds
from msiv2_async._errors import ConfigurationError, ImdsError, ImdsV2NotSupportedError, MalformedResponseError
from msiv2_async._models import CuId, ManagedIdentity

SYSTEM = ManagedIdentity.system_assigned()
CSR = "MIIDGzCCAdMCAQAwZTE0MDIGCgmSJomT8ixkARkW"
ENV = "AZURE_POD_IDENTITY_AUTHORITY_HOST"


# --- §1.1 endpoint resolution ----------------------------------------------------------------------
def test_endpoint_defaults_to_the_link_local_imds_address() -> None:
    assert _imds.resolve_endpoint(None, {}) == "http://169.254.169.254"


def test_endpoint_comes_from_the_pod_identity_env_var_when_no_argument() -> None:
    assert _imds.resolve_endpoint(None, {ENV: "http://127.0.0.1:8080"}) == "http://127.0.0.1:8080"


def test_endpoint_argument_beats_the_env_var() -> None:
    assert (
        _imds.resolve_endpoint("http://10.0.0.5:81", {ENV: "http://127.0.0.1:8080"}) == "http://10.0.0.5:81"
    )


def test_endpoint_env_var_is_trimmed_and_blank_means_default() -> None:
    assert _imds.resolve_endpoint(None, {ENV: "  http://127.0.0.1:8080  "}) == "http://127.0.0.1:8080"
    assert _imds.resolve_endpoint(None, {ENV: "   "}) == "http://169.254.169.254"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8080/some/path", "http://127.0.0.1:8080"),
        ("https://imds.example:8443/metadata/identity", "https://imds.example:8443"),
    ],
)
def test_endpoint_path_is_discarded(raw: str, expected: str) -> None:
    assert _imds.resolve_endpoint(raw, {}) == expected
    assert _imds.resolve_endpoint(None, {ENV: raw}) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "169.254.169.254",
        "ftp://169.254.169.254",
        "file:///etc/passwd",
        "http://",
        "http://user:secret@127.0.0.1:8080",
        "http://user@127.0.0.1",
        "http://@127.0.0.1",
        "http://127.0.0.1/?x=1",
        "http://127.0.0.1/#frag",
        "http://[::1",
        "http://127.0.0.1:notaport",
        "http://127.0.0.1:99999",
    ],
)
def test_endpoint_with_bad_scheme_userinfo_query_or_port_is_a_configuration_error(raw: str) -> None:
    with pytest.raises(ConfigurationError):
        _imds.resolve_endpoint(raw, {})
    with pytest.raises(ConfigurationError):
        _imds.resolve_endpoint(None, {ENV: raw})


# --- §1.3 / §1.4 / §2.1 / §4.1 requests ----------------------------------------------------------
def _query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True, strict_parsing=True)


def test_metadata_request_is_a_get_of_getplatformmetadata_with_cred_api_version_2() -> None:
    request = _imds.metadata_request("http://169.254.169.254", SYSTEM, CORRELATION_ID)
    parts = urlsplit(request.url)
    assert request.method == "GET"
    assert request.target == "imds"
    assert request.binding is None
    assert (parts.scheme, parts.netloc, parts.path) == (
        "http",
        "169.254.169.254",
        "/metadata/identity/getplatformmetadata",
    )
    assert _query(request.url) == [("cred-api-version", "2.0")]
    assert request.body == b""


def test_metadata_request_carries_metadata_header_and_correlation_id() -> None:
    request = _imds.metadata_request("http://169.254.169.254", SYSTEM, CORRELATION_ID)
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["metadata"] == "true"
    assert headers["x-ms-client-request-id"] == CORRELATION_ID
    assert "content-type" not in headers


@pytest.mark.parametrize(
    ("identity", "wire_name", "value"),
    [
        (ManagedIdentity.user_assigned(client_id=CLIENT_ID), "client_id", CLIENT_ID),
        (ManagedIdentity.user_assigned(object_id="11111111-2222-3333-4444-555555555555"), "object_id", None),
        (ManagedIdentity.user_assigned(resource_id=RESOURCE_ID), "mi_res_id", RESOURCE_ID),
    ],
)
def test_user_assigned_selector_follows_cred_api_version_on_both_imds_calls(
    identity: ManagedIdentity, wire_name: str, value: str | None
) -> None:
    expected_value = value or identity.value
    for request in (
        _imds.metadata_request("http://169.254.169.254", identity, CORRELATION_ID),
        _imds.issue_credential_request("http://169.254.169.254", identity, CORRELATION_ID, CSR, None),
    ):
        assert _query(request.url) == [("cred-api-version", "2.0"), (wire_name, expected_value)]
        assert urlsplit(request.url).query.startswith("cred-api-version=2.0&")


def test_resource_id_selector_is_percent_encoded() -> None:
    identity = ManagedIdentity.user_assigned(resource_id=RESOURCE_ID)
    query = urlsplit(_imds.metadata_request("http://169.254.169.254", identity, CORRELATION_ID).url).query
    assert "mi_res_id=%2Fsubscriptions%2F00000000-0000-0000-0000-000000000000%2Fresourcegroups%2F" in query
    assert "/" not in query


def test_resource_id_selector_uses_mi_res_id_not_msi_res_id() -> None:
    identity = ManagedIdentity.user_assigned(resource_id=RESOURCE_ID)
    names = [name for name, _ in _query(_imds.metadata_request("http://h", identity, CORRELATION_ID).url)]
    assert "msi_res_id" not in names
    assert "mi_res_id" in names


def test_issue_credential_request_posts_json_csr_with_content_type_and_metadata_headers() -> None:
    request = _imds.issue_credential_request("http://169.254.169.254", SYSTEM, CORRELATION_ID, CSR, None)
    parts = urlsplit(request.url)
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert request.method == "POST"
    assert request.target == "imds"
    assert parts.path == "/metadata/identity/issuecredential"
    assert _query(request.url) == [("cred-api-version", "2.0")]
    assert headers["metadata"] == "true"
    assert headers["x-ms-client-request-id"] == CORRELATION_ID
    assert headers["content-type"].split(";")[0] == "application/json"
    assert json.loads(request.body) == {"csr": CSR}


@pytest.mark.parametrize("token", [None, ""])
def test_issue_credential_request_omits_attestation_token_when_not_attested(token: str | None) -> None:
    request = _imds.issue_credential_request("http://169.254.169.254", SYSTEM, CORRELATION_ID, CSR, token)
    assert "attestation_token" not in json.loads(request.body)


def test_issue_credential_request_carries_attestation_token_when_given() -> None:
    maa = make_jwt({"iss": ATTESTATION_ENDPOINT})
    request = _imds.issue_credential_request("http://169.254.169.254", SYSTEM, CORRELATION_ID, CSR, maa)
    assert json.loads(request.body) == {"csr": CSR, "attestation_token": maa}


def test_both_imds_calls_share_the_acquisition_correlation_id() -> None:
    metadata = _imds.metadata_request("http://h", SYSTEM, CORRELATION_ID)
    issue = _imds.issue_credential_request("http://h", SYSTEM, CORRELATION_ID, CSR, None)
    assert metadata.headers["x-ms-client-request-id"] == issue.headers["x-ms-client-request-id"]


def test_imds_requests_do_not_leak_the_csr_in_repr() -> None:
    request = _imds.issue_credential_request("http://h", SYSTEM, CORRELATION_ID, CSR, "eyJsecret-attestation")
    assert CSR not in repr(request)
    assert "eyJsecret-attestation" not in repr(request)


# --- §2.2 Server header and status ---------------------------------------------------------------
@pytest.mark.parametrize("endpoint", [_imds.METADATA, _imds.ISSUE_CREDENTIAL])
@pytest.mark.parametrize("server", ["IMDS/150.870.65.1854", "imds/1.0", "Microsoft-IMDS", "xImDsx"])
def test_server_header_containing_imds_in_any_case_is_accepted(endpoint: str, server: str) -> None:
    _imds.check_response(
        imds_response(200, b"{}", server=server), endpoint=endpoint, correlation_id=CORRELATION_ID
    )


@pytest.mark.parametrize("endpoint", [_imds.METADATA, _imds.ISSUE_CREDENTIAL])
@pytest.mark.parametrize("server", [None, "", "I_MDS/150.870.65.1854", "nginx", "Microsoft-IIS/10.0"])
def test_server_header_without_imds_is_rejected_even_on_200(endpoint: str, server: str | None) -> None:
    with pytest.raises(ImdsError) as caught:
        _imds.check_response(
            imds_response(200, CANNED_METADATA_EXAMPLE, server=server),
            endpoint=endpoint,
            correlation_id=CORRELATION_ID,
        )
    assert caught.value.endpoint == endpoint


@pytest.mark.parametrize("status", [404, 400, 500])
def test_server_header_is_checked_before_the_status(status: int) -> None:
    with pytest.raises(ImdsError) as caught:
        _imds.check_response(
            imds_response(status, b"{}", server="nginx"),
            endpoint=_imds.METADATA,
            correlation_id=CORRELATION_ID,
        )
    assert not isinstance(caught.value, ImdsV2NotSupportedError)
    assert "IMDS" in str(caught.value)


def test_metadata_404_means_imds_v2_is_not_supported() -> None:
    with pytest.raises(ImdsV2NotSupportedError) as caught:
        _imds.check_response(
            imds_response(404, b"Not Found"), endpoint=_imds.METADATA, correlation_id=CORRELATION_ID
        )
    assert caught.value.status == 404
    assert caught.value.correlation_id == CORRELATION_ID


def test_issue_credential_404_is_an_ordinary_imds_error() -> None:
    with pytest.raises(ImdsError) as caught:
        _imds.check_response(
            imds_response(404, b"Not Found"), endpoint=_imds.ISSUE_CREDENTIAL, correlation_id=CORRELATION_ID
        )
    assert not isinstance(caught.value, ImdsV2NotSupportedError)
    assert caught.value.status == 404


@pytest.mark.parametrize("endpoint", [_imds.METADATA, _imds.ISSUE_CREDENTIAL])
@pytest.mark.parametrize("status", [201, 204, 301, 307, 400, 401, 403, 408, 410, 429, 500, 503])
def test_other_statuses_are_imds_errors_carrying_status_endpoint_and_correlation_id(
    endpoint: str, status: int
) -> None:
    with pytest.raises(ImdsError) as caught:
        _imds.check_response(imds_response(status, b"{}"), endpoint=endpoint, correlation_id=CORRELATION_ID)
    assert type(caught.value) is ImdsError
    assert (caught.value.status, caught.value.endpoint, caught.value.correlation_id) == (
        status,
        endpoint,
        CORRELATION_ID,
    )
    assert str(status) in str(caught.value)
    assert CORRELATION_ID in str(caught.value)


def test_issue_credential_error_message_shows_the_reason_but_not_tokens() -> None:
    attestation = make_jwt({"secret": "SENTINEL-ATTESTATION"})
    body = json.dumps(
        {
            "error": "invalid_request",
            "error_description": "Attestation Token is missing / empty in the issue credential request",
            "attestation_token": attestation,
            "echo": attestation,
        }
    )
    with pytest.raises(ImdsError) as caught:
        _imds.check_response(
            imds_response(400, body), endpoint=_imds.ISSUE_CREDENTIAL, correlation_id=CORRELATION_ID
        )
    message = str(caught.value)
    assert "invalid_request" in message
    assert attestation not in message
    assert attestation.split(".")[1] not in message


# --- §2.2 metadata body ----------------------------------------------------------------------------
def test_canned_test_metadata_body_is_parsed() -> None:
    metadata = _imds.parse_metadata(imds_response(200, CANNED_METADATA_TEST))
    assert metadata.client_id == "d3adb33f-c0de-ed0c-c0de-deadb33fc0d3"
    assert metadata.tenant_id == "751a212b-4003-416e-b600-e1f48e40db9f"
    assert metadata.cu_id == CuId(vm_id="fake_vmId", vmss_id=None)
    assert metadata.attestation_endpoint == "https://fake_attestation_endpoint"


def test_canned_example_metadata_body_is_parsed() -> None:
    metadata = _imds.parse_metadata(imds_response(200, CANNED_METADATA_EXAMPLE))
    assert (metadata.client_id, metadata.tenant_id) == (CLIENT_ID, TENANT_ID)
    assert metadata.cu_id == CuId(vm_id=VM_ID)
    assert metadata.attestation_endpoint == ATTESTATION_ENDPOINT


def _metadata(**changes: Any) -> bytes:
    obj: dict[str, Any] = json.loads(CANNED_METADATA_EXAMPLE)
    for name, value in changes.items():
        if value is _DROP:
            del obj[name]
        else:
            obj[name] = value
    return json.dumps(obj).encode()


_DROP = object()


def test_metadata_with_vmss_id_only_or_both_is_accepted() -> None:
    only = _imds.parse_metadata(imds_response(200, _metadata(cuId={"vmssId": "vmss-1"})))
    both = _imds.parse_metadata(imds_response(200, _metadata(cuId={"vmId": "vm-1", "vmssId": "vmss-1"})))
    assert only.cu_id == CuId(vmss_id="vmss-1")
    assert both.cu_id == CuId(vm_id="vm-1", vmss_id="vmss-1")


def test_metadata_cuid_extra_members_are_dropped() -> None:
    metadata = _imds.parse_metadata(imds_response(200, _metadata(cuId={"vmId": "vm-1", "extra": "x"})))
    assert metadata.cu_id == CuId(vm_id="vm-1")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("clientId", _DROP),
        ("clientId", ""),
        ("clientId", None),
        ("clientId", "not-a-guid"),
        ("clientId", "{0f1e2d3c-4b5a-4697-8877-665544332211}"),
        ("clientId", "0f1e2d3c-4b5a-4697-8877-66554433221"),
        ("clientId", "0f1e2d3c-4b5a-4697-8877-665544332211, O=Evil"),
        ("clientId", 42),
        ("tenantId", _DROP),
        ("tenantId", ""),
        ("tenantId", "contoso.onmicrosoft.com"),
        ("tenantId", ["5c4b6f1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b"]),
        ("cuId", _DROP),
        ("cuId", None),
        ("cuId", "9a8b7c6d-5e4f-4a3b-9c2d-1e0f2a3b4c5d"),
        ("cuId", ["vm"]),
        ("cuId", {}),
        ("cuId", {"vmId": "", "vmssId": ""}),
        ("cuId", {"vmId": None}),
        ("cuId", {"vmId": 7}),
        ("attestationEndpoint", _DROP),
        ("attestationEndpoint", ""),
        ("attestationEndpoint", "http://sharedeus2.eus2.attest.azure.net"),
        ("attestationEndpoint", "/attest"),
        ("attestationEndpoint", "sharedeus2.eus2.attest.azure.net"),
        ("attestationEndpoint", "https://"),
        ("attestationEndpoint", "https://[::1"),
        ("attestationEndpoint", "https://attest.example:notaport"),
        ("attestationEndpoint", 443),
    ],
)
def test_invalid_metadata_is_a_malformed_response(field: str, value: Any) -> None:
    with pytest.raises(MalformedResponseError) as caught:
        _imds.parse_metadata(imds_response(200, _metadata(**{field: value})))
    assert caught.value.endpoint == _imds.METADATA
    named = {field, "vmId", "vmssId"} if field == "cuId" else {field}
    assert any(f"'{name}'" in str(caught.value) for name in named)


def test_metadata_field_names_are_case_sensitive() -> None:
    body = CANNED_METADATA_EXAMPLE.replace(b'"clientId"', b'"ClientId"')
    with pytest.raises(MalformedResponseError, match="clientId"):
        _imds.parse_metadata(imds_response(200, body))


# --- §4.2 issuecredential body ---------------------------------------------------------------------
def test_canned_example_issue_credential_body_is_parsed(backend_certificate: bytes) -> None:
    issued = _imds.parse_issued_credential(imds_response(200, issue_body(backend_certificate)))
    assert (issued.client_id, issued.tenant_id) == (CLIENT_ID, TENANT_ID)
    assert issued.certificate_der == backend_certificate
    assert issued.identity_type == "SystemAssigned"
    assert issued.mtls_authentication_endpoint == MTLS_ENDPOINT


def test_canned_test_issue_credential_body_is_parsed(backend_certificate: bytes) -> None:
    issued = _imds.parse_issued_credential(
        imds_response(200, issue_body(backend_certificate, template=CANNED_ISSUE_TEST))
    )
    assert issued.client_id == "d3adb33f-c0de-ed0c-c0de-deadb33fc0d3"
    assert issued.tenant_id == "751a212b-4003-416e-b600-e1f48e40db9f"
    assert issued.identity_type == "fake_identity_type"
    assert issued.certificate_der == backend_certificate
    # the endpoint is vetted later, by the STS allowlist, not here
    assert issued.mtls_authentication_endpoint == "http://fake_mtls_authentication_endpoint"


@pytest.mark.parametrize("template", [CANNED_ISSUE_TEST, CANNED_ISSUE_EXAMPLE])
def test_canned_certificate_placeholders_are_not_strict_base64(template: str) -> None:
    with pytest.raises(MalformedResponseError, match="certificate"):
        _imds.parse_issued_credential(imds_response(200, template))


@pytest.mark.parametrize(
    "field", ["client_id", "tenant_id", "certificate", "identity_type", "mtls_authentication_endpoint"]
)
def test_issue_credential_missing_any_field_is_malformed(backend_certificate: bytes, field: str) -> None:
    obj = json.loads(issue_body(backend_certificate))
    del obj[field]
    with pytest.raises(MalformedResponseError) as caught:
        _imds.parse_issued_credential(imds_response(200, json.dumps(obj)))
    assert field in str(caught.value)
    assert caught.value.endpoint == _imds.ISSUE_CREDENTIAL


@pytest.mark.parametrize(
    "field", ["client_id", "tenant_id", "certificate", "identity_type", "mtls_authentication_endpoint"]
)
def test_issue_credential_empty_or_non_string_field_is_malformed(
    backend_certificate: bytes, field: str
) -> None:
    for value in ("", 5, None, ["x"]):
        obj = json.loads(issue_body(backend_certificate))
        obj[field] = value
        with pytest.raises(MalformedResponseError, match=field):
            _imds.parse_issued_credential(imds_response(200, json.dumps(obj)))


@pytest.mark.parametrize(("field", "value"), [("client_id", "system"), ("tenant_id", "common")])
def test_issue_credential_ids_must_be_guids(backend_certificate: bytes, field: str, value: str) -> None:
    with pytest.raises(MalformedResponseError, match=field):
        _imds.parse_issued_credential(imds_response(200, issue_body(backend_certificate, **{field: value})))


def _pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode("ascii")
    return f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda b64: b64[:40] + " " + b64[40:], id="space"),
        pytest.param(lambda b64: b64[:64] + "\n" + b64[64:], id="newline"),
        pytest.param(lambda b64: b64[:-1], id="truncated"),
        pytest.param(lambda b64: b64.replace("+", "-").replace("/", "_") + "-_", id="urlsafe-alphabet"),
        pytest.param(lambda b64: "Invalid@#$%Certificate!", id="garbage"),
        pytest.param(lambda b64: "@#$%", id="symbols"),
        pytest.param(lambda b64: b64 + "é", id="non-ascii"),
    ],
)
def test_issue_credential_certificate_must_be_strict_base64(backend_certificate: bytes, mangle: Any) -> None:
    obj = json.loads(issue_body(backend_certificate))
    obj["certificate"] = mangle(obj["certificate"])
    with pytest.raises(MalformedResponseError, match="certificate"):
        _imds.parse_issued_credential(imds_response(200, json.dumps(obj)))


def test_issue_credential_certificate_in_pem_armour_is_rejected(backend_certificate: bytes) -> None:
    obj = json.loads(issue_body(backend_certificate))
    obj["certificate"] = _pem(backend_certificate)
    with pytest.raises(MalformedResponseError, match="certificate"):
        _imds.parse_issued_credential(imds_response(200, json.dumps(obj)))
