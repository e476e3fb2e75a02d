"""Binding checks: PROTOCOL.md §4.4 (the certificate is for our key) and §6.3 (cnf.x5t#S256)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from unit_support import NOW, b64url, make_jwt

from msiv2_async import _binding
from msiv2_async._errors import BindingMismatchError, CertificateIssuanceError
from msiv2_async._models import BindingCertificate, RsaPublicNumbers, x5t_s256

IssueCertificate = Callable[..., bytes]


def _bind(certificate_der: bytes, numbers: RsaPublicNumbers, now: datetime = NOW) -> BindingCertificate:
    return _binding.certificate_for_key(certificate_der, numbers, backend="software", now=now)


def _expected_thumbprint(der: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode("ascii").rstrip("=")


# --- §4.4 the issued certificate -----------------------------------------------------------------
def test_certificate_for_our_key_is_accepted(
    backend_certificate: bytes, backend_numbers: RsaPublicNumbers
) -> None:
    bound = _bind(backend_certificate, backend_numbers)
    parsed = x509.load_der_x509_certificate(backend_certificate)
    assert bound.der == backend_certificate
    assert bound.thumbprint_sha256 == _expected_thumbprint(backend_certificate)
    assert bound.not_before == parsed.not_valid_before_utc
    assert bound.not_after == parsed.not_valid_after_utc
    assert bound.backend == "software"


def test_certificate_for_another_key_is_rejected(
    issue_certificate: IssueCertificate,
    other_private_key: rsa.RSAPrivateKey,
    backend_numbers: RsaPublicNumbers,
) -> None:
    foreign = issue_certificate(other_private_key.public_key())
    with pytest.raises(CertificateIssuanceError, match="different public key"):
        _bind(foreign, backend_numbers)


def test_certificate_with_same_modulus_but_other_exponent_is_rejected(
    backend_certificate: bytes, backend_numbers: RsaPublicNumbers
) -> None:
    with pytest.raises(CertificateIssuanceError):
        _bind(backend_certificate, RsaPublicNumbers(backend_numbers.modulus, 3))


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"not a certificate",
        b"\x30\x03\x02\x01\x00",
        b"\x30\x82\xff\xff",
        b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    ],
)
def test_garbage_der_is_rejected(garbage: bytes, backend_numbers: RsaPublicNumbers) -> None:
    with pytest.raises(CertificateIssuanceError):
        _bind(garbage, backend_numbers)


def test_certificate_with_trailing_bytes_is_rejected(
    backend_certificate: bytes, backend_numbers: RsaPublicNumbers
) -> None:
    with pytest.raises(CertificateIssuanceError):
        _bind(backend_certificate + b"\x00", backend_numbers)


def test_oversized_certificate_is_rejected_before_parsing(backend_numbers: RsaPublicNumbers) -> None:
    with pytest.raises(CertificateIssuanceError, match="oversized"):
        _bind(b"\x30" * (64 * 1024), backend_numbers)


def test_certificate_with_an_ec_key_is_rejected(
    issue_certificate: IssueCertificate,
    ec_private_key: ec.EllipticCurvePrivateKey,
    backend_numbers: RsaPublicNumbers,
) -> None:
    with pytest.raises(CertificateIssuanceError, match="not RSA"):
        _bind(issue_certificate(ec_private_key.public_key()), backend_numbers)


def test_expired_certificate_is_rejected(
    issue_certificate: IssueCertificate,
    backend_public_key: rsa.RSAPublicKey,
    backend_numbers: RsaPublicNumbers,
) -> None:
    expired = issue_certificate(
        backend_public_key, not_before=NOW - timedelta(days=8), not_after=NOW - timedelta(seconds=1)
    )
    with pytest.raises(CertificateIssuanceError):
        _bind(expired, backend_numbers)


def test_certificate_is_not_valid_at_its_not_after_instant(
    issue_certificate: IssueCertificate,
    backend_public_key: rsa.RSAPublicKey,
    backend_numbers: RsaPublicNumbers,
) -> None:
    certificate = issue_certificate(backend_public_key, not_before=NOW - timedelta(days=7), not_after=NOW)
    with pytest.raises(CertificateIssuanceError):
        _bind(certificate, backend_numbers)


def test_certificate_not_yet_valid_within_five_minutes_skew_is_accepted(
    issue_certificate: IssueCertificate,
    backend_public_key: rsa.RSAPublicKey,
    backend_numbers: RsaPublicNumbers,
) -> None:
    early = issue_certificate(backend_public_key, not_before=NOW + timedelta(minutes=4, seconds=59))
    assert _bind(early, backend_numbers).not_before > NOW


def test_certificate_not_yet_valid_beyond_five_minutes_skew_is_rejected(
    issue_certificate: IssueCertificate,
    backend_public_key: rsa.RSAPublicKey,
    backend_numbers: RsaPublicNumbers,
) -> None:
    future = issue_certificate(backend_public_key, not_before=NOW + timedelta(minutes=5, seconds=1))
    with pytest.raises(CertificateIssuanceError, match="clock"):
        _bind(future, backend_numbers)


def test_validity_is_judged_in_utc_whatever_the_timezone_of_now(
    backend_certificate: bytes, backend_numbers: RsaPublicNumbers
) -> None:
    elsewhere = NOW.astimezone(timezone(timedelta(hours=-11)))
    assert _bind(backend_certificate, backend_numbers, now=elsewhere).der == backend_certificate


# --- §6.3 x5t#S256 -----------------------------------------------------------------------------------
def test_x5t_s256_is_unpadded_base64url_sha256_of_the_der(backend_certificate: bytes) -> None:
    thumbprint = x5t_s256(backend_certificate)
    assert thumbprint == _expected_thumbprint(backend_certificate)
    assert len(thumbprint) == 43
    assert not set(thumbprint) & set("=+/")
    padded = thumbprint + "="
    assert base64.urlsafe_b64decode(padded) == hashlib.sha256(backend_certificate).digest()


@pytest.mark.parametrize("data", [b"", b"\xfb\xff", bytes(range(256))])
def test_x5t_s256_uses_the_url_safe_alphabet(data: bytes) -> None:
    assert x5t_s256(data) == b64url(hashlib.sha256(data).digest())


# --- §6.3 verifying the token's cnf --------------------------------------------------------------
@pytest.fixture
def bound(backend_certificate: bytes, backend_numbers: RsaPublicNumbers) -> BindingCertificate:
    return _bind(backend_certificate, backend_numbers)


def test_token_whose_cnf_names_our_certificate_is_accepted(bound: BindingCertificate) -> None:
    token = make_jwt({"aud": "https://vault.azure.net", "cnf": {"x5t#S256": bound.thumbprint_sha256}})
    _binding.verify_token_binding(token, bound)


def test_token_bound_to_another_certificate_is_a_binding_mismatch(bound: BindingCertificate) -> None:
    token = make_jwt({"cnf": {"x5t#S256": x5t_s256(b"another certificate")}})
    with pytest.raises(BindingMismatchError) as caught:
        _binding.verify_token_binding(token, bound)
    assert token not in str(caught.value)


def test_thumbprint_compare_is_exact(bound: BindingCertificate) -> None:
    token = make_jwt({"cnf": {"x5t#S256": bound.thumbprint_sha256 + "="}})
    with pytest.raises(BindingMismatchError):
        _binding.verify_token_binding(token, bound)


@pytest.mark.parametrize(
    "payload",
    [
        {"aud": "x"},
        {"cnf": None},
        {"cnf": "x5t"},
        {"cnf": {}},
        {"cnf": {"jkt": "abc"}},
        {"cnf": {"x5t#S256": 5}},
        {"cnf": {"x5t#S256": None}},
    ],
)
def test_token_without_a_usable_cnf_thumbprint_is_a_binding_mismatch(
    payload: dict[str, object], bound: BindingCertificate
) -> None:
    with pytest.raises(BindingMismatchError):
        _binding.verify_token_binding(make_jwt(payload), bound)


@pytest.mark.parametrize(
    "token",
    [
        "some-access-token",
        "a.b",
        "a.b.c.d",
        "",
        "header.!!!!.sig",
        "h." + b64url(b"not json") + ".s",
        "h." + b64url(b"[1, 2]") + ".s",
        "h." + b64url(b"\xff\xfe") + ".s",
        "h." + b64url(b"[" * 100_000) + ".s",
        "h.\u00e9\u00e9\u00e9\u00e9.s",
    ],
)
def test_non_jwt_or_undecodable_token_is_a_binding_mismatch(token: str, bound: BindingCertificate) -> None:
    with pytest.raises(BindingMismatchError):
        _binding.verify_token_binding(token, bound)


def test_cnf_thumbprint_is_read_without_signature_validation() -> None:
    token = make_jwt({"cnf": {"x5t#S256": "abc"}}).rsplit(".", 1)[0] + ".not-a-real-signature"
    assert _binding.cnf_thumbprint(token) == "abc"
