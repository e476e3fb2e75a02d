"""Response helpers shared by the three emulated services."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from ._models import Fault

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


async def fault_response(fault: Fault) -> web.Response:
    """Wait ``fault.delay`` seconds, then build the scripted response (``server_header`` is not applied)."""
    if fault.delay > 0:
        await asyncio.sleep(fault.delay)
    body = fault.body.encode("utf-8") if isinstance(fault.body, str) else bytes(fault.body)
    response = web.Response(status=fault.status, body=body)
    for name, value in fault.headers.items():
        response.headers[name] = value
    if body and not any(name.lower() == "content-type" for name in fault.headers):
        try:
            json.loads(body)
        except ValueError:
            response.headers["Content-Type"] = "text/plain; charset=utf-8"
        else:
            response.headers["Content-Type"] = "application/json; charset=utf-8"
    return response


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
