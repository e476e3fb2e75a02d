"""Key backends: the interface, discovery through entry points, and selection (the keyring model).

Selection, first match wins:

1. an explicit ``backend=`` argument: a :class:`KeyBackend` instance, a name, or ``module:Class``;
2. ``$MSIV2_ASYNC_BACKEND``: a name, or ``module:Class`` (imported directly, so it works for a backend
   that is not registered as an entry point);
3. the viable backend with the highest :meth:`KeyBackend.priority`, ties broken by name.

Backends are the built-ins (``software``, kept in code so frozen applications without ``dist-info`` still
have one) plus every entry point of the group ``msiv2_async.backends``. With
``MSIV2_ASYNC_DISABLE_PLUGIN_AUTOLOAD=1`` no entry point is loaded: only built-ins, and whatever
``module:Class`` names. A plugin that raises while loading is logged and skipped. A backend is viable
when its ``priority()`` returns a number; it raises :class:`MsiV2UnavailableError` with the reason
when it is not. Discovery and viability are evaluated once per process, on first use (never at import).

A backend that was asked for (argument or environment) and is not viable is an error: there is no
silent fall back to a weaker key.
"""

from __future__ import annotations

import importlib
import math
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from .._errors import (
    BackendError,
    BackendNotFoundError,
    ConfigurationError,
    MsiV2Error,
    MsiV2UnavailableError,
)
from .._logging import get_logger
from ._interface import KeyBackend, TlsSettings
from .software import SoftwareBackend

ENTRY_POINT_GROUP = "msiv2_async.backends"
BACKEND_ENV = "MSIV2_ASYNC_BACKEND"
DISABLE_AUTOLOAD_ENV = "MSIV2_ASYNC_DISABLE_PLUGIN_AUTOLOAD"
CORE_DISTRIBUTION = "msiv2-async"
_BUILT_IN: dict[str, type[KeyBackend]] = {"software": SoftwareBackend}
_TRUE = frozenset({"1", "true", "yes", "on"})
_log = get_logger(__name__)

__all__ = [
    "BACKEND_ENV",
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "BackendInfo",
    "KeyBackend",
    "SoftwareBackend",
    "TlsSettings",
    "available_backends",
    "get_backend",
]


@dataclass(frozen=True)
class BackendInfo:
    """An installed backend: its priority when viable, else the reason it is not.

    ``distribution``/``version`` name the installed distribution that provides it (``None`` when unknown,
    e.g. in a frozen application); ``entry_point`` is the entry point's ``module:Class`` when it was
    discovered through one.
    """

    name: str
    priority: float | None
    reason: str | None = None
    binding_strength: str | None = None
    supports_attestation: bool = False
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None

    @property
    def viable(self) -> bool:
        """True when the backend can be used on this host."""
        return self.priority is not None

    def describe(self) -> str:
        """``name (priority 1, strength software, msiv2-async 0.1.0)`` or ``name (not viable: why)``."""
        source = f", {self.distribution} {self.version or ''}".rstrip() if self.distribution else ""
        if self.viable:
            strength = self.binding_strength or "set per instance"
            return f"{self.name} (priority {self.priority:g}, strength {strength}{source})"
        return f"{self.name} (not viable: {self.reason}{source})"


@dataclass(frozen=True)
class _Candidate:
    """An installed backend class, or a plugin that failed to load (``backend_class`` None)."""

    name: str
    backend_class: type[KeyBackend] | None
    distribution: str | None
    version: str | None
    entry_point: str | None
    load_error: str | None = None


_lock = threading.RLock()
_discovered: dict[bool, tuple[_Candidate, ...]] = {}
_viability: dict[type[Any], tuple[float | None, str | None]] = {}
_imported: dict[str, _Candidate] = {}


def _clear_caches() -> None:
    """Forget discovered plugins and their viability (tests; after installing a plugin at run time)."""
    with _lock:
        _discovered.clear()
        _viability.clear()
        _imported.clear()


def _entry_points() -> Iterable[Any]:
    """The entry points of :data:`ENTRY_POINT_GROUP` (unit tests replace this function)."""
    return metadata.entry_points(group=ENTRY_POINT_GROUP)


