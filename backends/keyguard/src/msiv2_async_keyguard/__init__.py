"""The KeyGuard backend of msiv2-async (Windows): a VBS-isolated, non-exportable, per-boot CNG key.

- :class:`KeyGuardBackend` — registered as ``keyguard`` in ``msiv2_async.backends``; the key ladder,
  CSR signing through ``NCryptSignHash``, MAA attestation through ``AttestationClientLib.dll``, and
  mTLS through WinHTTP/SChannel with the issued certificate bound to the key.
- :class:`CertStoreBindingStore` — binding certificates persisted in ``CurrentUser\\My``.
- :class:`WinHttpTransport` / :class:`WinHttpSyncTransport` — httpx transports over WinHTTP.

Off Windows the backend is not viable, except in the Linux test mode of ``msiv2_async._native``
(``MSIV2_ASYNC_NATIVE_STANDINS``), which runs the same code against C stand-ins of the DLLs.
"""

from ._backend import ALLOW_WEAKER_ENV, KeyGuardBackend
from ._certstore import CertStoreBindingStore
from ._keys import CNG_SOFTWARE, KEYGUARD, Rung
from ._transport import WinHttpSyncTransport, WinHttpTransport

__all__ = [
    "ALLOW_WEAKER_ENV",
    "CNG_SOFTWARE",
    "KEYGUARD",
    "CertStoreBindingStore",
    "KeyGuardBackend",
    "Rung",
    "WinHttpSyncTransport",
    "WinHttpTransport",
]
