"""Helpers shared by the integration tests (fixtures live in conftest.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

from msiv2_async.emulator import Emulator, Fault

CLAIMS = {"access_token": {"nbf": {"essential": True, "value": "1700000000"}}}
INVALID_CLIENT = Fault(
    status=401,
    body=json.dumps(
        {
            "error": "invalid_client",
            "error_description": "AADSTS700027: the certificate is not valid for this client",
            "error_codes": [700027],
        }
    ),
)
PLAIN_401 = Fault(
    status=401,
    headers={"WWW-Authenticate": 'mtls_pop error="invalid_token", error_description="The token is expired"'},
)


def claims_challenge_fault(claims: dict[str, Any] = CLAIMS) -> Fault:
    """A resource answer asking for a token with ``claims`` (base64url JSON, as Entra sends it)."""
    encoded = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    header = f'mtls_pop error="insufficient_claims", claims="{encoded}"'
    return Fault(status=401, headers={"WWW-Authenticate": header}, body='{"error":"insufficient_claims"}')


class ResourceLog:
    """The emulator's resource log, from the start of the current test on."""

    def __init__(self, emulator: Emulator) -> None:
        self._emulator = emulator
        self._start = len(emulator.resource_log)

    def entries(self) -> list[dict[str, Any]]:
        return list(self._emulator.resource_log[self._start :])


def assert_all_bound(entries: list[dict[str, Any]]) -> None:
    """Every resource request presented the certificate its token's cnf names, with mtls_pop."""
    assert entries
    mismatched = [e for e in entries if e["presented_x5t"] is None or e["presented_x5t"] != e["cnf_x5t"]]
    assert mismatched == []
    assert {e["scheme"] for e in entries} == {"mtls_pop"}