def _autoload_disabled(environ: Mapping[str, str]) -> bool:
    return environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() in _TRUE


def _core_version() -> str | None:
    try:
        return metadata.version(CORE_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None


def _dist_of(entry_point: Any) -> tuple[str | None, str | None]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return None, None
    try:
        return str(dist.name), str(dist.version)
    except Exception:  # a broken dist-info must not break discovery
        return None, None


def _load_plugins() -> list[_Candidate]:
    found: dict[str, _Candidate] = {}
    for entry_point in _entry_points():
        name = str(entry_point.name)
        value = str(getattr(entry_point, "value", "")) or None
        distribution, version = _dist_of(entry_point)
        if name in found:
            _log.warning(
                "msiv2_async backend %r is registered twice (%s and %s); using the first",
                name,
                found[name].entry_point,
                value,
            )
            continue
        try:
            loaded = entry_point.load()
        except Exception as exc:
            _log.exception("error loading msiv2_async backend plugin %r (%s); skipped", name, value)
            error = f"could not be loaded ({type(exc).__name__}: {exc})"
            found[name] = _Candidate(name, None, distribution, version, value, error)
            continue
        if name in _BUILT_IN and loaded is not _BUILT_IN[name]:
            _log.warning("ignoring plugin %r (%s): the name belongs to a built-in backend", name, value)
            continue
        found[name] = _Candidate(name, loaded, distribution, version, value)
    return list(found.values())


def _discover(environ: Mapping[str, str]) -> tuple[_Candidate, ...]:
    """Built-ins plus (unless autoloading is off) the entry points, once per process."""
    disabled = _autoload_disabled(environ)
    with _lock:
        cached = _discovered.get(disabled)
        if cached is not None:
            return cached
        plugins = [] if disabled else _load_plugins()
        names = {candidate.name for candidate in plugins}
        built_ins = [
            _Candidate(name, cls, CORE_DISTRIBUTION, _core_version(), None)
            for name, cls in _BUILT_IN.items()
            if name not in names
        ]
        result = tuple(sorted([*built_ins, *plugins], key=lambda c: c.name))
        _discovered[disabled] = result
        return result


def _evaluate(backend_class: type[Any]) -> tuple[float | None, str | None]:
    """``(priority, None)`` when viable, else ``(None, reason)``; once per class and process."""
    with _lock:
        if backend_class in _viability:
            return _viability[backend_class]
    try:
        value = backend_class.priority()
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise TypeError(f"priority() returned {value!r}, not a finite number")
        result: tuple[float | None, str | None] = (float(value), None)
    except MsiV2UnavailableError as exc:
        result = (None, str(exc) or type(exc).__name__)
    except Exception as exc:
        _log.warning("msiv2_async backend %r: priority() failed: %r", backend_class, exc)
        result = (None, f"priority() failed ({type(exc).__name__}: {exc})")
    with _lock:
        return _viability.setdefault(backend_class, result)


def _info(candidate: _Candidate) -> BackendInfo:
    cls = candidate.backend_class
    if cls is None:
        priority, reason = None, candidate.load_error
    else:
        priority, reason = _evaluate(cls)
    return BackendInfo(
        name=candidate.name,
        priority=priority,
        reason=reason,
        binding_strength=getattr(cls, "binding_strength", None),
        supports_attestation=bool(getattr(cls, "supports_attestation", False)),
        distribution=candidate.distribution,
        version=candidate.version,
        entry_point=candidate.entry_point,
    )


def _ranked(infos: Iterable[BackendInfo]) -> list[BackendInfo]:
    return sorted(infos, key=lambda i: (i.priority is None, -(i.priority or 0.0), i.name))


def available_backends(environ: Mapping[str, str] = os.environ) -> list[BackendInfo]:
    """Every installed backend with its viability, best first (plugins that failed to load last)."""
    return _ranked(_info(candidate) for candidate in _discover(environ))


def _installed_summary(infos: Iterable[BackendInfo], environ: Mapping[str, str]) -> str:
    listed = "; ".join(info.describe() for info in _ranked(infos)) or "none"
    if _autoload_disabled(environ):
        listed += f" (plugins are not loaded: ${DISABLE_AUTOLOAD_ENV} is set)"
    return listed


def _import_class(spec: str, origin: str) -> _Candidate:
    """The ``module:Class`` named by ``spec`` (imported once per process)."""
    with _lock:
        cached = _imported.get(spec)
        if cached is None:
            cached = _imported[spec] = _load_class(spec, origin)
        return cached


def _load_class(spec: str, origin: str) -> _Candidate:
    module_name, _, qualname = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name.strip())
        for part in qualname.strip().split("."):
            target = getattr(target, part)
    except Exception as exc:
        raise BackendNotFoundError(
            f"cannot load key backend {spec!r} from {origin}: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(target, type) or not callable(getattr(target, "priority", None)):
        raise BackendNotFoundError(f"{spec!r} from {origin} is not a key backend class")
    distribution = _distribution_of(module_name.strip().split(".")[0])
    return _Candidate(str(getattr(target, "name", spec)), target, distribution, _version(distribution), spec)


def _distribution_of(top_level_module: str) -> str | None:
    try:
        names = metadata.packages_distributions().get(top_level_module) or []
    except Exception:
        return None
    return names[0] if names else None


def _version(distribution: str | None) -> str | None:
    if distribution is None:
        return None
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _instantiate(candidate: _Candidate, info: BackendInfo) -> KeyBackend:
    assert candidate.backend_class is not None
    try:
        backend = candidate.backend_class()
    except MsiV2Error:
        raise
    except Exception as exc:
        raise BackendError(
            f"key backend {candidate.name!r} failed to start: {type(exc).__name__}: {exc}"
        ) from exc
    _log.info(
        "using key backend %r (priority %s, strength %s) from %s %s",
        info.name,
        info.priority,
        info.binding_strength,
        info.distribution or "an unknown distribution",
        info.version or "",
    )
    return backend


def _named(name: str, origin: str, environ: Mapping[str, str]) -> KeyBackend:
    if ":" in name:
        candidate = _import_class(name, origin)
        info = _info(candidate)
    else:
        candidates = {c.name: c for c in _discover(environ)}
        if name not in candidates:
            infos = [_info(c) for c in candidates.values()]
            raise BackendNotFoundError(
                f"key backend {name!r} ({origin}) is not installed; installed: "
                f"{_installed_summary(infos, environ)}"
            )
        candidate = candidates[name]
        info = _info(candidate)
    if not info.viable:
        raise BackendNotFoundError(
            f"key backend {name!r} ({origin}) is not viable here: {info.reason}; "
            "it was asked for by name, so no other backend is used in its place"
        )
    return _instantiate(candidate, info)


def get_backend(
    choice: str | KeyBackend | None = None, environ: Mapping[str, str] = os.environ
) -> KeyBackend:
    """The backend to use: ``choice``, else ``$MSIV2_ASYNC_BACKEND``, else the best viable one.

    ``choice`` and the variable take a name or ``module:Class``; ``choice`` may also be an instance.
    Raises :class:`BackendNotFoundError` (an :class:`MsiV2UnavailableError`) listing what is installed
    and why each is not viable.
    """
    if choice is not None and not isinstance(choice, str):
        if not isinstance(choice, KeyBackend):
            raise ConfigurationError(
                f"backend= must be a backend name or a KeyBackend instance, not {type(choice).__name__}"
            )
        return choice
    if choice is not None and choice.strip():
        return _named(choice.strip(), "backend= argument", environ)
    from_env = environ.get(BACKEND_ENV, "").strip()
    if from_env:
        return _named(from_env, f"${BACKEND_ENV}", environ)
    candidates = {c.name: c for c in _discover(environ)}
    infos = _ranked(_info(c) for c in candidates.values())
    for info in infos:
        if info.viable:
            return _instantiate(candidates[info.name], info)
    raise BackendNotFoundError(
        f"no viable key backend; installed: {_installed_summary(infos, environ)}. "
        f"Install a backend for this host, or name one with ${BACKEND_ENV}"
    )
