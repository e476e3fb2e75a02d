"""Response helpers shared by the three emulated services."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

JSON_CONTENT_TYPE = "application/json"


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    """A compact JSON body with ``Content-Type: application/json; charset=utf-8``."""
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return web.Response(
        status=status, body=body, content_type=JSON_CONTENT_TYPE, charset="utf-8", headers=headers
    )


def oauth_error(status: int, error: str, code: int, description: str) -> web.Response:
    """An Entra-style OAuth error body: ``error``, ``AADSTS<code>: ...`` description, ``error_codes``."""
    return json_response(
        status,
        {"error": error, "error_description": f"AADSTS{code}: {description}", "error_codes": [code]},
    )


def peer_certificate(request: web.Request) -> bytes | None:
    """DER of the TLS client certificate presented on this connection, or None."""
    transport = request.transport
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der: bytes | None = ssl_object.getpeercert(binary_form=True)
    return der
