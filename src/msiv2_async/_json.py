"""Strict JSON for untrusted responses: no NaN/Infinity, no duplicate keys, bounded size and depth."""

from __future__ import annotations

import json
from typing import Any

from ._errors import MalformedResponseError

MAX_BODY_BYTES = 1024 * 1024
MAX_DEPTH = 16


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _nesting_exceeds_limit(value: Any) -> bool:
    """Whether the parsed ``value`` nests containers deeper than :data:`MAX_DEPTH` (walks containers only)."""
    level: list[Any] = [value]
    for _ in range(MAX_DEPTH):
        level = [
            child
            for container in level
            for child in (container.values() if isinstance(container, dict) else container)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


def parse_object(body: bytes, *, endpoint: str) -> dict[str, Any]:
    """Parse ``body`` as one JSON object or raise :class:`MalformedResponseError` naming ``endpoint``."""
    if len(body) > MAX_BODY_BYTES:
        raise MalformedResponseError(f"{endpoint} response exceeds {MAX_BODY_BYTES} bytes", endpoint=endpoint)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedResponseError(f"{endpoint} response is not UTF-8", endpoint=endpoint) from None
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, ValueError) and "key" in str(exc) else "invalid JSON"
        raise MalformedResponseError(
            f"{endpoint} response is not valid JSON ({reason})", endpoint=endpoint
        ) from None
    if not isinstance(value, dict):
        raise MalformedResponseError(f"{endpoint} response is not a JSON object", endpoint=endpoint)
    if _nesting_exceeds_limit(value):
        raise MalformedResponseError(f"{endpoint} response nests deeper than {MAX_DEPTH}", endpoint=endpoint)
    return value


def require_str(obj: dict[str, Any], name: str, *, endpoint: str) -> str:
    """The non-empty string member ``name`` of ``obj``."""
    value = obj.get(name)
    if not isinstance(value, str) or not value.strip():
        problem = "is missing" if value is None else "must be a non-empty string"
        raise MalformedResponseError(f"{endpoint} response field {name!r} {problem}", endpoint=endpoint)
    return value


def optional_str(obj: dict[str, Any], name: str, *, endpoint: str) -> str | None:
    """The string member ``name`` of ``obj``, ``None`` when absent, null or empty."""
    value = obj.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedResponseError(
            f"{endpoint} response field {name!r} must be a string", endpoint=endpoint
        )
    return value


def seconds(obj: dict[str, Any], name: str, *, endpoint: str, required: bool, minimum: int = 0) -> int | None:
    """A duration: a JSON integer or a string of digits (the STS sends both), at least ``minimum``."""
    value = obj.get(name)
    if value is None:
        if required:
            raise MalformedResponseError(f"{endpoint} response field {name!r} is missing", endpoint=endpoint)
        return None
    number: int | None = None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**10:
        number = value
    if number is None or number < minimum:
        raise MalformedResponseError(
            f"{endpoint} response field {name!r} must be an integer number of seconds of at least {minimum}",
            endpoint=endpoint,
        )
    return number
