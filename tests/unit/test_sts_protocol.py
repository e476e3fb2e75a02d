"""The mTLS token request: PROTOCOL.md §4.3 (endpoint), §6 (request, response), RELIABILITY.md §4."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from unit_support import (
    CANNED_STS_ERROR_392200,
    CANNED_STS_ERROR_1000611,
    CANNED_TOKEN_EXAMPLE,
    CANNED_TOKEN_TEST,
    CLIENT_ID,
    CORRELATION_ID,
    MTLS_ENDPOINT,
    NOW,
    TENANT_ID,
    make_jwt,
    sts_response,
)

from msiv2_async import _sts
from msiv2_async._errors import (
    ConfigurationError,
    MalformedResponseError,
    TokenRequestError,
    UntrustedEndpointError,
)
from msiv2_async._models import Binding, BindingCertificate

DEFAULT_HOSTS = _sts.allowed_token_hosts(None, {})
ENV = "MSIV2_ASYNC_ALLOWED_TOKEN_HOSTS"
SENTINEL_TOKEN = make_jwt({"sentinel": "SENTINEL-ACCESS-TOKEN-7f3a"})


# --- §4.3 token endpoint and the allowlist ---------------------------------------------------------
def test_token_endpoint_is_mtls_endpoint_slash_tenant_slash_oauth2_v2_token() -> None:
    assert _sts.token_endpoint(MTLS_ENDPOINT, TENANT_ID, DEFAULT_HOSTS) == (
        f"https://eastus2.mtlsauth.microsoft.com/{TENANT_ID}/oauth2/v2.0/token"
    )


def test_token_endpoint_trailing_slash_is_not_doubled() -> None:
    assert _sts.token_endpoint(MTLS_ENDPOINT + "/", TENANT_ID, DEFAULT_HOSTS) == (
        f"{MTLS_ENDPOINT}/{TENANT_ID}/oauth2/v2.0/token"
    )


def test_default_allowlist_is_mtlsauth_microsoft_com_subdomains() -> None:
    assert DEFAULT_HOSTS == ("*.mtlsauth.microsoft.com",)
    for host in (
        "westeurope.mtlsauth.microsoft.com",
        "a.b.mtlsauth.microsoft.com",
        "EASTUS2.MTLSAUTH.Microsoft.COM",
    ):
        assert _sts.token_endpoint(f"https://{host}", TENANT_ID, DEFAULT_HOSTS).endswith("/oauth2/v2.0/token")


def test_default_allowlist_allows_only_port_443() -> None:
    assert _sts.token_endpoint(f"{MTLS_ENDPOINT}:443", TENANT_ID, DEFAULT_HOSTS)
    with pytest.raises(UntrustedEndpointError):
        _sts.token_endpoint(f"{MTLS_ENDPOINT}:8443", TENANT_ID, DEFAULT_HOSTS)


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://eastus2.mtlsauth.microsoft.com",
        "http://fake_mtls_authentication_endpoint",  # the PROTOCOL.md §4.2 canned value
        "ftp://eastus2.mtlsauth.microsoft.com",
        "eastus2.mtlsauth.microsoft.com",
        "https://",
        "https://user:pw@eastus2.mtlsauth.microsoft.com",
        "https://user@eastus2.mtlsauth.microsoft.com",
        "https://@eastus2.mtlsauth.microsoft.com",
        "https://eastus2.mtlsauth.microsoft.com?x=1",
        "https://eastus2.mtlsauth.microsoft.com/#f",
        "https://mtlsauth.microsoft.com",
        "https://evilmtlsauth.microsoft.com",
        "https://eastus2.mtlsauth.microsoft.com.evil.example",
        "https://login.microsoftonline.com",
        "https://127.0.0.1",
        "https://[::1",
        "https://eastus2.mtlsauth.microsoft.com:notaport",
        "https://eastus2.mtlsauth.microsoft.com:99999",
    ],
)
def test_token_endpoint_outside_https_allowlist_is_untrusted(endpoint: str) -> None:
    with pytest.raises(UntrustedEndpointError):
        _sts.token_endpoint(endpoint, TENANT_ID, DEFAULT_HOSTS)


@pytest.mark.parametrize(
    "tenant", ["common", "organizations", "../5c4b6f1e", "5c4b6f1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b/x", "", "?x=1"]
)
def test_token_endpoint_tenant_must_be_a_guid(tenant: str) -> None:
    with pytest.raises(UntrustedEndpointError):
        _sts.token_endpoint(MTLS_ENDPOINT, tenant, DEFAULT_HOSTS)


def test_allowlist_host_star_pattern_allows_any_port() -> None:
    hosts = _sts.allowed_token_hosts(["127.0.0.1:*"], {})
    assert _sts.token_endpoint("https://127.0.0.1:8443", TENANT_ID, hosts) == (
        f"https://127.0.0.1:8443/{TENANT_ID}/oauth2/v2.0/token"
    )
    assert _sts.token_endpoint("https://127.0.0.1", TENANT_ID, hosts)


def test_allowlist_host_port_pattern_allows_only_that_port() -> None:
    hosts = _sts.allowed_token_hosts(["sts.test:8443"], {})
    assert _sts.token_endpoint("https://sts.test:8443", TENANT_ID, hosts)
    for other in ("https://sts.test", "https://sts.test:9443"):
        with pytest.raises(UntrustedEndpointError):
            _sts.token_endpoint(other, TENANT_ID, hosts)


def test_allowlist_plain_host_pattern_means_port_443() -> None:
    hosts = _sts.allowed_token_hosts(["sts.test"], {})
    assert _sts.token_endpoint("https://sts.test", TENANT_ID, hosts)
    with pytest.raises(UntrustedEndpointError):
        _sts.token_endpoint("https://sts.test:8443", TENANT_ID, hosts)


def test_allowlist_is_extended_by_env_var_comma_separated() -> None:
    hosts = _sts.allowed_token_hosts(None, {ENV: " 127.0.0.1:* , sts.test:8443,,"})
    assert hosts == ("*.mtlsauth.microsoft.com", "127.0.0.1:*", "sts.test:8443")
    assert _sts.token_endpoint("https://127.0.0.1:1234", TENANT_ID, hosts)
    with pytest.raises(UntrustedEndpointError):
        _sts.token_endpoint("https://127.0.0.1:1234", TENANT_ID, DEFAULT_HOSTS)


def test_allowlist_keeps_default_and_combines_argument_and_env() -> None:
    hosts = _sts.allowed_token_hosts(["A.Example"], {ENV: "b.example"})
    assert hosts == ("*.mtlsauth.microsoft.com", "a.example", "b.example")


@pytest.mark.parametrize("pattern", ["https://sts.test", "sts.test/path", "user@sts.test"])
def test_allowlist_pattern_must_be_host_or_host_port(pattern: str) -> None:
    with pytest.raises(ConfigurationError):
        _sts.allowed_token_hosts([pattern], {})
    with pytest.raises(ConfigurationError):
        _sts.allowed_token_hosts(None, {ENV: pattern})


# --- §6.1 scope --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("https://vault.azure.net", "https://vault.azure.net/.default"),
        ("https://vault.azure.net/", "https://vault.azure.net/.default"),
        ("https://vault.azure.net/.default", "https://vault.azure.net/.default"),
        ("https://management.azure.com/", "https://management.azure.com/.default"),
        ("api://0f1e2d3c-4b5a-4697-8877-665544332211", "api://0f1e2d3c-4b5a-4697-8877-665544332211/.default"),
        ("  https://vault.azure.net  ", "https://vault.azure.net/.default"),
    ],
)
def test_scope_is_normalized_to_resource_slash_default(scope: str, expected: str) -> None:
    assert _sts.normalize_scope(scope) == expected


@pytest.mark.parametrize(
    "scope", ["", "   ", "https://vault.azure.net https://graph.microsoft.com", "https://a\t.default", "a\nb"]
)
def test_scope_with_whitespace_or_empty_is_a_configuration_error(scope: str) -> None:
    with pytest.raises(ConfigurationError):
        _sts.normalize_scope(scope)


# --- §6.1 request ------------------------------------------------------------------------------------
@pytest.fixture
def binding() -> Binding:
    certificate = BindingCertificate(
        der=b"certificate-der",
        thumbprint_sha256="A" * 43,
        not_before=NOW - timedelta(hours=1),
        not_after=NOW + timedelta(days=7),
        backend="software",
    )
    return Binding(
        certificate=certificate,
        client_id=CLIENT_ID,
        tenant_id=TENANT_ID,
        token_endpoint=f"{MTLS_ENDPOINT}/{TENANT_ID}/oauth2/v2.0/token",
        attested=False,
    )


def _form(body: bytes) -> dict[str, str]:
    pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    assert len(pairs) == len(dict(pairs)), "a form field appears twice"
    return dict(pairs)


def test_token_request_is_client_credentials_with_token_type_mtls_pop(binding: Binding) -> None:
    request = _sts.token_request(binding, "https://vault.azure.net/.default", CORRELATION_ID)
    assert request.method == "POST"
    assert request.target == "sts"
    assert request.url == binding.token_endpoint
    assert _form(request.body) == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "scope": "https://vault.azure.net/.default",
        "token_type": "mtls_pop",
    }


def test_token_request_scope_is_percent_encoded_in_the_form(binding: Binding) -> None:
    body = _sts.token_request(binding, "https://vault.azure.net/.default", CORRELATION_ID).body
    assert b"scope=https%3A%2F%2Fvault.azure.net%2F.default" in body


def test_token_request_client_id_comes_from_the_binding(binding: Binding) -> None:
    canonical = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
    other = Binding(
        certificate=binding.certificate,
        client_id=canonical,
        tenant_id=binding.tenant_id,
        token_endpoint=binding.token_endpoint,
        attested=False,
    )
    assert _form(_sts.token_request(other, "s/.default", CORRELATION_ID).body)["client_id"] == canonical


def test_token_request_is_sent_with_the_binding_certificate(binding: Binding) -> None:
    request = _sts.token_request(binding, "s/.default", CORRELATION_ID)
    assert request.binding is binding


def test_token_request_carries_claims_only_when_given(binding: Binding) -> None:
    claims = json.dumps({"access_token": {"xms_cc": {"values": ["cp1"]}}})
    assert "claims" not in _form(_sts.token_request(binding, "s/.default", CORRELATION_ID).body)
    assert "claims" not in _form(_sts.token_request(binding, "s/.default", CORRELATION_ID, "").body)
    assert _form(_sts.token_request(binding, "s/.default", CORRELATION_ID, claims).body)["claims"] == claims


def test_token_request_has_no_client_secret_or_assertion(binding: Binding) -> None:
    form = _form(_sts.token_request(binding, "s/.default", CORRELATION_ID).body)
    assert not {"client_secret", "client_assertion", "client_assertion_type", "req_cnf"} & set(form)


def test_token_request_headers_are_form_content_type_json_accept_and_correlation_id(binding: Binding) -> None:
    request = _sts.token_request(binding, "s/.default", CORRELATION_ID)
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert headers["accept"] == "application/json"
    assert headers["client-request-id"] == CORRELATION_ID
    assert headers["return-client-request-id"] == "true"
    assert "metadata" not in headers


def test_token_request_goes_to_the_derived_endpoint(binding: Binding) -> None:
    parts = urlsplit(_sts.token_request(binding, "s/.default", CORRELATION_ID).url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "eastus2.mtlsauth.microsoft.com",
        f"/{TENANT_ID}/oauth2/v2.0/token",
    )


# --- §6.2 response -------------------------------------------------------------------------------
def test_canned_test_token_body_with_string_expires_in_is_parsed() -> None:
    token = _sts.parse_token_response(sts_response(200, CANNED_TOKEN_TEST))
    assert token.access_token == "some-access-token"
    assert token.token_type == "mtls_pop"
    assert token.expires_in == 3599
    assert token.refresh_in is None
    assert token.ext_expires_in is None


def test_canned_example_token_body_is_parsed_with_refresh_and_ext_expiry() -> None:
    token = _sts.parse_token_response(sts_response(200, CANNED_TOKEN_EXAMPLE % SENTINEL_TOKEN))
    assert token.access_token == SENTINEL_TOKEN
    assert (token.expires_in, token.ext_expires_in, token.refresh_in) == (86399, 86399, 43199)


def test_token_type_is_compared_case_insensitively() -> None:
    body = CANNED_TOKEN_TEST.replace(b'"mtls_pop"', b'"MTLS_POP"')
    assert _sts.parse_token_response(sts_response(200, body)).token_type == "mtls_pop"


def _token_body(**changes: Any) -> bytes:
    obj: dict[str, Any] = json.loads(CANNED_TOKEN_EXAMPLE % SENTINEL_TOKEN)
    for name, value in changes.items():
        if value is None:
            del obj[name]
        else:
            obj[name] = value
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"token_type": "Bearer"}, "token_type"),
        ({"token_type": "pop"}, "token_type"),
        ({"token_type": None}, "token_type"),
        ({"token_type": ""}, "token_type"),
        ({"access_token": None}, "access_token"),
        ({"access_token": ""}, "access_token"),
        ({"access_token": 12345}, "access_token"),
        ({"expires_in": None}, "expires_in"),
        ({"expires_in": 3599.5}, "expires_in"),
        ({"expires_in": True}, "expires_in"),
        ({"expires_in": -1}, "expires_in"),
        ({"expires_in": "soon"}, "expires_in"),
        ({"refresh_in": "later"}, "refresh_in"),
        ({"ext_expires_in": -5}, "ext_expires_in"),
    ],
)
def test_invalid_token_response_is_malformed_and_names_the_field(changes: dict[str, Any], named: str) -> None:
    with pytest.raises(MalformedResponseError) as caught:
        _sts.parse_token_response(sts_response(200, _token_body(**changes)))
    assert named in str(caught.value)
    assert SENTINEL_TOKEN not in str(caught.value)
    assert caught.value.endpoint == "token"


def test_token_type_mismatch_message_does_not_echo_the_token() -> None:
    body = _token_body(token_type=SENTINEL_TOKEN)
    with pytest.raises(MalformedResponseError) as caught:
        _sts.parse_token_response(sts_response(200, body))
    assert SENTINEL_TOKEN not in str(caught.value)
    assert SENTINEL_TOKEN.split(".")[1] not in str(caught.value)


# --- §9 error mapping --------------------------------------------------------------------------------
def _token_error(status: int, body: bytes | str) -> TokenRequestError:
    with pytest.raises(TokenRequestError) as caught:
        _sts.raise_for_error(sts_response(status, body), CORRELATION_ID)
    return caught.value


def test_a_200_answer_is_not_an_error() -> None:
    _sts.raise_for_error(sts_response(200, CANNED_TOKEN_TEST), CORRELATION_ID)


def test_sts_error_carries_error_codes_status_and_correlation_id() -> None:
    error = _token_error(401, CANNED_STS_ERROR_1000611)
    assert error.status == 401
    assert error.error == "invalid_client"
    assert error.error_codes == (1000611,)
    assert error.correlation_id == CORRELATION_ID
    assert "invalid_client" in str(error)
    assert "AADSTS1000611" in str(error)
    assert CORRELATION_ID in str(error)


def test_aadsts392200_gets_a_missing_client_certificate_hint() -> None:
    with_code = _token_error(400, CANNED_STS_ERROR_392200)
    without_code = _token_error(400, CANNED_STS_ERROR_392200.replace(b"[392200]", b"[]"))
    assert with_code.error_codes == (392200,)
    assert with_code.error == "invalid_request"
    assert "proxy" in str(with_code).lower()
    assert "proxy" not in str(without_code).lower()


@pytest.mark.parametrize(
    "body", [b"", b"<html><body>502 Bad Gateway</body></html>", b"[1,2]", b'{"error": 5}', b"\xff\xfe"]
)
def test_sts_error_without_an_oauth_body_still_maps_to_token_request_error(body: bytes) -> None:
    error = _token_error(502, body)
    assert error.status == 502
    assert error.error is None
    assert error.error_codes == ()


@pytest.mark.parametrize("codes", ['["392200"]', "[true]", '"392200"', "[1.5]", "{}"])
def test_error_codes_of_the_wrong_type_are_ignored(codes: str) -> None:
    body = '{"error":"invalid_client","error_codes":' + codes + "}"
    assert _token_error(401, body).error_codes == ()


def test_sts_error_message_never_contains_the_access_token_or_jwts() -> None:
    body = json.dumps(
        {
            "error": "invalid_client",
            "error_description": f"AADSTS700027: bad token {SENTINEL_TOKEN} mtls_pop SENTINELPOPTOKEN123456",
            "error_codes": [700027],
        }
    )
    error = _token_error(401, body)
    for text in (str(error), repr(error), *map(str, error.args)):
        assert SENTINEL_TOKEN not in text
        assert SENTINEL_TOKEN.split(".")[1] not in text
        assert "SENTINELPOPTOKEN123456" not in text
    assert "AADSTS700027" in str(error)


def test_sts_error_without_description_does_not_echo_access_token_field() -> None:
    body = json.dumps({"access_token": "SENTINEL-OPAQUE-ACCESS-TOKEN", "token_type": "mtls_pop"})
    error = _token_error(500, body)
    assert "SENTINEL-OPAQUE-ACCESS-TOKEN" not in str(error)
    assert "500" in str(error)


def test_sts_error_message_is_bounded() -> None:
    body = json.dumps({"error": "server_error", "error_description": "AADSTS50000: " + "x" * 100_000})
    assert len(str(_token_error(500, body))) < 600
