"""``msiv2-async decode``: a token's header and claims as JSON, its cnf checked against a certificate.

The signature is **not** verified (only the resource and the STS's keys can do that) and never printed:
the output holds the decoded header and payload, the time claims as UTC, and, with ``--certificate``,
whether ``cnf.x5t#S256`` names that certificate (exit 1 when it does not).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ._models import x5t_s256

NOT_VERIFIED = "signature NOT verified: this shows what the token claims, not that it is genuine"
TIME_CLAIMS = ("exp", "nbf", "iat")
MAX_TOKEN_CHARS = 64 * 1024
_SCHEMES = ("mtls_pop ", "bearer ", "pop ")


class DecodeError(Exception):
    """The input is not a JWT, or the certificate file cannot be read."""


def add_parser(commands: Any) -> None:
    """Register ``decode`` on the CLI's subparsers."""
    parser = commands.add_parser(
        "decode",
        help="show a token's header and claims (signature NOT verified)",
        description="Decode a JWT access token: header and claims as JSON, times as UTC. The signature "
        "is not verified and never printed. Pass '-' to read the token from stdin (keeps it out of "
        "the process list and shell history).",
        allow_abbrev=False,
    )
    parser.add_argument("token", metavar="TOKEN|-", help="the access token, or '-' to read it from stdin")
    parser.add_argument(
        "--certificate",
        metavar="FILE",
        help="a certificate (PEM or DER): check that the token's cnf.x5t#S256 names it (exit 1 if not)",
    )


def _segment(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        raise DecodeError(f"the token's {what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise DecodeError(f"the token's {what} is not a JSON object")
    return value


def split_token(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a compact JWT (an ``mtls_pop``/``Bearer`` scheme prefix is dropped)."""
    token = text.strip()
    if len(token) > MAX_TOKEN_CHARS:
        raise DecodeError(f"the input is longer than {MAX_TOKEN_CHARS} characters; not an access token")
    scheme = next((s for s in _SCHEMES if token.lower().startswith(s)), None)
    if scheme is not None:
        token = token[len(scheme) :].strip()
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise DecodeError(
            f"the input is not a compact JWT (header.payload.signature): it has {len(parts)} part(s)"
        )
    return _segment(parts[0], "header"), _segment(parts[1], "payload")


def utc_times(claims: dict[str, Any]) -> dict[str, str]:
    """``exp``/``nbf``/``iat`` as ISO 8601 UTC strings (claims that are not numbers are left out)."""
    times: dict[str, str] = {}
    for name in TIME_CLAIMS:
        value = claims.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                times[name] = datetime.fromtimestamp(value, timezone.utc).isoformat().replace("+00:00", "Z")
            except (OverflowError, OSError, ValueError):
                times[name] = "out of range"
    return times


def load_certificate(path: str) -> bytes:
    """The DER of the first certificate in ``path`` (PEM or DER)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(1024 * 1024)
    except OSError as exc:
        raise DecodeError(f"cannot read certificate {path!r}: {exc.strerror or exc}") from None
    try:
        if b"-----BEGIN" in data:
            certificate = x509.load_pem_x509_certificate(data)
        else:
            certificate = x509.load_der_x509_certificate(data)
    except ValueError:
        raise DecodeError(f"{path!r} holds no PEM or DER X.509 certificate") from None
    return certificate.public_bytes(serialization.Encoding.DER)


def decode(token: str, certificate_path: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """The report ``decode`` prints; ``binding.matches`` is False when the cnf does not name the cert."""
    header, claims = split_token(token)
    report: dict[str, Any] = {
        "signature_verified": False,
        "warning": NOT_VERIFIED,
        "header": header,
        "claims": claims,
        "times_utc": utc_times(claims),
    }
    exp = claims.get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        moment = (now or datetime.now(timezone.utc)).timestamp()
        report["expired"] = exp <= moment
    cnf = claims.get("cnf")
    bound_to = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
    report["cnf_x5t#S256"] = bound_to if isinstance(bound_to, str) else None
    if certificate_path is not None:
        thumbprint = x5t_s256(load_certificate(certificate_path))
        report["binding"] = {
            "certificate": certificate_path,
            "certificate_x5t#S256": thumbprint,
            "matches": report["cnf_x5t#S256"] == thumbprint,
        }
    return report


def _read_token(argument: str, stdin: TextIO) -> str:
    if argument != "-":
        return argument
    return stdin.read(MAX_TOKEN_CHARS + 1)


def main(options: argparse.Namespace, stdin: TextIO | None = None) -> int:
    """Run ``decode``: JSON on stdout, the not-verified warning and any mismatch on stderr."""
    try:
        report = decode(_read_token(options.token, stdin or sys.stdin), options.certificate)
    except DecodeError as exc:
        print(f"msiv2-async: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"msiv2-async decode: {NOT_VERIFIED}", file=sys.stderr)
    binding = report.get("binding")
    if binding is not None and not binding["matches"]:
        bound_to = report["cnf_x5t#S256"]
        problem = (
            "the token carries no cnf.x5t#S256: it is not bound to any certificate"
            if bound_to is None
            else f"the token is bound to {bound_to}, not to {binding['certificate_x5t#S256']}"
        )
        print(f"msiv2-async: error: binding mismatch: {problem}", file=sys.stderr)
        return 1
    return 0
