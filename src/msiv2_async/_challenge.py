"""Reading a resource's ``WWW-Authenticate`` answer: is it a claims challenge, and with which claims?

A resource that wants a token with more claims (CAE, conditional access) answers 401 with
``WWW-Authenticate: mtls_pop claims="<base64 JSON>"`` (or the same parameter on a ``Bearer`` challenge,
as Entra-protected resources send it). Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from ._logging import get_logger

MAX_CLAIMS_LENGTH = 16 * 1024
"""Longer ``claims`` parameters are ignored (a plain 401)."""

_SCHEMES = frozenset({"mtls_pop", "bearer", "pop"})
_ITEM = re.compile(
    r"""\s*(?P<name>[^\s=,"]+)               # a scheme or a parameter name
        (?:\s*=\s*(?P<value>"(?:[^"\\]|\\.)*"|[^\s,]*))?   # =value (quoted or a token)
        \s*,?""",
    re.VERBOSE,
)
_log = get_logger("msiv2_async.challenge")


def parse_challenges(header: str) -> list[tuple[str, dict[str, str]]]:
    """``WWW-Authenticate`` as ``[(scheme in lower case, {parameter in lower case: value}), ...]``."""
    challenges: list[tuple[str, dict[str, str]]] = []
    position = 0
    while position < len(header):
        match = _ITEM.match(header, position)
        if match is None or match.end() == position:
            break
        position = match.end()
        name, value = match.group("name"), match.group("value")
        if value is None:
            challenges.append((name.lower(), {}))
        elif challenges:
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            challenges[-1][1].setdefault(name.lower(), value)
    return challenges


def decode_claims(encoded: str) -> str | None:
    """The JSON text of a base64 (standard or url-safe, padding optional) claims value, or None."""
    if not encoded or len(encoded) > MAX_CLAIMS_LENGTH:
        return None
    text = encoded.strip().replace("+", "-").replace("/", "_").rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        claims = raw.decode("utf-8")
        parsed = json.loads(claims)
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(parsed, dict) and parsed else None


def claims_challenge(header: str | None) -> str | None:
    """The decoded claims of an mtls_pop (or Bearer) claims challenge in ``header``; None otherwise."""
    if not header:
        return None
    for scheme, parameters in parse_challenges(header):
        if scheme in _SCHEMES and "claims" in parameters:
            claims = decode_claims(parameters["claims"])
            if claims is None:
                _log.warning("ignoring a %s claims challenge whose claims are not base64 JSON", scheme)
            return claims
    return None
