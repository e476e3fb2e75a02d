"""IMDS requests and the validation of their answers (PROTOCOL.md §1, §2, §4)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

from ._effects import HttpRequest, HttpResponse
from ._errors import ConfigurationError, ImdsError, ImdsV2NotSupportedError, MalformedResponseError
from ._json import optional_str, parse_object, require_str
from ._models import CuId, IssuedCredential, ManagedIdentity, PlatformMetadata
from ._redact import excerpt

DEFAULT_IMDS_ENDPOINT = "http://169.254.169.254"
IMDS_ENDPOINT_ENV = "AZURE_POD_IDENTITY_AUTHORITY_HOST"
METADATA_PATH = "/metadata/identity/getplatformmetadata"
ISSUE_CREDENTIAL_PATH = "/metadata/identity/issuecredential"
API_VERSION = "2.0"
METADATA = "getplatformmetadata"
ISSUE_CREDENTIAL = "issuecredential"

V2_SELECTOR = {"client_id": "client_id", "object_id": "object_id", "resource_id": "mi_res_id"}
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
USER_AGENT = "msiv2-async"


def is_guid(value: str) -> bool:
    """True for the 8-4-4-4-12 hexadecimal form."""
    return _GUID.fullmatch(value) is not None


def resolve_endpoint(explicit: str | None, environ: Mapping[str, str]) -> str:
    """The IMDS base URL: the argument, else ``$AZURE_POD_IDENTITY_AUTHORITY_HOST``, else 169.254.169.254.

    Like MSAL.NET, any path in the value is discarded; only scheme, host and port are kept.
    """
    raw = explicit or environ.get(IMDS_ENDPOINT_ENV, "").strip() or DEFAULT_IMDS_ENDPOINT
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        raise ConfigurationError(f"IMDS endpoint {raw!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"IMDS endpoint {raw!r} must be an absolute http(s) URL such as {DEFAULT_IMDS_ENDPOINT}"
        )
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise ConfigurationError(f"IMDS endpoint {raw!r} must not carry credentials, a query or a fragment")
    return f"{parts.scheme}://{parts.netloc}"


def selector_query(identity: ManagedIdentity, names: Mapping[str, str]) -> list[tuple[str, str]]:
    """The identity's query parameter under its wire name in ``names`` (none for system-assigned)."""
    if identity.selector is None or identity.value is None:
        return []
    return [(names[identity.selector], identity.value)]


def v2_url(base: str, path: str, identity: ManagedIdentity) -> str:
    """An IMDS v2 URL: ``cred-api-version=2.0`` first, then the identity selector."""
    query = [("cred-api-version", API_VERSION), *selector_query(identity, V2_SELECTOR)]
    return f"{base}{path}?{urlencode(query)}"


def _headers(correlation_id: str) -> dict[str, str]:
    return {"Metadata": "true", "x-ms-client-request-id": correlation_id, "User-Agent": USER_AGENT}


def metadata_request(base: str, identity: ManagedIdentity, correlation_id: str) -> HttpRequest:
    """``GET getplatformmetadata`` for ``identity``."""
    return HttpRequest(
        target="imds",
        endpoint=METADATA,
        method="GET",
        url=v2_url(base, METADATA_PATH, identity),
        headers=_headers(correlation_id),
        connect_timeout=2.0,
        read_timeout=10.0,
    )


def issue_credential_request(
    base: str, identity: ManagedIdentity, correlation_id: str, csr: str, attestation_token: str | None
) -> HttpRequest:
    """``POST issuecredential`` with the CSR and, only when the key was attested, the attestation token."""
    payload = {"csr": csr}
    if attestation_token:
        payload["attestation_token"] = attestation_token
    return HttpRequest(
        target="imds",
        endpoint=ISSUE_CREDENTIAL,
        method="POST",
        url=v2_url(base, ISSUE_CREDENTIAL_PATH, identity),
        headers={**_headers(correlation_id), "Content-Type": "application/json"},
        body=json.dumps(payload, separators=(",", ":")).encode("ascii"),
        connect_timeout=2.0,
        read_timeout=30.0,
    )


def check_response(response: HttpResponse, *, endpoint: str, correlation_id: str) -> None:
    """Reject answers that did not come from IMDS, then any non-200 status."""
    check_server(response, endpoint=endpoint, correlation_id=correlation_id)
    if response.status != 200:
        raise status_error(response, endpoint=endpoint, correlation_id=correlation_id)


