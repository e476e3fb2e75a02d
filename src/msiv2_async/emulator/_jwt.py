"""A minimal RS256 JSON Web Token encoder and verifier (RFC 7515/7519 compact form)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class JwtError(ValueError):
    """The token is malformed or its signature does not verify."""


def b64url(data: bytes) -> str:
    """base64url without ``=`` padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Inverse of :func:`b64url` (strict alphabet, padding optional)."""
    try:
        raw = text.encode("ascii")
        return base64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=b"-_", validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise JwtError("not base64url") from exc


def key_id(public_key: rsa.RSAPublicKey) -> str:
    """A stable ``kid``: base64url SHA-256 of the key's SubjectPublicKeyInfo DER."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b64url(hashlib.sha256(spki).digest())


def _json_segment(value: Mapping[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def encode(claims: Mapping[str, Any], key: rsa.RSAPrivateKey) -> str:
    """Sign ``claims`` with RS256 (RSASSA-PKCS1-v1_5 / SHA-256)."""
    header = {"alg": "RS256", "typ": "JWT", "kid": key_id(key.public_key())}
    signing_input = f"{_json_segment(header)}.{_json_segment(claims)}"
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def _object(segment: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(segment))
    except ValueError as exc:
        raise JwtError(f"{what} is not JSON") from exc
    if not isinstance(value, dict):
        raise JwtError(f"{what} is not a JSON object")
    return value


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a compact JWT, without checking anything but its shape."""
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError("a JWT has three dot-separated parts")
    return _object(parts[1], "JWT payload")


def verify(token: str, public_key: rsa.RSAPublicKey) -> dict[str, Any]:
    """Check the header (``alg`` RS256) and signature; return the claims. Times are not checked here."""
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError("a JWT has three dot-separated parts")
    header = _object(parts[0], "JWT header")
    if header.get("alg") != "RS256":
        raise JwtError("JWT alg must be RS256")
    claims = _object(parts[1], "JWT payload")
    try:
        public_key.verify(
            b64url_decode(parts[2]),
            f"{parts[0]}.{parts[1]}".encode("ascii"),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except (InvalidSignature, UnicodeEncodeError) as exc:
        raise JwtError("JWT signature does not verify with the STS key") from exc
    return claims
