"""The emulated mTLS-bound resource: accepts ``Authorization: mtls_pop <jwt>`` on any path (GET or POST)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from . import _jwt
from ._ca import x5t_s256
from ._faults import serve
from ._http import json_response, peer_certificate
from ._models import Fault
from ._state import State


class _Refused(Exception):
    """A failed check: ``check`` names it, the message describes it."""

    def __init__(self, check: str, description: str) -> None:
        super().__init__(description)
        self.check = check


def _normalise(audience: str) -> str:
    return audience.rstrip("/")


class Resource:
    """Request handlers of the resource listener; tokens must verify with ``sts_public_key``."""

    def __init__(self, state: State, sts_public_key: rsa.RSAPublicKey, audiences: Sequence[str]) -> None:
        self._state = state
        self._key = sts_public_key
        self._audiences = frozenset(_normalise(audience) for audience in audiences)

    def application(self) -> web.Application:
        """The aiohttp application: one catch-all route."""
        app = web.Application()
        app.router.add_route("GET", "/{path:.*}", self.handle)
        app.router.add_route("POST", "/{path:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Verify the bound token against the TLS client certificate and log the outcome."""
        fault = self._state.begin("resource")
        der = peer_certificate(request)
        presented = x5t_s256(der) if der is not None else None
        scheme, token = _authorization(request)
        entry: dict[str, Any] = {
            "presented_x5t": presented,
            "cnf_x5t": _unverified_cnf(token),
            "scheme": scheme,
            "status": 0,
        }

        async def normal(active: Fault | None) -> web.Response:
            try:
                claims = self._verify(presented, scheme, token)
            except _Refused as refusal:
                return _refusal(refusal)
            body = {
                "verified": True,
                "aud": claims.get("aud"),
                "appid": claims.get("appid"),
                "tid": claims.get("tid"),
                "x5t#S256": presented,
                "path": request.path,
            }
            return json_response(200, body)

        recorded = False

        def record(status: int) -> None:
            # Before the answer goes out, so a client that has read it finds the entry.
            nonlocal recorded
            if not recorded:
                recorded = True
                entry["status"] = status
                self._state.record_resource(entry)

        silent = fault is not None and fault.action in ("hang", "handshake_reject")
        try:
            response = await serve(
                request, self._state, fault, normal, lambda response: record(response.status)
            )
            record(0 if silent else response.status)
            return response
        finally:
            record(0)

    def _verify(self, presented: str | None, scheme: str | None, token: str | None) -> dict[str, Any]:
        if presented is None:
            raise _Refused("client_certificate", "No client certificate was presented on the TLS connection")
        if scheme is None or token is None:
            raise _Refused("authorization", "The Authorization header must be 'mtls_pop <token>'")
        try:
            claims = _jwt.verify(token, self._key)
        except _jwt.JwtError as exc:
            raise _Refused("signature", str(exc)) from exc
        bound = isinstance(claims.get("cnf"), dict)
        if scheme.lower() != "mtls_pop":
            what = "A certificate-bound token" if bound else "A token"
            raise _Refused(
                "scheme", f"{what} was presented with the {scheme} scheme; the resource requires mtls_pop"
            )
        now = time.time()
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp <= now:
            raise _Refused("expiry", "The token is expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, (int, float)) and nbf > now:
            raise _Refused("expiry", "The token is not yet valid")
        audience = claims.get("aud")
        if not isinstance(audience, str) or _normalise(audience) not in self._audiences:
            raise _Refused("audience", f"The audience {audience!r} is not accepted by this resource")
        cnf = claims.get("cnf")
        if not isinstance(cnf, dict) or not isinstance(cnf.get("x5t#S256"), str):
            raise _Refused("cnf", "The token is not bound to a certificate (no cnf.x5t#S256)")
        if cnf["x5t#S256"] != presented:
            raise _Refused("cnf", "cnf.x5t#S256 does not match the presented client certificate")
        return claims


def _authorization(request: web.Request) -> tuple[str | None, str | None]:
    header = request.headers.get("Authorization")
    if not header:
        return None, None
    scheme, _, token = header.strip().partition(" ")
    return scheme, (token.strip() or None)


def _unverified_cnf(token: str | None) -> str | None:
    if token is None:
        return None
    try:
        cnf = _jwt.unverified_claims(token).get("cnf")
    except _jwt.JwtError:
        return None
    value = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
    return value if isinstance(value, str) else None


def _refusal(refusal: _Refused) -> web.Response:
    description = str(refusal).replace('"', "'")
    challenge = f'mtls_pop error="invalid_token", error_description="{description}"'
    body = {"error": "invalid_token", "error_description": str(refusal), "failed_check": refusal.check}
    return json_response(401, body, headers={"WWW-Authenticate": challenge})
