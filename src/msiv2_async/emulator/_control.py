"""The control API on the IMDS listener (plain HTTP, loopback clients only, never counted in the stats).

=======  ========================  ==========================================================================
GET      /_emulator/stats          200, the counters (:attr:`Emulator.stats`)
POST     /_emulator/faults         ``{"endpoint": name, "faults": [fault, ...]}`` → 204; queues the faults
DELETE   /_emulator/faults         204; drops every queued fault
POST     /_emulator/reset          204; counters to zero, no queued faults, no pending handshake rejections
GET      /_emulator/settings       200, the current settings (the keys PUT accepts)
PUT      /_emulator/settings       JSON object with any of the keys below → 204
GET      /_emulator/sentinels      200, ``{"sentinels": [...]}`` (:meth:`Emulator.sentinels`)
=======  ========================  ==========================================================================

A fault is a JSON object with any of the :class:`Fault` fields: ``status`` (int or null), ``headers``
(object of strings), ``body`` (string), ``delay``, ``interval`` (numbers), ``server_header`` (string or
null), ``action``, ``certificate``, ``token`` (strings), ``body_size``, ``certificate_seconds`` (ints) and
``response_fields`` (object; the value ``{"$remove": true}`` deletes that key). Settings:
``certificate_lifetime_seconds`` and ``token_lifetime_seconds`` (numbers, may be negative),
``require_attestation`` (bool), ``sts_tls`` and ``resource_tls`` (one of the TLS modes) and
``reject_client_certificates`` (int ≥ 0: that many next STS handshakes reject the client certificate).
Anything else, or a value of the wrong type, is answered 400 ``{"error": "invalid_request",
"error_description": ...}`` and changes nothing. A client that is not on a loopback address gets 403.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from functools import partial
from typing import Any

from aiohttp import web

from ._http import json_response
from ._models import REMOVE, TLS_MODES, Fault
from ._state import Settings, State

CONTROL_PREFIX = "/_emulator/"

_INTEGER = ((int,), "an integer")
_NUMBER = ((int, float), "a number")
_STRING = ((str,), "a string")
_OBJECT = ((dict,), "a JSON object")

_FAULT_TYPES: dict[str, tuple[tuple[tuple[type, ...], str], bool]] = {
    # field: ((accepted JSON types, their description), null allowed)
    "status": (_INTEGER, True),
    "headers": (_OBJECT, False),
    "body": (_STRING, False),
    "delay": (_NUMBER, False),
    "server_header": (_STRING, True),
    "action": (_STRING, False),
    "interval": (_NUMBER, False),
    "body_size": (_INTEGER, True),
    "certificate": (_STRING, True),
    "certificate_seconds": (_INTEGER, False),
    "response_fields": (_OBJECT, True),
    "token": (_STRING, True),
}


class ControlError(ValueError):
    """A control request is malformed; the message goes into the 400 answer."""


def _typed(name: str, value: object, kind: tuple[tuple[type, ...], str], nullable: bool) -> object:
    if value is None and nullable:
        return None
    types, description = kind
    if isinstance(value, bool) or not isinstance(value, types):
        raise ControlError(f"{name} must be {description}{' or null' if nullable else ''}")
    return value


def fault_from_json(document: object) -> Fault:
    """A :class:`Fault` from its JSON form (see the module docstring); ControlError if malformed."""
    if not isinstance(document, dict):
        raise ControlError("every fault must be a JSON object")
    unknown = sorted(set(document) - set(_FAULT_TYPES))
    if unknown:
        raise ControlError(f"unknown fault field(s): {', '.join(unknown)}")
    arguments: dict[str, Any] = {}
    for name, value in document.items():
        kind, nullable = _FAULT_TYPES[name]
        arguments[name] = _typed(name, value, kind, nullable)
    headers = arguments.get("headers")
    if headers is not None and not all(isinstance(v, str) for v in headers.values()):
        raise ControlError("headers must map names to strings")
    response_fields = arguments.get("response_fields")
    if response_fields is not None:
        arguments["response_fields"] = {
            key: REMOVE if value == {"$remove": True} else value for key, value in response_fields.items()
        }
    try:
        return Fault(**arguments)
    except (TypeError, ValueError) as exc:
        raise ControlError(str(exc)) from exc


def _bad(message: str) -> web.Response:
    return json_response(400, {"error": "invalid_request", "error_description": message})


async def _json_body(request: web.Request) -> object:
    try:
        return json.loads(await request.read())
    except ValueError as exc:
        raise ControlError("the request body must be JSON") from exc


def _is_loopback(address: str | None) -> bool:
    if address is None:
        return False
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def loopback_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse control requests from anything but a loopback address."""
    if request.path.startswith(CONTROL_PREFIX) and not _is_loopback(request.remote):
        return json_response(403, {"error": "forbidden", "error_description": "loopback clients only"})
    return await handler(request)


