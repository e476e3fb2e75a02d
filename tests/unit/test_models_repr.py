"""Value types: secrets never in repr, the Authorization header (§10), identity selection (§1.3)."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from cryptography import x509
from unit_support import CLIENT_ID, CORRELATION_ID, NOW, RESOURCE_ID, TENANT_ID

from msiv2_async._effects import HttpRequest, Sign
from msiv2_async._errors import ConfigurationError
from msiv2_async._models import (
    Binding,
    BindingCertificate,
    IssuedCredential,
    ManagedIdentity,
    MtlsPopToken,
    TokenResponse,
)

SENTINEL_TOKEN = "eyJSENTINEL.ACCESS.TOKEN-do-not-print"
SENTINEL_DER = b"SENTINEL-CERTIFICATE-DER-BYTES"


def _forms(data: bytes) -> list[str]:
    return [repr(data), data.hex(), base64.b64encode(data).decode(), data.decode("latin-1")]


def _certificate() -> BindingCertificate:
    return BindingCertificate(
        der=SENTINEL_DER,
        thumbprint_sha256="T" * 43,
        not_before=NOW,
        not_after=NOW + timedelta(days=7),
        backend="software",
    )


def _token() -> MtlsPopToken:
    return MtlsPopToken(
        access_token=SENTINEL_TOKEN,
        token_type="mtls_pop",
        expires_on=2_000_000_000,
        refresh_on=None,
        scope="https://vault.azure.net/.default",
        binding_certificate=_certificate(),
        correlation_id=CORRELATION_ID,
    )


def test_mtls_pop_token_repr_never_contains_the_token_or_certificate_bytes() -> None:
    text = repr(_token())
    assert SENTINEL_TOKEN not in text
    assert "SENTINEL" not in text
    assert "T" * 43 in text  # the thumbprint is not secret and helps debugging


def test_mtls_pop_token_str_never_contains_the_token() -> None:
    assert "SENTINEL" not in str(_token())
    assert "SENTINEL" not in f"{_token()}"


def test_issued_credential_repr_never_contains_certificate_bytes() -> None:
    issued = IssuedCredential(
        client_id=CLIENT_ID,
        tenant_id=TENANT_ID,
        certificate_der=SENTINEL_DER,
        identity_type="SystemAssigned",
        mtls_authentication_endpoint="https://eastus2.mtlsauth.microsoft.com",
    )
    text = repr(issued)
    for form in _forms(SENTINEL_DER):
        assert form not in text
    assert CLIENT_ID in text


def test_token_response_repr_never_contains_the_access_token() -> None:
    text = repr(TokenResponse(access_token=SENTINEL_TOKEN, token_type="mtls_pop", expires_in=3599))
    assert "SENTINEL" not in text
    assert "3599" in text


def test_binding_and_certificate_repr_never_contain_certificate_bytes() -> None:
    binding = Binding(
        certificate=_certificate(),
        client_id=CLIENT_ID,
        tenant_id=TENANT_ID,
        token_endpoint="https://eastus2.mtlsauth.microsoft.com/t/oauth2/v2.0/token",
        attested=False,
    )
    assert "SENTINEL" not in repr(binding)
    assert "SENTINEL" not in repr(binding.certificate)


def test_effects_repr_never_contain_request_bodies_or_signed_data() -> None:
    request = HttpRequest(
        target="imds",
        endpoint="issuecredential",
        method="POST",
        url="http://h",
        headers={},
        body=SENTINEL_DER,
    )
    assert "SENTINEL" not in repr(request)
    assert "SENTINEL" not in repr(Sign(SENTINEL_DER))


def test_authorization_header_is_mtls_pop_space_token() -> None:
    assert _token().authorization_header() == f"mtls_pop {SENTINEL_TOKEN}"


def test_binding_certificate_pem_round_trips_to_the_der(backend_certificate: bytes) -> None:
    certificate = BindingCertificate(
        der=backend_certificate,
        thumbprint_sha256="x",
        not_before=NOW,
        not_after=NOW,
        backend="software",
    )
    assert certificate.pem.startswith("-----BEGIN CERTIFICATE-----\n")
    assert certificate.pem.endswith("-----END CERTIFICATE-----\n")
    parsed = x509.load_pem_x509_certificate(certificate.pem.encode())
    assert parsed == x509.load_der_x509_certificate(backend_certificate)


# --- identity selection -------------------------------------------------------------------------------
def test_system_assigned_has_no_selector() -> None:
    identity = ManagedIdentity.system_assigned()
    assert identity.is_system_assigned
    assert (identity.selector, identity.value) == (None, None)
    assert identity.describe() == "system-assigned"


@pytest.mark.parametrize(
    ("kwargs", "selector"),
    [
        ({"client_id": CLIENT_ID}, "client_id"),
        ({"object_id": CLIENT_ID}, "object_id"),
        ({"resource_id": RESOURCE_ID}, "resource_id"),
    ],
)
def test_user_assigned_takes_exactly_one_selector(kwargs: dict[str, str], selector: str) -> None:
    identity = ManagedIdentity.user_assigned(**kwargs)
    assert not identity.is_system_assigned
    assert identity.selector == selector
    assert identity.value == next(iter(kwargs.values()))
    assert identity.describe() == f"{selector}={identity.value}"


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"client_id": CLIENT_ID, "object_id": CLIENT_ID},
        {"client_id": CLIENT_ID, "resource_id": RESOURCE_ID},
        {"object_id": CLIENT_ID, "resource_id": RESOURCE_ID},
        {"client_id": CLIENT_ID, "object_id": CLIENT_ID, "resource_id": RESOURCE_ID},
        {"client_id": ""},
        {"object_id": "   "},
    ],
)
def test_user_assigned_without_exactly_one_non_empty_selector_is_a_configuration_error(
    kwargs: dict[str, str],
) -> None:
    with pytest.raises(ConfigurationError):
        ManagedIdentity.user_assigned(**kwargs)


def test_user_assigned_selector_value_is_trimmed() -> None:
    assert ManagedIdentity.user_assigned(client_id=f"  {CLIENT_ID} ").value == CLIENT_ID
