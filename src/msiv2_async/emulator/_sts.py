"""The emulated Entra mTLS STS: ``POST /{tenant}/oauth2/v2.0/token`` (client credentials over mutual TLS).

The listener requests a client certificate and trusts only the emulator CA: a connection without a
certificate reaches :meth:`Sts.token` and gets AADSTS392200, while a certificate from any other CA (or an
expired one) fails in the TLS handshake and is never seen here. Error codes other than 392200 are the
emulator's choice of plausible AADSTS numbers.

Every access token carries a ``uti`` claim ``SENTINEL-AT-<random>``; the token, its signature part and that
value are recorded as secrets (:meth:`Emulator.sentinels`) and never logged.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from . import _jwt
from ._ca import x5t_s256
from ._faults import serve
from ._http import json_response, oauth_error, peer_certificate
from ._models import Fault
from ._state import Settings, State

SENTINEL_PREFIX = "SENTINEL-AT-"

_NO_CERTIFICATE = (
    "Client certificate is missing from the request. The request must be sent over a mutual TLS connection "
    "that presents the certificate issued by IMDS."
)


class Sts:
    """Request handlers of the STS listener; tokens are signed with ``signing_key``."""

    def __init__(
        self, settings: Settings, state: State, signing_key: rsa.RSAPrivateKey, decoy_x5t: str
    ) -> None:
        self._settings = settings
        self._state = state
        self._key = signing_key
        self._decoy_x5t = decoy_x5t

    def application(self) -> web.Application:
        """The aiohttp application (a single route)."""
        app = web.Application()
        app.router.add_route("*", "/{tenant}/oauth2/v2.0/token", self.token)
        return app

    async def token(self, request: web.Request) -> web.StreamResponse:
        """Check the mTLS client-credentials request and answer with a JWT (mtls_pop or Bearer)."""
        fault = self._state.begin("token")

        async def normal(active: Fault | None) -> web.Response:
            return await self._answer(request, active)

        return await serve(request, self._state, fault, normal)

    async def _answer(self, request: web.Request, fault: Fault | None) -> web.Response:
        variant = fault.token if fault is not None else None
        if request.method != "POST":
            return oauth_error(405, "invalid_request", 900561, "The endpoint only accepts POST requests.")
        der = peer_certificate(request)
        if der is None:
            return oauth_error(400, "invalid_request", 392200, _NO_CERTIFICATE)
        certificate = x509.load_der_x509_certificate(der)
        form = await request.post()
        fields = {name: value for name, value in form.items() if isinstance(value, str)}
        for name in ("grant_type", "client_id", "scope"):
            if not fields.get(name):
                return oauth_error(
                    400,
                    "invalid_request",
                    900144,
                    f"The request body must contain the following parameter: '{name}'.",
                )
        if fields["grant_type"] != "client_credentials":
            return oauth_error(
                400,
                "invalid_request",
                70003,
                f"The app requested an unsupported grant type '{fields['grant_type']}'.",
            )
        scope = fields["scope"]
        if not scope.endswith("/.default") or len(scope) == len("/.default"):
            return oauth_error(
                400,
                "invalid_request",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows must have a "
                "scope value with /.default suffixed to the resource identifier (application ID URI).",
            )
        token_type = fields.get("token_type")
        if token_type is not None and token_type.lower() != "mtls_pop":
            return oauth_error(400, "invalid_request", 900382, f"Unsupported token_type '{token_type}'.")
        tenant = request.match_info["tenant"]
        settings = self._settings
        if tenant.lower() != settings.tenant_id.lower():
            return oauth_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        now = datetime.now(timezone.utc)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            return oauth_error(
                401, "invalid_client", 700024, "The client certificate is not within its valid time range."
            )
        common_name = _name_value(certificate, NameOID.COMMON_NAME)
        if common_name is None or common_name.lower() != fields["client_id"].lower():
            return oauth_error(
                401,
                "invalid_client",
                700027,
                f"The client certificate's subject CN {common_name!r} does not match client_id "
                f"'{fields['client_id']}'.",
            )
        domain_component = _name_value(certificate, NameOID.DOMAIN_COMPONENT)
        identity = settings.identity_by_client_id(common_name)
        if domain_component is None or domain_component.lower() != tenant.lower() or identity is None:
            return oauth_error(
                401,
                "unauthorized_client",
                700016,
                f"Application with identifier '{common_name}' was not found in the directory '{tenant}'.",
            )
        issued = int(time.time())
        expires_in = int(settings.token_lifetime.total_seconds())
        claims: dict[str, object] = {
            "aud": scope[: -len("/.default")],
            "iss": f"https://sts.windows.net/{settings.tenant_id}/",
            "iat": issued,
            "nbf": issued,
            "exp": issued + expires_in,
            "appid": identity.client_id,
            "oid": identity.object_id,
            "sub": identity.object_id,
            "tid": settings.tenant_id,
            "idtyp": "app",
        }
        if variant == "wrong_cnf":
            claims["cnf"] = {"x5t#S256": self._decoy_x5t}
        elif token_type is not None and variant != "no_cnf":
            claims["cnf"] = {"x5t#S256": x5t_s256(der)}
        body: dict[str, object] = {
            "token_type": "mtls_pop" if token_type is not None else "Bearer",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "refresh_in": expires_in // 2,
            "access_token": mint_access_token(claims, self._key, self._state),
        }
        if variant == "bearer":
            body["token_type"] = "Bearer"
        elif variant == "missing_token_type":
            del body["token_type"]
        return json_response(200, body)


def mint_access_token(claims: dict[str, object], key: rsa.RSAPrivateKey, state: State) -> str:
    """Sign ``claims`` plus a fresh ``uti`` sentinel; record the token, its signature and the sentinel."""
    sentinel = SENTINEL_PREFIX + secrets.token_urlsafe(16)
    token = _jwt.encode({**claims, "uti": sentinel}, key)
    state.record_secrets(token, token.rsplit(".", 1)[1], sentinel)
    return token


def _name_value(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    values = certificate.subject.get_attributes_for_oid(oid)
    if len(values) != 1:
        return None
    value = values[0].value
    return value if isinstance(value, str) else None