class Control:
    """Handlers of ``/_emulator/...``; they change the same state the :class:`Emulator` methods change."""

    def __init__(self, settings: Settings, state: State) -> None:
        self._settings = settings
        self._state = state

    def register(self, app: web.Application) -> None:
        """Add the control routes and the loopback guard to the IMDS application."""
        app.middlewares.append(loopback_only)
        routes = (
            ("GET", "stats", self.stats),
            ("POST", "faults", self.add_faults),
            ("DELETE", "faults", self.clear_faults),
            ("POST", "reset", self.reset),
            ("GET", "settings", self.get_settings),
            ("PUT", "settings", self.put_settings),
            ("GET", "sentinels", self.sentinels),
        )
        for method, name, handler in routes:
            app.router.add_route(method, CONTROL_PREFIX + name, self._guard(handler))

    @staticmethod
    def _guard(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except ControlError as exc:
                return _bad(str(exc))

        return guarded

    async def stats(self, request: web.Request) -> web.StreamResponse:
        """``GET /_emulator/stats``: the request counters."""
        return json_response(200, self._state.snapshot())

    async def add_faults(self, request: web.Request) -> web.StreamResponse:
        """``POST /_emulator/faults``: queue faults for one endpoint (all or none)."""
        document = await _json_body(request)
        if not isinstance(document, dict) or set(document) != {"endpoint", "faults"}:
            raise ControlError('the body must be {"endpoint": "<name>", "faults": [...]}')
        endpoint, faults = document["endpoint"], document["faults"]
        if not isinstance(endpoint, str) or not isinstance(faults, list):
            raise ControlError("endpoint must be a string and faults a list")
        parsed = [fault_from_json(item) for item in faults]
        try:
            self._state.queue(endpoint, parsed)
        except ValueError as exc:
            raise ControlError(str(exc)) from exc
        return web.Response(status=204)

    async def clear_faults(self, request: web.Request) -> web.StreamResponse:
        """``DELETE /_emulator/faults``: drop every queued fault."""
        self._state.clear_faults()
        return web.Response(status=204)

    async def reset(self, request: web.Request) -> web.StreamResponse:
        """``POST /_emulator/reset``: counters, queued faults and pending handshake rejections."""
        reset_all(self._state)
        return web.Response(status=204)

    async def get_settings(self, request: web.Request) -> web.StreamResponse:
        """``GET /_emulator/settings``."""
        return json_response(200, current_settings(self._settings, self._state))

    async def put_settings(self, request: web.Request) -> web.StreamResponse:
        """``PUT /_emulator/settings``: validate every given key, then apply them together."""
        document = await _json_body(request)
        if not isinstance(document, dict):
            raise ControlError("the settings must be a JSON object")
        apply_settings(self._settings, self._state, document)
        return web.Response(status=204)

    async def sentinels(self, request: web.Request) -> web.StreamResponse:
        """``GET /_emulator/sentinels``: every secret handed out so far."""
        return json_response(200, {"sentinels": self._state.secret_list()})


def reset_all(state: State) -> None:
    """Counters to zero, queued faults dropped, pending handshake rejections cancelled."""
    state.reset()
    state.clear_faults()
    for endpoint in list(state.pending_rejections):
        state.set_rejections(endpoint, 0)


def current_settings(settings: Settings, state: State) -> dict[str, Any]:
    """The settings as the control API shows them."""
    with state.lock:
        modes = dict(state.tls_modes)
        pending = state.pending_rejections["token"]
    return {
        "certificate_lifetime_seconds": settings.certificate_lifetime.total_seconds(),
        "token_lifetime_seconds": settings.token_lifetime.total_seconds(),
        "require_attestation": settings.require_attestation,
        "sts_tls": modes["token"],
        "resource_tls": modes["resource"],
        "reject_client_certificates": pending,
    }


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ControlError(f"{name} must be a number")
    return float(value)


def apply_settings(settings: Settings, state: State, document: Mapping[str, object]) -> None:
    """Apply control-API settings; nothing changes if any key or value is invalid."""
    known = set(current_settings(settings, state))
    unknown = sorted(set(document) - known)
    if unknown:
        raise ControlError(
            f"unknown setting(s): {', '.join(unknown)}; expected some of {', '.join(sorted(known))}"
        )
    changes: list[Callable[[], None]] = []
    for name, value in document.items():
        if name in ("certificate_lifetime_seconds", "token_lifetime_seconds"):
            lifetime = timedelta(seconds=_number(name, value))
            changes.append(partial(setattr, settings, name[: -len("_seconds")], lifetime))
        elif name == "require_attestation":
            if not isinstance(value, bool):
                raise ControlError("require_attestation must be true or false")
            changes.append(partial(setattr, settings, "require_attestation", value))
        elif name in ("sts_tls", "resource_tls"):
            if not isinstance(value, str):
                raise ControlError(f"{name} must be a string")
            if value not in TLS_MODES:
                raise ControlError(f"{name} must be one of {', '.join(TLS_MODES)}")
            mode = value
            endpoint = "token" if name == "sts_tls" else "resource"
            changes.append(partial(state.set_tls_mode, endpoint, mode))
        else:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ControlError("reject_client_certificates must be an integer >= 0")
            changes.append(partial(state.set_rejections, "token", value))
    for change in changes:
        change()
