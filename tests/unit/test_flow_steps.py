"""The sans-IO flow of PROTOCOL.md §0, driven one effect at a time with canned answers and no I/O."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from unit_support import (
    ATTESTATION_ENDPOINT,
    CANNED_METADATA_EXAMPLE,
    CANNED_STS_ERROR_1000611,
    CANNED_TOKEN_EXAMPLE,
    CANNED_TOKEN_TEST,
    CLIENT_ID,
    CORRELATION_ID,
    MTLS_ENDPOINT,
    NOW,
    RESOURCE_ID,
    TENANT_ID,
    VM_ID,
    imds_response,
    issue_body,
    make_jwt,
    sts_response,
)

from msiv2_async import _csr, _flow, _imds, _sts
from msiv2_async._effects import Attest, HttpRequest, HttpResponse, OpenKey, Sign
from msiv2_async._errors import (
    BackendError,
    BindingMismatchError,
    CertificateIssuanceError,
    ConfigurationError,
    ImdsError,
    ImdsUnreachableError,
    ImdsV2NotSupportedError,
    MalformedResponseError,
    TokenRequestError,
    UntrustedEndpointError,
)
from msiv2_async._models import CuId, ManagedIdentity, MtlsPopToken, RsaPublicNumbers, x5t_s256
from msiv2_async._retry import NO_RETRY
from msiv2_async.backends.software import SoftwareBackend

IssueCertificate = Callable[..., bytes]
SCOPE = "https://vault.azure.net"
TOKEN_URL = f"{MTLS_ENDPOINT}/{TENANT_ID}/oauth2/v2.0/token"
MAA_TOKEN = make_jwt({"iss": ATTESTATION_ENDPOINT, "x-ms-attestation-type": "keyguard"})

SETTINGS = _flow.FlowSettings(
    imds_endpoint="http://169.254.169.254",
    identity=ManagedIdentity.system_assigned(),
    allowed_token_hosts=_sts.DEFAULT_ALLOWED_TOKEN_HOSTS,
    backend_name="software",
    attestation=False,
    retry=NO_RETRY,
)


def _bound_token(certificate_der: bytes) -> str:
    return make_jwt({"aud": SCOPE, "tid": TENANT_ID, "cnf": {"x5t#S256": x5t_s256(certificate_der)}})


def _form(request: HttpRequest) -> dict[str, str]:
    return dict(parse_qsl(request.body.decode("ascii"), strict_parsing=True))


def _finish(flow: Generator[Any, Any, Any], value: Any) -> Any:
    with pytest.raises(StopIteration) as done:
        flow.send(value)
    return done.value.value


# --- a scripted driver for the failure paths ---------------------------------------------------------
@dataclass
class Script:
    """Answers each effect like a well-behaved IMDS, STS and backend would; tests override single answers."""

    backend: SoftwareBackend
    certificate_for: Callable[[RsaPublicNumbers], bytes]
    metadata: HttpResponse = field(default_factory=lambda: imds_response(200, CANNED_METADATA_EXAMPLE))
    issue: Callable[[bytes], HttpResponse] | None = None
    token: Callable[[bytes], HttpResponse] | None = None
    attestation: str | None = MAA_TOKEN
    effects: list[Any] = field(default_factory=list)

    def run(self, flow: Generator[Any, Any, Any]) -> Any:
        result: Any = None
        certificate = b""
        while True:
            try:
                effect = flow.send(result)
            except StopIteration as done:
                return done.value
            self.effects.append(effect)
            if isinstance(effect, OpenKey):
                result = self.backend.open_key(effect.key_name)
                certificate = self.certificate_for(result)
            elif isinstance(effect, Sign):
                result = self.backend.sign(effect.data)
            elif isinstance(effect, Attest):
                result = self.attestation
            elif effect.endpoint == _imds.METADATA:
                result = self.metadata
            elif effect.endpoint == _imds.ISSUE_CREDENTIAL:
                result = (self.issue or (lambda der: imds_response(200, issue_body(der))))(certificate)
            else:
                result = (
                    self.token or (lambda der: sts_response(200, CANNED_TOKEN_EXAMPLE % _bound_token(der)))
                )(certificate)

    def requests_to(self, target: str) -> list[HttpRequest]:
        return [e for e in self.effects if isinstance(e, HttpRequest) and e.target == target]


@pytest.fixture
def script(software_backend: SoftwareBackend, issue_certificate: IssueCertificate) -> Script:
    def certificate_for(numbers: RsaPublicNumbers) -> bytes:
        """IMDS's part: a certificate for exactly the public numbers the flow put in its CSR."""
        return issue_certificate(rsa.RSAPublicNumbers(numbers.exponent, numbers.modulus).public_key())

    return Script(software_backend, certificate_for)


