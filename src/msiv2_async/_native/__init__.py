"""cffi (ABI mode) bindings of the Windows DLLs the KeyGuard backend needs, one module per DLL.

- :mod:`.ncrypt` — CNG key storage: KeyGuard/VBS keys, RSA-PSS signing (``ncrypt.dll``);
- :mod:`.crypt32` — certificate contexts bound to a CNG key, the CurrentUser\\My store (``crypt32.dll``);
- :mod:`.winhttp` — HTTPS over SChannel with a client certificate (``winhttp.dll``);
- :mod:`.attestation` — MAA attestation of a KeyGuard key (``AttestationClientLib.dll``, not shipped).

The cdefs (:mod:`._cdefs`) use fixed-width types only, so the same FFI (the generated, pure-Python
:mod:`._ffi_abi`) loads the real DLLs on Windows and, in the Linux test mode
(``MSIV2_ASYNC_NATIVE_STANDINS``), C stand-ins with the same semantics. Failures raise the typed
errors of :mod:`.errors`; every handle is owned by an object that releases it on ``close``/``with``.
"""

from ._loader import STANDINS_ENV, mode, unavailable_reason
from .errors import (
    AttestationError,
    NativeError,
    NativeLibraryError,
    NCryptError,
    Win32Error,
    WinHttpError,
)

__all__ = [
    "STANDINS_ENV",
    "AttestationError",
    "NCryptError",
    "NativeError",
    "NativeLibraryError",
    "Win32Error",
    "WinHttpError",
    "mode",
    "unavailable_reason",
]
