"""Secrets hygiene (RELIABILITY.md §4/§5): fingerprints and the sanitized excerpts used in errors."""

from __future__ import annotations

import base64
import hashlib
import os
import re

import pytest
from unit_support import CORRELATION_ID, make_jwt

from msiv2_async._redact import excerpt, fingerprint, redact

JWT = make_jwt({"sub": "SENTINEL-SUBJECT", "cnf": {"x5t#S256": "x" * 43}})


def test_excerpt_truncates_to_200_characters_plus_ellipsis() -> None:
    text = "word " * 500
    result = excerpt(text)
    assert len(result) == 203
    assert result.endswith("...")
    assert result[:200] == " ".join(text.split())[:200]


def test_excerpt_keeps_short_text_whole() -> None:
    assert excerpt("Required metadata header not specified") == "Required metadata header not specified"


def test_excerpt_of_exactly_200_characters_is_not_marked_truncated() -> None:
    text = "a" * 99 + " " + "b" * 100
    assert excerpt(text) == text


def test_excerpt_collapses_whitespace_to_one_line() -> None:
    assert excerpt("line one\r\n\tline   two\n") == "line one line two"


def test_excerpt_decodes_bytes_and_replaces_invalid_utf8() -> None:
    assert excerpt(b"bad \xff byte") == "bad \ufffd byte"


def test_excerpt_redacts_jwts() -> None:
    result = excerpt(f"token was {JWT} ok")
    assert JWT not in result
    assert JWT.split(".")[1] not in result
    assert "SENTINEL" not in result
    assert result.startswith("token was ")
    assert result.endswith(" ok")


def test_excerpt_redacts_a_two_part_jwt_fragment() -> None:
    header, payload, _ = JWT.split(".")
    assert payload not in excerpt(f"{header}.{payload}")


def test_redaction_happens_before_truncation() -> None:
    text = "x" * 190 + " " + JWT
    result = excerpt(text)
    assert "eyJ" not in result
    assert JWT[:12] not in result


@pytest.mark.parametrize("scheme", ["mtls_pop", "MTLS_POP", "Bearer", "bearer"])
def test_excerpt_redacts_the_token_after_an_authorization_scheme(scheme: str) -> None:
    result = excerpt(f"Authorization: {scheme} SENTINELOPAQUETOKEN_0123456789 was refused")
    assert "SENTINELOPAQUETOKEN_0123456789" not in result
    assert "was refused" in result


@pytest.mark.parametrize(
    "field", ["access_token", "refresh_token", "attestation_token", "csr", "certificate"]
)
@pytest.mark.parametrize(
    "template",
    [
        '{{"{field}":"SENTINEL-VALUE-42","error":"x"}}',
        '{{"{field}": "SENTINEL-VALUE-42"}}',
        "{field}=SENTINEL-VALUE-42&b=1",
    ],
)
def test_excerpt_redacts_secret_fields_in_json_and_forms(field: str, template: str) -> None:
    result = excerpt(template.format(field=field))
    assert "SENTINEL-VALUE-42" not in result
    assert field in result


def test_excerpt_redacts_long_base64_blobs() -> None:
    blob = base64.b64encode(os.urandom(300)).decode()
    result = excerpt(f"cert: {blob} end")
    assert blob[:40] not in result
    assert result.endswith(" end")


@pytest.mark.parametrize(
    "kept",
    [
        CORRELATION_ID,
        "AADSTS392200: Client certificate is missing from the request.",
        "invalid_client",
        "HTTP 503 Service Unavailable",
        "Attestation Token is missing / empty in the issue credential request",
    ],
)
def test_excerpt_keeps_diagnostic_text(kept: str) -> None:
    assert excerpt(kept) == kept


def test_redact_alone_does_not_truncate() -> None:
    text = "z " * 300
    assert redact(text) == text


def test_fingerprint_is_sha256_prefix_of_twelve_hex_digits() -> None:
    value = fingerprint("SENTINEL-ACCESS-TOKEN")
    assert re.fullmatch(r"sha256:[0-9a-f]{12}", value)
    assert value == "sha256:" + hashlib.sha256(b"SENTINEL-ACCESS-TOKEN").hexdigest()[:12]
    assert "SENTINEL" not in value


def test_fingerprint_of_str_and_its_utf8_bytes_agree_and_differ_between_secrets() -> None:
    assert fingerprint("é-token") == fingerprint("é-token".encode())
    assert fingerprint("token-a") != fingerprint("token-b")