# --- the happy path, one effect at a time --------------------------------------------------------
def test_flow_yields_metadata_key_sign_issue_and_token_in_order(
    software_backend: SoftwareBackend, issue_certificate: IssueCertificate
) -> None:
    flow = _flow.acquire(SETTINGS, SCOPE, CORRELATION_ID, NOW)

    # 1. GET getplatformmetadata
    metadata_request = next(flow)
    assert isinstance(metadata_request, HttpRequest)
    assert (metadata_request.target, metadata_request.method) == ("imds", "GET")
    assert urlsplit(metadata_request.url).path == "/metadata/identity/getplatformmetadata"
    assert metadata_request.headers["Metadata"] == "true"
    assert metadata_request.headers["x-ms-client-request-id"] == CORRELATION_ID

    # 2. open the per-identity key
    open_key = flow.send(imds_response(200, CANNED_METADATA_EXAMPLE))
    assert open_key == OpenKey(key_name=f"MsiV2AsyncKey_{CLIENT_ID}")
    numbers = software_backend.open_key(open_key.key_name)

    # 3. sign exactly the certificationRequestInfo
    sign = flow.send(numbers)
    assert isinstance(sign, Sign)
    expected_info = _csr.request_info(
        client_id=CLIENT_ID, tenant_id=TENANT_ID, cu_id=CuId(vm_id=VM_ID), key=numbers
    )
    assert sign.data == expected_info
    signature = software_backend.sign(sign.data)

    # 4. POST issuecredential with the CSR (no Attest effect: attestation is off)
    issue_request = flow.send(signature)
    assert isinstance(issue_request, HttpRequest)
    assert (issue_request.target, issue_request.method) == ("imds", "POST")
    assert urlsplit(issue_request.url).path == "/metadata/identity/issuecredential"
    assert issue_request.headers["x-ms-client-request-id"] == CORRELATION_ID
    body = json.loads(issue_request.body)
    assert body == {"csr": _csr.wire_form(_csr.assemble(expected_info, signature))}
    assert x509.load_der_x509_csr(base64.b64decode(body["csr"])).is_signature_valid

    # 5. POST the token request over mTLS with the issued certificate
    public_key = rsa.RSAPublicNumbers(numbers.exponent, numbers.modulus).public_key()
    certificate = issue_certificate(public_key)
    token_request = flow.send(imds_response(200, issue_body(certificate)))
    assert isinstance(token_request, HttpRequest)
    assert (token_request.target, token_request.method) == ("sts", "POST")
    assert token_request.url == TOKEN_URL
    assert token_request.binding is not None
    assert token_request.binding.certificate.der == certificate
    assert token_request.binding.client_id == CLIENT_ID
    assert token_request.binding.attested is False
    assert _form(token_request) == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "scope": "https://vault.azure.net/.default",
        "token_type": "mtls_pop",
    }

    # 6. the result
    access_token = _bound_token(certificate)
    token = _finish(flow, sts_response(200, CANNED_TOKEN_EXAMPLE % access_token))
    assert isinstance(token, MtlsPopToken)
    assert token.access_token == access_token
    assert token.token_type == "mtls_pop"
    assert token.authorization_header() == f"mtls_pop {access_token}"
    assert token.scope == "https://vault.azure.net/.default"
    assert token.correlation_id == CORRELATION_ID
    assert token.binding_certificate.der == certificate
    assert token.binding_certificate.thumbprint_sha256 == x5t_s256(certificate)
    assert token.binding_certificate.backend == "software"


def test_flow_token_expiry_is_now_plus_expires_in_and_refresh_is_now_plus_refresh_in(script: Script) -> None:
    token = script.run(_flow.acquire(SETTINGS, SCOPE, CORRELATION_ID, NOW))
    assert token.expires_on == int((NOW + timedelta(seconds=86399)).timestamp())
    assert token.refresh_on == int((NOW + timedelta(seconds=43199)).timestamp())


