"""Property-based tests: mutated IMDS and STS bodies never raise anything but the library's typed errors."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msiv2_async import _csr, _der, _imds, _imds_v1, _sts
from msiv2_async._binding import cnf_thumbprint
from msiv2_async._effects import HttpResponse
from msiv2_async._errors import BindingMismatchError, MsiV2Error
from msiv2_async._json import parse_object
from msiv2_async._models import CuId, RsaPublicNumbers

IMDS = {"server": "IMDS/150.870.65.1854"}
METADATA = {
    "cuId": {"vmId": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f2a3b4c5d"},
    "clientId": "0f1e2d3c-4b5a-4697-8877-665544332211",
    "tenantId": "5c4b6f1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b",
    "attestationEndpoint": "https://sharedeus2.eus2.attest.azure.net",
}
ISSUED = {
    "client_id": "0f1e2d3c-4b5a-4697-8877-665544332211",
    "tenant_id": "5c4b6f1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b",
    "certificate": "MIIB",
    "identity_type": "SystemAssigned",
    "mtls_authentication_endpoint": "https://eastus2.mtlsauth.microsoft.com",
}
TOKEN = {"token_type": "mtls_pop", "expires_in": "3599", "access_token": "a.b.c", "refresh_in": 100}
V1 = {"access_token": "a.b.c", "expires_in": "86399", "token_type": "Bearer", "resource": "r"}
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def mutations(document: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """The document with fields dropped, replaced by arbitrary JSON, or the bytes mangled."""
    keys = sorted(document)
    replaced = st.builds(
        lambda key, value: json.dumps({**document, key: value}).encode(), st.sampled_from(keys), json_values
    )
    dropped = st.builds(
        lambda key: json.dumps({k: v for k, v in document.items() if k != key}).encode(),
        st.sampled_from(keys),
    )
    raw = json.dumps(document).encode()
    truncated = st.integers(0, len(raw)).map(lambda n: raw[:n])
    flipped = st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)).map(
        lambda edit: raw[: edit[0]] + bytes([edit[1]]) + raw[edit[0] + 1 :]
    )
    return replaced | dropped | truncated | flipped | st.binary(max_size=200)


def _only_typed_errors(
    parse: Any, body: bytes, headers: dict[str, str] | None = None, status: int = 200
) -> None:
    with contextlib.suppress(MsiV2Error):
        parse(HttpResponse(status, headers or IMDS, body))


@FAST
@given(mutations(METADATA))
def test_mutated_platform_metadata_raises_only_typed_errors(body: bytes) -> None:
    _only_typed_errors(_imds.parse_metadata, body)


@FAST
@given(mutations(ISSUED))
def test_mutated_issuecredential_answers_raise_only_typed_errors(body: bytes) -> None:
    _only_typed_errors(_imds.parse_issued_credential, body)


@FAST
@given(mutations(TOKEN))
def test_mutated_token_answers_raise_only_typed_errors(body: bytes) -> None:
    _only_typed_errors(_sts.parse_token_response, body)


@FAST
@given(mutations(V1))
def test_mutated_v1_answers_raise_only_typed_errors(body: bytes) -> None:
    _only_typed_errors(_imds_v1.parse_token, body)


@FAST
@given(
    st.integers(100, 599),
    mutations({"error": "invalid_client", "error_description": "x", "error_codes": [1]}),
)
def test_any_sts_error_answer_becomes_a_token_request_error(status: int, body: bytes) -> None:
    response = HttpResponse(status, {}, body)
    if status != 200:
        error = _sts.status_error(response, "cid")
        assert isinstance(error, MsiV2Error)
        assert all(isinstance(code, int) for code in error.error_codes)


@FAST
@given(
    st.dictionaries(st.sampled_from(["server", "retry-after", "date"]), st.text(max_size=30)),
    st.integers(100, 599),
)
def test_any_imds_status_and_headers_give_a_typed_error_or_pass(headers: dict[str, str], status: int) -> None:
    try:
        _imds.check_response(
            HttpResponse(status, headers, b"{}"), endpoint=_imds.METADATA, correlation_id="c"
        )
    except MsiV2Error:
        return
    assert status == 200


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_json_raise_only_typed_errors(body: bytes) -> None:
    with contextlib.suppress(MsiV2Error):
        assert isinstance(parse_object(body, endpoint="x"), dict)


@FAST
@given(st.text(max_size=200))
def test_arbitrary_tokens_never_break_the_binding_check(token: str) -> None:
    with contextlib.suppress(BindingMismatchError):
        cnf_thumbprint(token)


@FAST
@given(st.integers(-(2**2100), 2**2100))
def test_der_integers_round_trip_through_python(value: int) -> None:
    encoded = _der.integer(value)
    assert encoded[0] == _der.INTEGER
    length_octets = 1 if encoded[1] < 0x80 else 1 + (encoded[1] & 0x7F)
    content = encoded[1 + length_octets :]
    assert int.from_bytes(content, "big", signed=True) == value
    assert len(content) == 1 or (
        not (content[0] == 0 and content[1] < 0x80) and not (content[0] == 0xFF and content[1] >= 0x80)
    )


@FAST
@given(st.text(min_size=1, max_size=64), st.text(min_size=1, max_size=64), st.text(max_size=40))
def test_csr_request_info_is_well_formed_for_any_ids(client_id: str, tenant_id: str, vm_id: str) -> None:
    key = RsaPublicNumbers(modulus=(1 << 2047) | 12345, exponent=65537)
    info = _csr.request_info(
        client_id=client_id, tenant_id=tenant_id, cu_id=CuId(vm_id=vm_id or "v"), key=key
    )
    assert info[0] == _der.SEQUENCE
    length_octets = 1 if info[1] < 0x80 else 1 + (info[1] & 0x7F)
    declared = int.from_bytes(info[2 : 1 + length_octets], "big") if info[1] >= 0x80 else info[1]
    assert declared == len(info) - 1 - length_octets
