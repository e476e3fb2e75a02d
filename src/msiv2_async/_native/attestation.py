"""AttestationClientLib (MAA KeyGuard attestation): locating the DLL, and one serialised attest call.

The library is Microsoft's and is never shipped here. :func:`locate` finds it in this order, first
existing file wins (NATIVE.md §4.6 and the seed samples):

1. an explicit path argument (a file, or a folder holding it) — must exist;
2. ``$MSIV2_ASYNC_ATTESTATION_LIB``, then ``$ATTESTATION_CLIENTLIB_PATH`` (file or folder);
3. ``.\\native\\AttestationClientLib.dll`` and ``.\\AttestationClientLib.dll`` (current directory,
   as the PowerShell sample);
4. ``%USERPROFILE%\\Downloads\\AttestationClientLib.dll``;
5. the NuGet global packages folder (``$NUGET_PACKAGES`` or ``%USERPROFILE%\\.nuget\\packages``):
   ``microsoft.azure.security.keyguardattestation\\<newest version>\\runtimes\\win-x64\\native\\``;
6. in the Linux test mode only: the stand-in directory.

It is then loaded by absolute path, so its own folder, python.exe's folder and System32 are searched
for its dependencies — the VC++ 2015-2022 runtime (``MSVCP140.dll``, ``VCRUNTIME140.dll``,
``VCRUNTIME140_1.dll``), checked before loading (NATIVE.md §4.1).

The DLL keeps its logger in unsynchronised process-global state, so every call runs under one
process-wide lock: ``InitAttestationLib`` → ``AttestKeyGuardImportKey`` → ``FreeAttestationToken`` →
``UninitAttestationLib``. Its log callback goes to the ``msiv2_async.native.attestation`` logger,
with anything token-like redacted.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

from .._redact import redact
from . import _loader
from .errors import AttestationError, NativeLibraryError

ffi = _loader.ffi

ATTESTATION_LIB_ENV = "MSIV2_ASYNC_ATTESTATION_LIB"
LEGACY_ATTESTATION_LIB_ENV = "ATTESTATION_CLIENTLIB_PATH"
NUGET_PACKAGE_ID = "microsoft.azure.security.keyguardattestation"
VC_RUNTIME_DLLS = ("MSVCP140.dll", "VCRUNTIME140.dll", "VCRUNTIME140_1.dll")
EMPTY_JWT_RESPONSE = -31

_PROCESS_LOCK = threading.Lock()
_log = logging.getLogger("msiv2_async.native.attestation")
_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}
_callback: Any = None
_callback_lock = threading.Lock()


class AttestationLibraryNotFoundError(NativeLibraryError):
    """``AttestationClientLib.dll`` is in none of the searched places (listed in ``searched``)."""


def library_file_name(environ: Mapping[str, str] = os.environ) -> str:
    """``AttestationClientLib.dll``, or the stand-in's file name in the Linux test mode."""
    return _loader.ATTESTATION_STANDIN if _loader.standin_directory(environ) else _loader.ATTESTATION_DLL


def _version_key(name: str) -> tuple[tuple[int, ...], int, str]:
    release, _, prerelease = name.partition("-")
    numbers = tuple(int(part) if part.isdigit() else -1 for part in release.split("."))
    return numbers, 0 if prerelease else 1, prerelease


def _nuget_candidates(environ: Mapping[str, str], home: str, file_name: str) -> list[str]:
    root = environ.get("NUGET_PACKAGES") or os.path.join(home, ".nuget", "packages")
    package = os.path.join(root, NUGET_PACKAGE_ID)
    try:
        versions = sorted(os.listdir(package), key=_version_key, reverse=True)
    except OSError:
        versions = []
    found = [os.path.join(package, v, "runtimes", "win-x64", "native", file_name) for v in versions]
    return found or [os.path.join(package, "<version>", "runtimes", "win-x64", "native", file_name)]


def _as_file(path: str, file_name: str) -> str:
    path = os.path.abspath(os.path.expanduser(path))
    return os.path.join(path, file_name) if os.path.isdir(path) else path


def candidates(
    explicit: str | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
    cwd: str | None = None,
    file_name: str | None = None,
) -> list[str]:
    """Every absolute path :func:`locate` tries, in order."""
    file_name = file_name or library_file_name(environ)
    cwd = os.path.abspath(cwd or os.getcwd())
    home = environ.get("USERPROFILE") or environ.get("HOME") or os.path.expanduser("~")
    paths: list[str] = []
    if explicit:
        paths.append(_as_file(explicit, file_name))
    for variable in (ATTESTATION_LIB_ENV, LEGACY_ATTESTATION_LIB_ENV):
        if environ.get(variable, "").strip():
            paths.append(_as_file(environ[variable].strip(), file_name))
    paths += [os.path.join(cwd, "native", file_name), os.path.join(cwd, file_name)]
    paths.append(os.path.join(home, "Downloads", file_name))
    paths += _nuget_candidates(environ, home, file_name)
    standins = _loader.standin_directory(environ)
    if standins:
        paths.append(os.path.join(standins, file_name))
    return paths