def test_flow_accepts_string_expires_in_and_refreshes_five_minutes_before_a_short_expiry(
    script: Script,
) -> None:
    settings = replace(SETTINGS, verify_binding=False)  # the §6.2 canned token is not a JWT
    script.token = lambda der: sts_response(200, CANNED_TOKEN_TEST)
    token = script.run(_flow.acquire(settings, SCOPE, CORRELATION_ID, NOW))
    assert token.access_token == "some-access-token"
    assert token.expires_on == int(NOW.timestamp()) + 3599
    assert token.refresh_on == token.expires_on - 300


@pytest.mark.parametrize(
    ("expires_in", "refresh_in", "delay"),
    [
        (86399, 43199, 43199),  # the STS's refresh_in wins (§8.1)
        (3599, 7200, 3599),  # but never after expiry
        (86400, None, 43200),  # long lifetimes: half-life
        (7200, None, 3600),
        (3599, None, 3299),  # short lifetimes: five minutes before expiry
        (120, None, 0),  # never negative
    ],
)
def test_refresh_delay_prefers_refresh_in_then_half_life_then_five_minutes_early(
    expires_in: int, refresh_in: int | None, delay: int
) -> None:
    assert _flow.refresh_delay(expires_in, refresh_in) == delay


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("https://vault.azure.net", "https://vault.azure.net/.default"),
        ("https://vault.azure.net/", "https://vault.azure.net/.default"),
        ("https://graph.microsoft.com/.default", "https://graph.microsoft.com/.default"),
    ],
)
def test_flow_sends_and_returns_the_normalized_scope(script: Script, scope: str, expected: str) -> None:
    token = script.run(_flow.acquire(SETTINGS, scope, CORRELATION_ID, NOW))
    assert token.scope == expected
    assert _form(script.requests_to("sts")[0])["scope"] == expected


def test_flow_rejects_a_bad_scope_before_any_effect() -> None:
    flow = _flow.acquire(SETTINGS, "https://a https://b", CORRELATION_ID, NOW)
    with pytest.raises(ConfigurationError):
        next(flow)


def test_flow_passes_claims_to_the_token_request_only(script: Script) -> None:
    claims = '{"access_token":{"xms_cc":{"values":["cp1"]}}}'
    script.run(_flow.acquire(SETTINGS, SCOPE, CORRELATION_ID, NOW, claims))
    assert _form(script.requests_to("sts")[0])["claims"] == claims
    assert all(b"claims" not in r.body and "claims" not in r.url for r in script.requests_to("imds"))


def test_flow_uses_the_user_assigned_selector_on_both_imds_calls_and_canonical_client_id_at_sts(
    script: Script,
) -> None:
    settings = replace(SETTINGS, identity=ManagedIdentity.user_assigned(resource_id=RESOURCE_ID))
    script.run(_flow.acquire(settings, SCOPE, CORRELATION_ID, NOW))
    for request in script.requests_to("imds"):
        query = parse_qsl(urlsplit(request.url).query)
        assert query == [("cred-api-version", "2.0"), ("mi_res_id", RESOURCE_ID)]
    assert _form(script.requests_to("sts")[0])["client_id"] == CLIENT_ID


def test_flow_key_name_replaces_unsafe_characters_and_is_bounded() -> None:
    assert _flow.key_name(CLIENT_ID) == f"MsiV2AsyncKey_{CLIENT_ID}"
    assert _flow.key_name("a/b\\c d") == "MsiV2AsyncKey_a_b_c_d"
    assert len(_flow.key_name("x" * 500)) == 90


def test_every_request_of_one_acquisition_carries_the_same_correlation_id(script: Script) -> None:
    script.run(_flow.acquire(SETTINGS, SCOPE, CORRELATION_ID, NOW))
    imds = [r.headers["x-ms-client-request-id"] for r in script.requests_to("imds")]
    sts = [r.headers["client-request-id"] for r in script.requests_to("sts")]
    assert imds + sts == [CORRELATION_ID] * 3


