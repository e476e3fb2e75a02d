"""MSI v1 (bearer tokens straight from IMDS) and the capability probes (PROTOCOL.md §2.3, §7)."""

from __future__ import annotations

from urllib.parse import urlencode

from ._effects import HttpRequest, HttpResponse
from ._errors import MalformedResponseError
from ._imds import METADATA_PATH, USER_AGENT, selector_query, v2_url
from ._json import parse_object, require_str, seconds
from ._models import ManagedIdentity, TokenResponse

V1_TOKEN = "v1_token"
PROBE_V2 = "probe_v2"
PROBE_V1 = "probe_v1"
V1_PATH = "/metadata/identity/oauth2/token"
V1_API_VERSION = "2018-02-01"
BEARER = "Bearer"
_V1_SELECTOR = {"client_id": "client_id", "object_id": "object_id", "resource_id": "msi_res_id"}


def resource_of(scope: str) -> str:
    """The v1 ``resource`` of a normalized ``.default`` scope."""
    return scope.removesuffix("/.default")


def token_request(base: str, identity: ManagedIdentity, scope: str, correlation_id: str) -> HttpRequest:
    """``GET /metadata/identity/oauth2/token`` for ``scope``'s resource (``msi_res_id`` for resource ids)."""
    query = [
        ("api-version", V1_API_VERSION),
        ("resource", resource_of(scope)),
        *selector_query(identity, _V1_SELECTOR),
    ]
    return HttpRequest(
        target="imds",
        endpoint=V1_TOKEN,
        method="GET",
        url=f"{base}{V1_PATH}?{urlencode(query)}",
        headers={"Metadata": "true", "x-ms-client-request-id": correlation_id, "User-Agent": USER_AGENT},
        connect_timeout=2.0,
        read_timeout=10.0,
    )


def parse_token(response: HttpResponse) -> TokenResponse:
    """Validate a v1 answer: ``access_token``, ``token_type`` Bearer, ``expires_in`` (digits or integer)."""
    obj = parse_object(response.body, endpoint=V1_TOKEN)
    token_type = require_str(obj, "token_type", endpoint=V1_TOKEN)
    if token_type.lower() != BEARER.lower():
        raise MalformedResponseError(
            f"IMDS v1 returned token_type {token_type[:20]!r} where 'Bearer' was expected", endpoint=V1_TOKEN
        )
    expires_in = seconds(obj, "expires_in", endpoint=V1_TOKEN, required=True, minimum=1)
    assert expires_in is not None
    return TokenResponse(
        access_token=require_str(obj, "access_token", endpoint=V1_TOKEN),
        token_type=BEARER,
        expires_in=expires_in,
        refresh_in=seconds(obj, "refresh_in", endpoint=V1_TOKEN, required=False),
    )


def probe_requests(
    base: str, identity: ManagedIdentity, correlation_id: str
) -> tuple[HttpRequest, HttpRequest]:
    """The v2 and v1 probes: deliberately without ``Metadata``, so a real IMDS answers 400."""
    headers = {"x-ms-client-request-id": correlation_id, "User-Agent": USER_AGENT}
    v1_query = [("api-version", V1_API_VERSION), *selector_query(identity, _V1_SELECTOR)]

    def probe(endpoint: str, url: str) -> HttpRequest:
        return HttpRequest("imds", endpoint, "GET", url, headers, connect_timeout=1.0, read_timeout=3.0)

    return (
        probe(PROBE_V2, v2_url(base, METADATA_PATH, identity)),
        probe(PROBE_V1, f"{base}{V1_PATH}?{urlencode(v1_query)}"),
    )
