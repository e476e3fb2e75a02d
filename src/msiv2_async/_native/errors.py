"""Typed errors of the native layer, each carrying the Windows code and its symbolic name.

Messages name the failing function and the code (``NTE_BAD_KEYSET (0x80090016)``,
``ERROR_WINHTTP_SECURE_FAILURE (12175)``) and never any key material, token or certificate.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._errors import BackendError, MsiV2UnavailableError
from ._cdefs import error_names

_NAMES = error_names()

ATTESTATION_RESULTS = {
    0: "SUCCESS",
    -1: "ERRORCURLINITIALIZATION",
    -2: "ERRORRESPONSEPARSING",
    -3: "ERRORMSITOKENNOTFOUND",
    -4: "ERRORHTTPREQUESTEXCEEDEDRETRIES",
    -5: "ERRORHTTPREQUESTFAILED",
    -6: "ERRORATTESTATIONFAILED",
    -7: "ERRORSENDINGCURLREQUESTFAILED",
    -8: "ERRORINVALIDINPUTPARAMETER",
    -9: "ERRORATTESTATIONPARAMETERSVALIDATIONFAILED",
    -10: "ERRORFAILEDMEMORYALLOCATION",
    -11: "ERRORFAILEDTOGETOSINFO",
    -12: "ERRORTPMINTERNALFAILURE",
    -13: "ERRORTPMOPERATIONFAILURE",
    -14: "ERRORJWTDECRYPTIONFAILED",
    -15: "ERRORJWTDECRYPTIONTPMERROR",
    -16: "ERRORINVALIDJSONRESPONSE",
    -17: "ERROREMPTYVCEKCERT",
    -18: "ERROREMPTYRESPONSE",
    -19: "ERROREMPTYREQUESTBODY",
    -20: "ERRORHCLREPORTPARSINGFAILURE",
    -21: "ERRORHCLREPORTEMPTY",
    -22: "ERROREXTRACTINGJWKINFO",
    -23: "ERRORCONVERTINGJWKTORSAPUB",
    -24: "ERROREVPPKEYENCRYPTINITFAILED",
    -25: "ERROREVPPKEYENCRYPTFAILED",
    -26: "ERRORDATADECRYPTIONTPMERROR",
    -27: "ERRORPARSINGDNSINFO",
    -28: "ERRORPARSINGATTESTATIONRESPONSE",
    -29: "ERRORAKCERTPROVISIONINGFAILED",
    -30: "ERRORCLIENTINITFAILED",
    -31: "ERROREMPTYJWTRESPONSE",
    -32: "ERRORCREATEKGATTESTATIONREPORT",
    -33: "ERROREXTRACTIMPORTKEYPUB",
    -34: "ERRORUNEXPECTEDEXCEPTION",
    -35: "ERRORLOGGERINITIALIZATION",
}


def code_name(code: int) -> str:
    """``NAME (0x8009xxxx)`` for HRESULT-style codes, ``NAME (12175)`` for Win32 ones."""
    code &= 0xFFFFFFFF
    name = _NAMES.get(code, "unknown error")
    return f"{name} (0x{code:08X})" if code >= 0x80000000 else f"{name} ({code})"


class NativeError(BackendError):
    """A Windows API call failed. ``function``, ``code`` (unsigned) and ``name`` say which and how."""

    def __init__(self, function: str, code: int, detail: str = "") -> None:
        self.function = function
        self.code = code & 0xFFFFFFFF
        self.name = _NAMES.get(self.code, "unknown error")
        message = f"{function} failed: {code_name(self.code)}"
        super().__init__(f"{message}; {detail}" if detail else message)


class NCryptError(NativeError):
    """An NCrypt call returned a failing ``SECURITY_STATUS``."""


class Win32Error(NativeError):
    """A Crypt32 call failed; ``code`` is its last error."""


class WinHttpError(Win32Error):
    """A WinHTTP call failed; ``code`` is its last error (mostly ``ERROR_WINHTTP_*``)."""


class AttestationError(NativeError):
    """``AttestationClientLib`` failed: ``code`` is its negative result, ``name`` the enum name."""

    def __init__(self, function: str, result: int, detail: str = "") -> None:
        BackendError.__init__(
            self,
            f"{function} failed: {ATTESTATION_RESULTS.get(result, 'unknown result')} ({result})"
            + (f"; {detail}" if detail else ""),
        )
        self.function = function
        self.code = result
        self.name = ATTESTATION_RESULTS.get(result, "unknown result")


class NativeLibraryError(MsiV2UnavailableError):
    """A native library could not be found or loaded; ``searched`` lists every place looked in."""

    def __init__(self, message: str, searched: Sequence[str] = ()) -> None:
        self.searched = tuple(searched)
        if self.searched:
            message += "; looked in: " + ", ".join(self.searched)
        super().__init__(message)