# --- attestation ---------------------------------------------------------------------------------
def test_flow_attests_between_sign_and_issuecredential_when_asked(script: Script) -> None:
    settings = replace(SETTINGS, attestation=True)
    token = script.run(_flow.acquire(settings, SCOPE, CORRELATION_ID, NOW))
    kinds = [type(e).__name__ if not isinstance(e, HttpRequest) else e.endpoint for e in script.effects]
    assert kinds == ["getplatformmetadata", "OpenKey", "Sign", "Attest", "issuecredential", "token"]
    attest = script.effects[3]
    assert attest == Attest(endpoint=ATTESTATION_ENDPOINT, client_id=CLIENT_ID)
    issue = script.requests_to("imds")[1]
    assert json.loads(issue.body)["attestation_token"] == MAA_TOKEN
    assert script.requests_to("sts")[0].binding is not None
    assert script.requests_to("sts")[0].binding.attested is True
    assert token.token_type == "mtls_pop"


def test_flow_without_attestation_yields_no_attest_effect(script: Script) -> None:
    script.run(_flow.acquire(SETTINGS, SCOPE, CORRELATION_ID, NOW))
    assert not any(isinstance(e, Attest) for e in script.effects)
    assert "attestation_token" not in json.loads(script.requests_to("imds")[1].body)


@pytest.mark.parametrize("attestation", [None, ""])
def test_flow_refuses_an_unattested_certificate_when_attestation_was_asked(
    script: Script, attestation: str | None
) -> None:
    script.attestation = attestation
    with pytest.raises(BackendError):
        script.run(_flow.acquire(replace(SETTINGS, attestation=True), SCOPE, CORRELATION_ID, NOW))
    assert [e.endpoint for e in script.requests_to("imds")] == ["getplatformmetadata"]
    assert script.requests_to("sts") == []


# --- failures stop the flow before anything is sent onwards --------------------------------------
def test_flow_rejects_a_certificate_for_another_key_before_any_token_request(
    script: Script, issue_certificate: IssueCertificate, other_private_key: rsa.RSAPrivateKey
) -> None:
    foreign = issue_certificate(other_private_key.public_key())
    script.issue = lambda der: imds_response(200, issue_body(foreign))
    with pytest.raises(CertificateIssuanceError):
        script.run(_flow.acquire(SETTINGS, SCOPE, CORRELATION_ID, NOW))
    assert script.requests_to("sts") == []


def test_flow_rejects_an_expired_certificate_before_any_token_request(
    script: Script, issue_certificate: IssueCertificate, backend_public_key: rsa.RSAPublicKey
) -> None:
    expired = issue_certificate(
        backend_public_key, not_before=NOW - timedelta(days=8), not_after=NOW - timedelta(days=1)
    )
    script.issue = lambda der: imds_response(200, issue_body(expired))
    with pytest.raises(CertificateIssuanceError):
        script.run(_flow.acquire(SETTINGS, SCOPE, CORRELATION_ID, NOW))
    assert script.requests_to("sts") == []


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://evil.example.com",
        "http://eastus2.mtlsauth.microsoft.com",
        "http://fake_mtls_authentication_endpoint",
        "https://eastus2.mtlsauth.microsoft.com:8443",
        "https://eastus2.mtlsauth.microsoft.com:bad",
    ],
)
def test_flow_refuses_a_disallowed_token_host_before_any_token_request(script: Script, endpoint: str) -> None:
    script.issue = lambda der: imds_response(200, issue_body(der, mtls_authentication_endpoint=endpoint))
    with pytest.raises(UntrustedEndpointError):
        script.run(_flow.acquire(SETTINGS, SCOPE, CORRELATION_ID, NOW))
    assert script.requests_to("sts") == []


def test_flow_sends_to_a_host_added_to_the_allowlist(script: Script) -> None:
    settings = replace(SETTINGS, allowed_token_hosts=_sts.allowed_token_hosts(["127.0.0.1:*"], {}))
    script.issue = lambda der: imds_response(
        200, issue_body(der, mtls_authentication_endpoint="https://127.0.0.1:8443")
    )
    script.run(_flow.acquire(settings, SCOPE, CORRELATION_ID, NOW))
    assert script.requests_to("sts")[0].url == f"https://127.0.0.1:8443/{TENANT_ID}/oauth2/v2.0/token"


