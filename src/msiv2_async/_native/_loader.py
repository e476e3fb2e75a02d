"""Loading the DLLs by absolute path, and the Linux stand-in mode.

On Windows the system DLLs come from ``%SystemRoot%\\System32`` (an absolute path makes cffi use
``LoadLibraryExW`` with the safe search flags: the DLL's own folder, System32, never PATH or the
current directory). Elsewhere the bindings run only in the documented test mode: with
``MSIV2_ASYNC_NATIVE_STANDINS=<dir>`` they load the C stand-ins built into ``<dir>`` by
``tests/native/standins/build.py`` (``libncrypt.so``, ``libcrypt32.so``, ``libwinhttp.so``,
``libAttestationClientLib.so``) through the very same cdefs.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Mapping
from typing import Any

from ._ffi_abi import ffi
from .errors import NativeLibraryError

STANDINS_ENV = "MSIV2_ASYNC_NATIVE_STANDINS"
SYSTEM_DLLS = {"ncrypt": "ncrypt.dll", "crypt32": "crypt32.dll", "winhttp": "winhttp.dll"}
STANDIN_FILES = {"ncrypt": "libncrypt.so", "crypt32": "libcrypt32.so", "winhttp": "libwinhttp.so"}
ATTESTATION_DLL = "AttestationClientLib.dll"
ATTESTATION_STANDIN = "libAttestationClientLib.so"

_loaded: dict[str, Any] = {}
_lock = threading.Lock()
_WIN_ERROR = re.compile(r"error (0x[0-9a-fA-F]+|\d+)")
_LOAD_HINTS = {
    126: "the DLL or one of its dependencies was not found",
    193: "wrong architecture (a 64-bit Python on x64 Windows is needed)",
    216: "wrong architecture (a 64-bit Python on x64 Windows is needed)",
}

__all__ = ["ffi", "last_error", "load", "mode", "standin_directory", "system_library"]


def is_windows() -> bool:
    """True on Windows."""
    return sys.platform == "win32"


def standin_directory(environ: Mapping[str, str] = os.environ) -> str | None:
    """The stand-in directory of the Linux test mode, or ``None`` (always ``None`` on Windows)."""
    if is_windows():
        return None
    value = environ.get(STANDINS_ENV, "").strip()
    return os.path.abspath(value) if value else None


def mode(environ: Mapping[str, str] = os.environ) -> str | None:
    """``"windows"``, ``"standins"`` (Linux test mode) or ``None`` (no native layer here)."""
    if is_windows():
        return "windows"
    return "standins" if standin_directory(environ) else None


def unavailable_reason(environ: Mapping[str, str] = os.environ) -> str | None:
    """Why the native layer cannot run here, or ``None`` when it can."""
    if mode(environ) is not None:
        return None
    return (
        f"the Windows native layer (CNG, WinHTTP) needs Windows; on {sys.platform} it runs only in the "
        f"test mode with the C stand-ins (set {STANDINS_ENV} to their build directory)"
    )


def system_directory(environ: Mapping[str, str] = os.environ) -> str:
    """``%SystemRoot%\\System32`` on Windows, the stand-in directory in the test mode."""
    directory = standin_directory(environ)
    if directory is not None:
        return directory
    return os.path.join(environ.get("SystemRoot", r"C:\Windows"), "System32")


def system_library_path(name: str, environ: Mapping[str, str] = os.environ) -> str:
    """Absolute path of the system DLL ``name`` (``ncrypt``, ``crypt32``, ``winhttp``) or its stand-in."""
    files = SYSTEM_DLLS if standin_directory(environ) is None else STANDIN_FILES
    return os.path.join(system_directory(environ), files[name])


def _load_failure(path: str, exc: OSError) -> NativeLibraryError:
    match = _WIN_ERROR.search(str(exc))
    code = int(match.group(1), 0) if match else getattr(exc, "winerror", None)
    hint = _LOAD_HINTS.get(code or 0, str(exc))
    return NativeLibraryError(f"cannot load {path}: {hint}")


def load(path: str) -> Any:
    """``ffi.dlopen`` of the absolute ``path``, once per path; :class:`NativeLibraryError` if it fails."""
    if not os.path.isabs(path):
        raise ValueError(f"native libraries are loaded by absolute path only, not {path!r}")
    with _lock:
        library = _loaded.get(path)
        if library is None:
            if not os.path.isfile(path):
                raise NativeLibraryError(f"{path} does not exist")
            try:
                library = ffi.dlopen(path)
            except OSError as exc:
                raise _load_failure(path, exc) from None
            _loaded[path] = library
        return library


def system_library(name: str, environ: Mapping[str, str] = os.environ) -> Any:
    """The loaded system DLL ``name``; :class:`NativeLibraryError` off Windows outside the test mode."""
    reason = unavailable_reason(environ)
    if reason is not None:
        raise NativeLibraryError(reason)
    return load(system_library_path(name, environ))


def last_error() -> int:
    """The calling thread's last error of the previous C call (``GetLastError``; ``errno`` for stand-ins)."""
    if sys.platform == "win32":
        error = ffi.getwinerror()
        return (error[0] if error else 0) & 0xFFFFFFFF
    return int(ffi.errno) & 0xFFFFFFFF