def locate(
    explicit: str | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
    cwd: str | None = None,
    file_name: str | None = None,
    exists: Callable[[str], bool] = os.path.isfile,
) -> str:
    """The absolute path of the attestation library; :class:`AttestationLibraryNotFoundError` if absent."""
    paths = candidates(explicit, environ=environ, cwd=cwd, file_name=file_name)
    if explicit and not exists(paths[0]):
        raise AttestationLibraryNotFoundError(f"the attestation library {paths[0]} does not exist")
    for path in paths:
        if exists(path):
            return path
    raise AttestationLibraryNotFoundError(
        "AttestationClientLib.dll was not found (it is Microsoft's and not shipped with msiv2-async: "
        f"get it from the NuGet package Microsoft.Azure.Security.KeyGuardAttestation and point "
        f"${ATTESTATION_LIB_ENV} at it)",
        searched=paths,
    )


def missing_vc_runtime(
    library_path: str,
    *,
    search_dirs: tuple[str, ...] | None = None,
    exists: Callable[[str], bool] = os.path.isfile,
    environ: Mapping[str, str] = os.environ,
) -> list[str]:
    """The VC++ runtime DLLs found in none of the folders the safe DLL search uses."""
    if search_dirs is None:
        system32 = os.path.join(environ.get("SystemRoot", r"C:\Windows"), "System32")
        search_dirs = (os.path.dirname(library_path), os.path.dirname(sys.executable), system32)
    return [name for name in VC_RUNTIME_DLLS if not any(exists(os.path.join(d, name)) for d in search_dirs)]


def _text(value: Any) -> str:
    if value == ffi.NULL:
        return ""
    raw = ffi.string(value)
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _route_log(ctx: Any, tag: Any, level: int, function: Any, line: int, message: Any) -> None:
    _log.log(
        _LEVELS.get(level, logging.DEBUG),
        "%s %s:%d %s",
        _text(tag) or "AttestationClientLib",
        _text(function),
        line,
        redact(_text(message)),
    )


def _swallow(exc_type: Any, exc: BaseException | None, traceback: Any) -> None:
    """A log callback must never raise into the DLL."""


def log_callback() -> Any:
    """The one ``AttestationLogFunc`` of the process (kept alive for the life of the process)."""
    global _callback
    with _callback_lock:
        if _callback is None:
            _callback = ffi.callback("AttestationLogFunc", _route_log, onerror=_swallow)
        return _callback


class AttestationLibrary:
    """The loaded AttestationClientLib; :meth:`attest_keyguard_key` is safe to call from any thread."""

    def __init__(self, path: str, environ: Mapping[str, str] = os.environ) -> None:
        path = os.path.abspath(path)
        if _loader.is_windows():
            missing = missing_vc_runtime(path, environ=environ)
            if missing:
                raise NativeLibraryError(
                    f"AttestationClientLib needs the Microsoft Visual C++ 2015-2022 x64 runtime, and "
                    f"{', '.join(missing)} is missing: install the VC++ x64 redistributable or copy the "
                    f"DLLs next to {path}"
                )
        self.path = path
        self.lib = _loader.load(path)

    @classmethod
    def find(cls, explicit: str | None = None, environ: Mapping[str, str] = os.environ) -> AttestationLibrary:
        """Locate (see :func:`locate`) and load the library."""
        return cls(locate(explicit, environ=environ), environ)

    def attest_keyguard_key(self, endpoint: str, key_handle: int, client_id: str) -> str:
        """An MAA JWT for the live KeyGuard key ``key_handle`` (borrowed for the call); raises on failure."""
        endpoint_bytes = endpoint.encode("utf-8")
        client_id_bytes = client_id.encode("utf-8")
        token: str | None = None
        with _PROCESS_LOCK:
            info = ffi.new("AttestationLogInfo *", {"Log": log_callback(), "Ctx": ffi.NULL})
            result = self.lib.InitAttestationLib(info)
            if result != 0:
                raise AttestationError("InitAttestationLib", result)
            out = ffi.new("char **")
            try:
                result = self.lib.AttestKeyGuardImportKey(
                    endpoint_bytes, ffi.NULL, ffi.NULL, key_handle, out, client_id_bytes
                )
                if result == 0 and out[0] != ffi.NULL:
                    token = _text(out[0])
            finally:
                if out[0] != ffi.NULL:
                    self.lib.FreeAttestationToken(out[0])
                self.lib.UninitAttestationLib()
        if result != 0:
            raise AttestationError("AttestKeyGuardImportKey", result, f"endpoint {endpoint}")
        if not token or not re.fullmatch(r"[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*", token):
            raise AttestationError("AttestKeyGuardImportKey", EMPTY_JWT_RESPONSE, "no JWT was returned")
        return token
