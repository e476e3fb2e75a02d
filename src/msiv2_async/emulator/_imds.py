"""The emulated IMDS (plain HTTP): ``getplatformmetadata``, ``issuecredential``, the MSI v1 token endpoint
``/metadata/identity/oauth2/token`` and the ``/_emulator/...`` control API (see :mod:`._control`)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from ._ca import Authority, new_ec_key, new_rsa_key
from ._control import Control
from ._csr_check import CsrError, check_csr
from ._faults import Prepare, serve
from ._http import json_response
from ._models import ATTESTATION_ENDPOINT, IMDS_SERVER_HEADER, Fault, Identity
from ._state import Settings, State
from ._sts import mint_access_token

# A fault's server_header choice travels to the response hook in this private header: "-" drops the
# Server header, "=<value>" sets it. The hook always removes the marker before the response is sent.
_SERVER_MARKER = "X-Msiv2-Emulator-Server"
_SELECTORS = ("client_id", "object_id", "mi_res_id", "msi_res_id")
_MISSING_ATTESTATION = "Attestation Token is missing / empty in the issue credential request"
_GARBAGE_CERTIFICATE = "Invalid@#$%Certificate!"


class _Rejected(Exception):
    """A request failed validation: answer 400 invalid_request with this description."""


def _bad_request(description: str) -> web.Response:
    return json_response(400, {"error": "invalid_request", "error_description": description})


class Imds:
    """Request handlers of the IMDS listener."""

    def __init__(
        self,
        settings: Settings,
        state: State,
        authority: Authority,
        sts_url: Callable[[], str],
        token_key: rsa.RSAPrivateKey,
    ) -> None:
        self._settings = settings
        self._state = state
        self._authority = authority
        self._sts_url = sts_url
        self._token_key = token_key

    def application(self) -> web.Application:
        """The aiohttp application; every response gets the IMDS ``Server`` header (or a fault's)."""
        app = web.Application()
        app.router.add_route("*", "/metadata/identity/getplatformmetadata", self.getplatformmetadata)
        app.router.add_route("*", "/metadata/identity/issuecredential", self.issuecredential)
        app.router.add_route("*", "/metadata/identity/oauth2/token", self.v1_token)
        Control(self._settings, self._state).register(app)
        app.on_response_prepare.append(_apply_server_header)
        return app

    def _begin(self, request: web.Request, endpoint: str) -> Fault | None:
        self._state.count_hygiene(
            metadata_missing=request.headers.get("Metadata", "").lower() != "true",
            forwarded_for="X-Forwarded-For" in request.headers,
        )
        return self._state.begin(endpoint)

    async def getplatformmetadata(self, request: web.Request) -> web.StreamResponse:
        """``GET /metadata/identity/getplatformmetadata``."""
        fault = self._begin(request, "getplatformmetadata")

        async def normal(active: Fault | None) -> web.Response:
            try:
                identity = self._common_checks(request, "GET")
            except _Rejected as exc:
                return _bad_request(str(exc))
            settings = self._settings
            body = {
                "cuId": settings.cu_id,
                "clientId": identity.client_id,
                "tenantId": settings.tenant_id,
                "attestationEndpoint": ATTESTATION_ENDPOINT,
            }
            return json_response(200, body)

        return await serve(request, self._state, fault, normal, _server_marker(fault))

    async def issuecredential(self, request: web.Request) -> web.StreamResponse:
        """``POST /metadata/identity/issuecredential``."""
        fault = self._begin(request, "issuecredential")

        async def normal(active: Fault | None) -> web.Response:
            return await self._issue(request, active)

        return await serve(request, self._state, fault, normal, _server_marker(fault))

    async def _issue(self, request: web.Request, fault: Fault | None) -> web.Response:
        try:
            identity = self._common_checks(request, "POST")
            csr = await self._read_body(request)
        except _Rejected as exc:
            return _bad_request(str(exc))
        settings = self._settings
        try:
            public_key = check_csr(
                csr, client_id=identity.client_id, tenant_id=settings.tenant_id, cu_id=settings.cu_id
            )
        except CsrError as exc:
            return _bad_request(f"Invalid CSR: {exc}")
        variant = fault.certificate if fault is not None else None
        seconds = fault.certificate_seconds if fault is not None else 0
        value, certificate = await self._certificate_field(variant, seconds, public_key, identity)
        if certificate is not None:
            self._state.record_certificate(certificate)
        body = {
            "client_id": identity.client_id,
            "tenant_id": settings.tenant_id,
            "certificate": value,
            "identity_type": "UserAssigned" if identity.user_assigned else "SystemAssigned",
            "mtls_authentication_endpoint": self._sts_url(),
        }
        return json_response(200, body)

    def _certificate(
        self,
        public_key: CertificatePublicKeyTypes,
        identity: Identity,
        lifetime: timedelta | None = None,
        not_before: datetime | None = None,
    ) -> x509.Certificate:
        return self._authority.issue_client_certificate(
            public_key,
            client_id=identity.client_id,
            tenant_id=self._settings.tenant_id,
            lifetime=self._settings.certificate_lifetime if lifetime is None else lifetime,
            not_before=not_before,
        )

    async def _certificate_field(
        self, variant: str | None, seconds: int, public_key: rsa.RSAPublicKey, identity: Identity
    ) -> tuple[str | None, x509.Certificate | None]:
        """The ``certificate`` value for a fault's certificate variant (None: the normal one)."""
        if variant == "garbage":
            return _GARBAGE_CERTIFICATE, None
        if variant == "empty":
            return "", None
        if variant == "null":
            return None, None
        key: CertificatePublicKeyTypes = public_key
        lifetime: timedelta | None = None
        not_before: datetime | None = None
        if variant == "expired":
            lifetime = timedelta(hours=-1)
        elif variant == "not_yet_valid":
            not_before = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)
        elif variant == "foreign_key":
            key = (await asyncio.to_thread(new_rsa_key)).public_key()
        elif variant == "ec_key":
            key = new_ec_key().public_key()
        elif variant == "short_lived":
            lifetime = timedelta(seconds=seconds)
        certificate = self._certificate(key, identity, lifetime, not_before)
        der = certificate.public_bytes(serialization.Encoding.DER)
        if variant == "pem":
            return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"), certificate
        if variant == "two_certs":
            second = self._certificate(key, identity).public_bytes(serialization.Encoding.DER)
            return base64.b64encode(der + second).decode("ascii"), certificate
        return base64.b64encode(der).decode("ascii"), certificate

    async def v1_token(self, request: web.Request) -> web.StreamResponse:
        """``GET /metadata/identity/oauth2/token?api-version=...&resource=...``: an MSI v1 bearer token."""
        fault = self._begin(request, "v1_token")

        async def normal(active: Fault | None) -> web.Response:
            try:
                self._hygiene_checks(request, "GET")
                if not request.query.getall("api-version", []):
                    raise _Rejected("Required query variable 'api-version' is missing")
                resource = request.query.get("resource", "")
                if not resource:
                    raise _Rejected("Required audience parameter not specified")
                identity = self._select_identity(request)
            except _Rejected as exc:
                return _bad_request(str(exc))
            return json_response(200, self._v1_body(identity, resource))

        return await serve(request, self._state, fault, normal, _server_marker(fault))

    def _v1_body(self, identity: Identity, resource: str) -> dict[str, str]:
        settings = self._settings
        now = int(time.time())
        lifetime = int(settings.token_lifetime.total_seconds()) - 1
        claims: dict[str, object] = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{settings.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "appid": identity.client_id,
            "oid": identity.object_id,
            "sub": identity.object_id,
            "tid": settings.tenant_id,
            "idtyp": "app",
            "xms_mirid": identity.resource_id,
        }
        return {
            "access_token": mint_access_token(claims, self._token_key, self._state),
            "client_id": identity.client_id,
            "expires_in": str(lifetime),
            "expires_on": str(now + lifetime),
            "ext_expires_in": str(lifetime),
            "not_before": str(now),
            "resource": resource,
            "token_type": "Bearer",
        }

    def _hygiene_checks(self, request: web.Request, method: str) -> None:
        if request.headers.get("Metadata", "").lower() != "true":
            raise _Rejected("Required metadata header not specified")
        if "X-Forwarded-For" in request.headers:
            raise _Rejected("Request with X-Forwarded-For header is not allowed")
        if request.method != method:
            raise _Rejected(f"The request method {request.method} is not supported; use {method}")

    def _common_checks(self, request: web.Request, method: str) -> Identity:
        self._hygiene_checks(request, method)
        versions = request.query.getall("cred-api-version", [])
        if not versions:
            raise _Rejected("Required query variable 'cred-api-version' is missing")
        if versions != ["2.0"]:
            raise _Rejected(f"Invalid cred-api-version {','.join(versions)!r}; the supported version is 2.0")
        return self._select_identity(request)

    def _select_identity(self, request: web.Request) -> Identity:
        given = [(name, value) for name in _SELECTORS for value in request.query.getall(name, [])]
        if not given:
            return self._settings.system_identity
        if len(given) > 1:
            raise _Rejected(
                "Multiple identity selectors specified; use at most one of client_id, object_id, mi_res_id"
            )
        name, value = given[0]
        for identity in self._settings.user_assigned:
            if name == "client_id" and identity.client_id.lower() == value.lower():
                return identity
            if name == "object_id" and identity.object_id.lower() == value.lower():
                return identity
            if name in ("mi_res_id", "msi_res_id") and identity.resource_id.lower() == value.lower():
                return identity
        raise _Rejected(
            f"Identity not found: no user-assigned identity with {name} {value!r} is assigned to the VM"
        )

    async def _read_body(self, request: web.Request) -> bytes:
        try:
            payload: Any = json.loads(await request.read())
        except ValueError as exc:
            raise _Rejected("The request body is not valid JSON") from exc
        if not isinstance(payload, dict):
            raise _Rejected("The request body must be a JSON object")
        token = payload.get("attestation_token")
        if token is not None and not isinstance(token, str):
            raise _Rejected("attestation_token must be a string")
        if self._settings.require_attestation and not token:
            raise _Rejected(_MISSING_ATTESTATION)
        csr = payload.get("csr")
        if not isinstance(csr, str) or not csr:
            raise _Rejected("csr is missing / empty in the issue credential request")
        try:
            return base64.b64decode(csr, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _Rejected("csr must be single-line standard base64 of the DER CSR") from exc


def _server_marker(fault: Fault | None) -> Prepare | None:
    """For a fault: mark the response so the prepare hook applies the fault's ``server_header``."""
    if fault is None:
        return None
    marker = "-" if fault.server_header is None else "=" + fault.server_header

    def mark(response: web.StreamResponse) -> None:
        response.headers[_SERVER_MARKER] = marker

    return mark


async def _apply_server_header(request: web.Request, response: web.StreamResponse) -> None:
    marker = response.headers.popall(_SERVER_MARKER, [])
    if not marker:
        response.headers["Server"] = IMDS_SERVER_HEADER
    elif marker[0] == "-":
        response.headers.popall("Server", None)
    else:
        response.headers["Server"] = marker[0][1:]
