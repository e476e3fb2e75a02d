"""Binding checks: the issued certificate is for our key, and the token names that certificate."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from ._errors import BindingMismatchError, CertificateIssuanceError
from ._models import BindingCertificate, RsaPublicNumbers, x5t_s256

MAX_CERTIFICATE_BYTES = 16 * 1024
CLOCK_SKEW = timedelta(minutes=5)


def certificate_for_key(
    certificate_der: bytes, key: RsaPublicNumbers, *, backend: str, now: datetime
) -> BindingCertificate:
    """Parse the issued certificate and prove it carries ``key`` and is valid at ``now``."""
    if not certificate_der or len(certificate_der) > MAX_CERTIFICATE_BYTES:
        raise CertificateIssuanceError("IMDS issued an empty or oversized certificate")
    try:
        certificate = x509.load_der_x509_certificate(certificate_der)
        public_key = certificate.public_key()
        not_before = certificate.not_valid_before_utc
        not_after = certificate.not_valid_after_utc
    except ValueError:
        raise CertificateIssuanceError("IMDS issued a certificate that is not valid DER X.509") from None
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise CertificateIssuanceError("IMDS issued a certificate whose key is not RSA")
    numbers = public_key.public_numbers()
    if (numbers.n, numbers.e) != (key.modulus, key.exponent):
        raise CertificateIssuanceError(
            "IMDS issued a certificate for a different public key than the one in our request; "
            "nothing was sent to the STS"
        )
    now = now.astimezone(timezone.utc)
    if not (not_before - CLOCK_SKEW <= now < not_after):
        raise CertificateIssuanceError(
            f"IMDS issued a certificate valid from {not_before:%Y-%m-%d %H:%M} "
            f"to {not_after:%Y-%m-%d %H:%M} UTC, which does not include now; check the system clock"
        )
    return BindingCertificate(
        der=certificate_der,
        thumbprint_sha256=x5t_s256(certificate_der),
        not_before=not_before,
        not_after=not_after,
        backend=backend,
    )


def token_claims(access_token: str) -> dict[str, object]:
    """The JWT payload, decoded without signature validation (the resource validates it)."""
    parts = access_token.split(".")
    if len(parts) != 3:
        raise BindingMismatchError(
            "the access token is not a JWT, so its certificate binding cannot be checked"
        )
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        raise BindingMismatchError("the access token's payload is not base64url JSON") from None
    if not isinstance(payload, dict):
        raise BindingMismatchError("the access token's payload is not a JSON object")
    return payload


def cnf_thumbprint(access_token: str) -> str | None:
    """``cnf["x5t#S256"]`` of the token, or ``None`` when absent."""
    cnf = token_claims(access_token).get("cnf")
    value = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
    return value if isinstance(value, str) else None


def verify_token_binding(access_token: str, certificate: BindingCertificate) -> None:
    """Raise :class:`BindingMismatchError` unless the token's ``cnf.x5t#S256`` names ``certificate``."""
    bound_to = cnf_thumbprint(access_token)
    if bound_to is None:
        raise BindingMismatchError(
            "the STS returned a token without cnf.x5t#S256: it is not bound to our certificate"
        )
    if bound_to != certificate.thumbprint_sha256:
        raise BindingMismatchError(
            f"the token is bound to certificate {bound_to[:12]}... but was requested with "
            f"{certificate.thumbprint_sha256[:12]}...; the STS or a proxy mixed up certificates"
        )