_STATUS_HINTS = {
    400: "check the identity selection and that the identity is assigned to this VM",
    404: "the identity may not be assigned yet, or this host does not offer Managed Identity v2",
    410: "IMDS is being updated; it answers again within about 70 s",
    429: "IMDS is throttling this VM; reduce concurrent token requests (share one client)",
}


def check_server(response: HttpResponse, *, endpoint: str, correlation_id: str) -> None:
    """Reject an answer whose ``Server`` header does not name IMDS (a proxy or another service)."""
    server = response.headers.get("server", "")
    if "imds" not in server.lower():
        raise ImdsError(
            f"the answer to {endpoint} did not come from IMDS (Server header {server[:40]!r}); "
            "check that no proxy or other service is answering for the IMDS address",
            endpoint=endpoint,
            status=response.status,
            correlation_id=correlation_id,
        )


def status_error(response: HttpResponse, *, endpoint: str, correlation_id: str) -> ImdsError:
    """The typed error for a non-200 IMDS answer (404 on metadata: v2 not supported here)."""
    error_type = ImdsV2NotSupportedError if (endpoint == METADATA and response.status == 404) else ImdsError
    if error_type is ImdsV2NotSupportedError:
        hint = "this host does not offer Managed Identity v2 (IMDS answered 404)"
    elif response.status >= 500:
        hint = "IMDS is unavailable or restarting; try again shortly"
    else:
        hint = _STATUS_HINTS.get(response.status, "IMDS refused the request")
    return error_type(
        f"IMDS {endpoint} failed: HTTP {response.status}: {excerpt(response.body)} ({hint}; "
        f"x-ms-client-request-id {correlation_id})",
        endpoint=endpoint,
        status=response.status,
        correlation_id=correlation_id,
    )


def _guid_field(obj: dict[str, object], name: str, endpoint: str) -> str:
    value = require_str(obj, name, endpoint=endpoint)
    if not is_guid(value):
        raise MalformedResponseError(f"{endpoint} response field {name!r} is not a GUID", endpoint=endpoint)
    return value


def parse_metadata(response: HttpResponse) -> PlatformMetadata:
    """Validate ``getplatformmetadata``: GUID ids, a cuId object with vmId or vmssId, an https MAA URL."""
    obj = parse_object(response.body, endpoint=METADATA)
    raw_cu_id = obj.get("cuId")
    if not isinstance(raw_cu_id, dict):
        raise MalformedResponseError(f"{METADATA} response field 'cuId' must be an object", endpoint=METADATA)
    cu_id = CuId(
        vm_id=optional_str(raw_cu_id, "vmId", endpoint=METADATA),
        vmss_id=optional_str(raw_cu_id, "vmssId", endpoint=METADATA),
    )
    if cu_id.vm_id is None and cu_id.vmss_id is None:
        raise MalformedResponseError(
            f"{METADATA} response 'cuId' has neither vmId nor vmssId", endpoint=METADATA
        )
    attestation_endpoint = require_str(obj, "attestationEndpoint", endpoint=METADATA)
    try:
        parts = urlsplit(attestation_endpoint)
        parts.port  # noqa: B018 - raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        parts = urlsplit("")
    if parts.scheme != "https" or not parts.hostname:
        raise MalformedResponseError(
            f"{METADATA} response field 'attestationEndpoint' is not an absolute https URL", endpoint=METADATA
        )
    return PlatformMetadata(
        client_id=_guid_field(obj, "clientId", METADATA),
        tenant_id=_guid_field(obj, "tenantId", METADATA),
        cu_id=cu_id,
        attestation_endpoint=attestation_endpoint,
    )


def _strict_base64(value: str, endpoint: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedResponseError(
            f"{endpoint} response field 'certificate' is not strict base64", endpoint=endpoint
        ) from None


def parse_issued_credential(response: HttpResponse) -> IssuedCredential:
    """Validate ``issuecredential``: all five fields, GUID ids, strict base64 DER certificate."""
    obj = parse_object(response.body, endpoint=ISSUE_CREDENTIAL)
    certificate = require_str(obj, "certificate", endpoint=ISSUE_CREDENTIAL)
    return IssuedCredential(
        client_id=_guid_field(obj, "client_id", ISSUE_CREDENTIAL),
        tenant_id=_guid_field(obj, "tenant_id", ISSUE_CREDENTIAL),
        certificate_der=_strict_base64(certificate, ISSUE_CREDENTIAL),
        identity_type=require_str(obj, "identity_type", endpoint=ISSUE_CREDENTIAL),
        mtls_authentication_endpoint=require_str(
            obj, "mtls_authentication_endpoint", endpoint=ISSUE_CREDENTIAL
        ),
    )
