"""Reading claims challenges out of WWW-Authenticate (pure)."""

from __future__ import annotations

import base64

import pytest

from msiv2_async._challenge import claims_challenge, parse_challenges

CLAIMS = '{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}'
URLSAFE = base64.urlsafe_b64encode(CLAIMS.encode()).decode().rstrip("=")
STANDARD = base64.b64encode(CLAIMS.encode()).decode()


@pytest.mark.parametrize(
    "header",
    [
        f'mtls_pop claims="{URLSAFE}"',
        f'mtls_pop error="insufficient_claims", claims="{STANDARD}"',
        f'Bearer realm="", authorization_uri="https://login.microsoftonline.com/x", '
        f'error="insufficient_claims", claims="{URLSAFE}"',
        f'Basic realm="x", MTLS_POP claims="{URLSAFE}"',
    ],
)
def test_a_claims_challenge_yields_the_decoded_json(header: str) -> None:
    assert claims_challenge(header) == CLAIMS


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        'mtls_pop error="invalid_token", error_description="The token is expired"',
        'mtls_pop claims="not base64 json!"',
        f'mtls_pop claims="{base64.urlsafe_b64encode(b"[1, 2]").decode()}"',
        f'Digest claims="{URLSAFE}"',
        f'mtls_pop claims="{"A" * 20000}"',
    ],
)
def test_anything_else_is_not_a_claims_challenge(header: str | None) -> None:
    assert claims_challenge(header) is None


def test_challenges_are_split_by_scheme_with_quoted_commas_kept() -> None:
    header = 'Bearer authorization="https://a, b", resource="https://vault.azure.net", mtls_pop error=x'
    assert parse_challenges(header) == [
        ("bearer", {"authorization": "https://a, b", "resource": "https://vault.azure.net"}),
        ("mtls_pop", {"error": "x"}),
    ]
