"""The emulated IMDS (plain HTTP): ``getplatformmetadata``, ``issuecredential`` and ``/_emulator/stats``."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization

from ._ca import Authority
from ._csr_check import CsrError, check_csr
from ._http import fault_response, json_response
from ._models import ATTESTATION_ENDPOINT, IMDS_SERVER_HEADER, Identity
from ._state import Settings, State

# A fault's server_header choice travels to the response hook in this private header: "-" drops the
# Server header, "=<value>" sets it. The hook always removes the marker before the response is sent.
_SERVER_MARKER = "X-Msiv2-Emulator-Server"
_SELECTORS = ("client_id", "object_id", "mi_res_id", "msi_res_id")
_MISSING_ATTESTATION = "Attestation Token is missing / empty in the issue credential request"


class _Rejected(Exception):
    """A request failed validation: answer 400 invalid_request with this description."""


def _bad_request(description: str) -> web.Response:
    return json_response(400, {"error": "invalid_request", "error_description": description})


class Imds:
    """Request handlers of the IMDS listener."""

    def __init__(
        self, settings: Settings, state: State, authority: Authority, sts_url: Callable[[], str]
    ) -> None:
        self._settings = settings
        self._state = state
        self._authority = authority
        self._sts_url = sts_url

    def application(self) -> web.Application:
        """The aiohttp application; every response gets the IMDS ``Server`` header (or a fault's)."""
        app = web.Application()
        app.router.add_route("*", "/metadata/identity/getplatformmetadata", self.getplatformmetadata)
        app.router.add_route("*", "/metadata/identity/issuecredential", self.issuecredential)
        app.router.add_get("/_emulator/stats", self.stats)
        app.on_response_prepare.append(_apply_server_header)
        return app

    async def stats(self, request: web.Request) -> web.Response:
        """``GET /_emulator/stats``: the request counters (not itself counted)."""
        return json_response(200, self._state.snapshot())

    async def getplatformmetadata(self, request: web.Request) -> web.Response:
        """``GET /metadata/identity/getplatformmetadata``."""
        fault = self._state.begin("getplatformmetadata")
        if fault is not None:
            return _mark_server(await fault_response(fault), fault.server_header)
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

    async def issuecredential(self, request: web.Request) -> web.Response:
        """``POST /metadata/identity/issuecredential``."""
        fault = self._state.begin("issuecredential")
        if fault is not None:
            return _mark_server(await fault_response(fault), fault.server_header)
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
        certificate = self._authority.issue_client_certificate(
            public_key,
            client_id=identity.client_id,
            tenant_id=settings.tenant_id,
            lifetime=settings.certificate_lifetime,
        )
        self._state.record_certificate(certificate)
        der = certificate.public_bytes(serialization.Encoding.DER)
        body = {
            "client_id": identity.client_id,
            "tenant_id": settings.tenant_id,
            "certificate": base64.b64encode(der).decode("ascii"),
            "identity_type": "UserAssigned" if identity.user_assigned else "SystemAssigned",
            "mtls_authentication_endpoint": self._sts_url(),
        }
        return json_response(200, body)

    def _common_checks(self, request: web.Request, method: str) -> Identity:
        if request.headers.get("Metadata", "").lower() != "true":
            raise _Rejected("Required metadata header not specified")
        if "X-Forwarded-For" in request.headers:
            raise _Rejected("Request with X-Forwarded-For header is not allowed")
        if request.method != method:
            raise _Rejected(f"The request method {request.method} is not supported; use {method}")
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


def _mark_server(response: web.Response, server_header: str | None) -> web.Response:
    response.headers[_SERVER_MARKER] = "-" if server_header is None else "=" + server_header
    return response


async def _apply_server_header(request: web.Request, response: web.StreamResponse) -> None:
    marker = response.headers.popall(_SERVER_MARKER, [])
    if not marker:
        response.headers["Server"] = IMDS_SERVER_HEADER
    elif marker[0] == "-":
        response.headers.popall("Server", None)
    else:
        response.headers["Server"] = marker[0][1:]
