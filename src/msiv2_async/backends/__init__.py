"""Key backends: the interface, discovery through entry points, and selection.

Selection (the keyring model): an explicit ``backend=`` (name or instance), else
``$MSIV2_ASYNC_BACKEND``, else the viable backend with the highest priority. A backend that was
asked for by name and is not viable is an error: there is no silent fall back to a weaker key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points

from .._errors import BackendNotFoundError, MsiV2UnavailableError
from .._logging import get_logger
from ._interface import KeyBackend, TlsSettings
from .software import SoftwareBackend

ENTRY_POINT_GROUP = "msiv2_async.backends"
BACKEND_ENV = "MSIV2_ASYNC_BACKEND"
_BUILT_IN: dict[str, type[KeyBackend]] = {"software": SoftwareBackend}
_log = get_logger(__name__)

__all__ = [
    "BackendInfo",
    "KeyBackend",
    "SoftwareBackend",
    "TlsSettings",
    "available_backends",
    "get_backend",
]


@dataclass(frozen=True)
class BackendInfo:
    """An installed backend: its priority when viable, else the reason it is not."""

    name: str
    priority: float | None
    reason: str | None = None

    @property
    def viable(self) -> bool:
        """True when the backend can be used on this host."""
        return self.priority is not None


def _installed() -> dict[str, type[KeyBackend]]:
    found: dict[str, type[KeyBackend]] = dict(_BUILT_IN)
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name in found:
            continue
        try:
            found[entry_point.name] = entry_point.load()
        except Exception:
            _log.exception("error loading msiv2_async backend plugin %r", entry_point.name)
    return found


def _info(name: str, backend_class: type[KeyBackend]) -> BackendInfo:
    try:
        return BackendInfo(name, float(backend_class.priority()))
    except MsiV2UnavailableError as exc:
        return BackendInfo(name, None, str(exc))


def available_backends() -> list[BackendInfo]:
    """Every installed backend with its viability, best first."""
    infos = [_info(name, cls) for name, cls in _installed().items()]
    return sorted(infos, key=lambda i: (i.priority is None, -(i.priority or 0.0), i.name))


def get_backend(
    choice: str | KeyBackend | None = None, environ: Mapping[str, str] = os.environ
) -> KeyBackend:
    """The backend to use: ``choice``, else ``$MSIV2_ASYNC_BACKEND``, else the best viable one."""
    if choice is not None and not isinstance(choice, str):
        return choice
    name = choice or environ.get(BACKEND_ENV, "").strip() or None
    installed = _installed()
    if name is not None:
        if name not in installed:
            raise BackendNotFoundError(
                f"key backend {name!r} is not installed; installed: {', '.join(sorted(installed)) or 'none'}"
            )
        info = _info(name, installed[name])
        if not info.viable:
            raise BackendNotFoundError(f"key backend {name!r} is not viable here: {info.reason}")
        return installed[name]()
    ranked = available_backends()
    for info in ranked:
        if info.viable:
            return installed[info.name]()
    reasons = "; ".join(f"{i.name}: {i.reason}" for i in ranked)
    raise BackendNotFoundError(f"no viable key backend ({reasons})")