def test_flow_rejects_a_token_bound_to_another_certificate(script: Script) -> None:
    script.token = lambda der: sts_response(
        200, CANNED_TOKEN_EXAMPLE % _bound_token(b"some other certificate")
    )
    with pytest.raises(BindingMismatchError):
        script.run(_flow.acquire(SETTINGS, SCOPE, CORRELATION_ID, NOW))


def test_flow_rejects_an_unbound_token_when_verifying(script: Script) -> None:
    script.token = lambda der: sts_response(200, CANNED_TOKEN_TEST)
    with pytest.raises(BindingMismatchError):
        script.run(_flow.acquire(SETTINGS, SCOPE, CORRELATION_ID, NOW))


def test_flow_skips_the_binding_check_when_verify_binding_is_false(script: Script) -> None:
    mismatched = _bound_token(b"some other certificate")
    script.token = lambda der: sts_response(200, CANNED_TOKEN_EXAMPLE % mismatched)
    token = script.run(_flow.acquire(replace(SETTINGS, verify_binding=False), SCOPE, CORRELATION_ID, NOW))
    assert token.access_token == mismatched


def test_flow_stops_at_metadata_404_with_imds_v2_not_supported(script: Script) -> None:
    script.metadata = imds_response(404, b"Not Found")
    with pytest.raises(ImdsV2NotSupportedError):
        script.run(_flow.acquire(SETTINGS, SCOPE, CORRELATION_ID, NOW))
    assert len(script.effects) == 1


def test_flow_stops_at_malformed_metadata_before_touching_the_key(script: Script) -> None:
    script.metadata = imds_response(200, b'{"clientId": "x"}')
    with pytest.raises(MalformedResponseError):
        script.run(_flow.acquire(SETTINGS, SCOPE, CORRELATION_ID, NOW))
    assert not any(isinstance(e, (OpenKey, Sign)) for e in script.effects)


def test_flow_rejects_an_issuecredential_answer_not_from_imds(script: Script) -> None:
    script.issue = lambda der: imds_response(200, issue_body(der), server="nginx")
    with pytest.raises(ImdsError):
        script.run(_flow.acquire(SETTINGS, SCOPE, CORRELATION_ID, NOW))
    assert script.requests_to("sts") == []


def test_flow_maps_an_sts_refusal_to_token_request_error(script: Script) -> None:
    script.token = lambda der: sts_response(401, CANNED_STS_ERROR_1000611)
    with pytest.raises(TokenRequestError) as caught:
        script.run(_flow.acquire(SETTINGS, SCOPE, CORRELATION_ID, NOW))
    assert caught.value.error_codes == (1000611,)
    assert caught.value.correlation_id == CORRELATION_ID


def test_flow_rejects_a_token_of_the_wrong_type(script: Script) -> None:
    script.token = lambda der: sts_response(200, CANNED_TOKEN_TEST.replace(b'"mtls_pop"', b'"Bearer"'))
    with pytest.raises(MalformedResponseError):
        script.run(_flow.acquire(SETTINGS, SCOPE, CORRELATION_ID, NOW))


# --- errors thrown in by the driver ----------------------------------------------------------------
def test_an_error_thrown_into_the_flow_at_metadata_propagates_unchanged() -> None:
    flow = _flow.acquire(SETTINGS, SCOPE, CORRELATION_ID, NOW)
    next(flow)
    error = ImdsUnreachableError("no answer from IMDS", endpoint=_imds.METADATA)
    with pytest.raises(ImdsUnreachableError) as caught:
        flow.throw(error)
    assert caught.value is error


def test_an_error_thrown_into_the_flow_at_sign_propagates_and_ends_the_flow(
    software_backend: SoftwareBackend,
) -> None:
    flow = _flow.acquire(SETTINGS, SCOPE, CORRELATION_ID, NOW)
    next(flow)
    open_key = flow.send(imds_response(200, CANNED_METADATA_EXAMPLE))
    assert isinstance(flow.send(software_backend.open_key(open_key.key_name)), Sign)
    error = BackendError("the key went away")
    with pytest.raises(BackendError) as caught:
        flow.throw(error)
    assert caught.value is error
    with pytest.raises(StopIteration):
        next(flow)
