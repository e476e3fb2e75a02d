"""Keeping secrets out of messages and logs: fingerprints and sanitized excerpts."""

from __future__ import annotations

import hashlib
import re

_EXCERPT_LIMIT = 200
_JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){1,2}")
_SCHEME_TOKEN = re.compile(r"(?i)\b(mtls_pop|bearer)\s+[A-Za-z0-9._~+/=-]{8,}")
_SECRET_FIELD = re.compile(
    r'(?i)("?(?:access_token|attestation_token|csr|certificate|refresh_token)"?\s*[:=]\s*)(?:"[^"]*"?|[^",}&\s]*)'
)
_LONG_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{120,}={0,2}")


def fingerprint(secret: str | bytes) -> str:
    """A short, non-reversible name for a secret: ``sha256:<first 12 hex digits>``."""
    data = secret.encode() if isinstance(secret, str) else secret
    return "sha256:" + hashlib.sha256(data).hexdigest()[:12]


def redact(text: str) -> str:
    """Replace anything that looks like a token, JWT, CSR or certificate with a placeholder."""
    text = _SECRET_FIELD.sub(r"\1<redacted>", text)
    text = _JWT_LIKE.sub("<jwt redacted>", text)
    text = _SCHEME_TOKEN.sub(r"\1 <redacted>", text)
    return _LONG_BASE64.sub("<base64 redacted>", text)


def excerpt(body: bytes | str) -> str:
    """A printable, redacted, truncated view of an error body for an exception message."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = redact(" ".join(text.split()))
    if len(text) > _EXCERPT_LIMIT:
        text = text[:_EXCERPT_LIMIT] + "..."
    return text
