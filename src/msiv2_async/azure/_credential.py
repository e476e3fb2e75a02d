"""azure-core credentials over :class:`MsiV2Client` (async) and :class:`MsiV2SyncClient` (sync).

They satisfy azure-core's ``AsyncTokenCredential`` + ``AsyncSupportsTokenInfo`` and ``TokenCredential``
+ ``SupportsTokenInfo`` by structure. ``get_token_info`` returns a :class:`MtlsPopTokenInfo`
(``token_type="mtls_pop"``, ``refresh_on``, and the ``binding_certificate`` the token is bound to).
Errors: :class:`MsiV2UnavailableError` becomes azure-identity's ``CredentialUnavailableError`` when
azure-identity is installed (so credential chains move on) and ``ClientAuthenticationError``
otherwise; every other failure becomes ``ClientAuthenticationError``, chained with ``from``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, cast

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.exceptions import ClientAuthenticationError

from .._errors import ConfigurationError, MsiV2UnavailableError
from .._logging import get_logger
from .._models import BindingCertificate, MtlsPopToken
from ..client import MsiV2Client
from ..sync import MsiV2SyncClient

_log = get_logger("msiv2_async.azure")
_ONE_SCOPE = "This credential requires exactly one scope per token request."


class MtlsPopTokenInfo(AccessTokenInfo):
    """An ``AccessTokenInfo`` for an mtls_pop token, with the certificate it is bound to.

    Unlike azure-core's ``AccessTokenInfo`` its ``repr`` never shows the token.
    """

    binding_certificate: BindingCertificate
    scope: str

    def __init__(self, token: MtlsPopToken) -> None:
        super().__init__(
            token.access_token, token.expires_on, token_type=token.token_type, refresh_on=token.refresh_on
        )
        self.binding_certificate = token.binding_certificate
        self.scope = token.scope

    def __repr__(self) -> str:
        return (
            f"MtlsPopTokenInfo(token_type={self.token_type!r}, expires_on={self.expires_on}, "
            f"refresh_on={self.refresh_on}, scope={self.scope!r}, "
            f"certificate={self.binding_certificate.thumbprint_sha256!r})"
        )


def _single_scope(scopes: Sequence[str]) -> str:
    if len(scopes) != 1:
        raise ValueError(_ONE_SCOPE)
    return scopes[0]


def _pop_requested(options: TokenRequestOptions | None) -> bool:
    """Whether ``options`` asks for mTLS PoP (``pop=True``); a mapping (SHR PoP) is refused."""
    pop = cast(Mapping[str, Any], options or {}).get("pop")
    if isinstance(pop, Mapping):
        raise ValueError(
            "pop as a mapping requests a Signed HTTP Request PoP token, which MSI v2 does not issue; "
            "use pop=True (mTLS PoP)"
        )
    return bool(pop)


def _unavailable_type() -> type[ClientAuthenticationError] | None:
    try:
        module = importlib.import_module("azure.identity")
    except ImportError:
        return None
    error_type = getattr(module, "CredentialUnavailableError", None)
    if isinstance(error_type, type) and issubclass(error_type, ClientAuthenticationError):
        return error_type
    return None


def _azure_error(exc: Exception, name: str) -> ClientAuthenticationError:
    """The azure-core exception for a failed acquisition (the message never holds a token)."""
    message = f"{name}: {exc}"
    if isinstance(exc, MsiV2UnavailableError):
        unavailable = _unavailable_type()
        if unavailable is not None:
            return unavailable(message=message)
    return ClientAuthenticationError(message=message)


class _CredentialBase:
    """What both credentials share: warnings, logging, bookkeeping of the last certificate."""

    def __init__(self) -> None:
        self.binding_certificate: BindingCertificate | None = None
        self._warned: set[str] = set()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            _log.warning(message, type(self).__name__)

    def _check_options(self, options: TokenRequestOptions | None) -> None:
        if not _pop_requested(options):
            self._warn_once(
                "no-pop",
                "%s.get_token_info was called without pop=True (the stock Bearer policy?): the token is "
                "mtls_pop and works only with AsyncMtlsPopPolicy/MtlsPopPolicy and an mTLS transport",
            )

    def _warn_token_type_lost(self) -> None:
        self._warn_once(
            "get-token",
            "%s.get_token returns an AccessToken, which cannot say that the token is mtls_pop and bound "
            "to a certificate; prefer get_token_info with the msiv2_async.azure policies",
        )

    def _succeeded(self, token: MtlsPopToken, method: str) -> None:
        self.binding_certificate = token.binding_certificate
        _log.debug(
            "%s.%s succeeded for %s (source %s, expires_on %d, certificate %s)",
            type(self).__name__,
            method,
            token.scope,
            token.source,
            token.expires_on,
            token.binding_certificate.thumbprint_sha256,
        )

    def _failed(self, exc: Exception, method: str) -> ClientAuthenticationError:
        _log.warning(
            "%s.%s failed: %s",
            type(self).__name__,
            method,
            exc,
            exc_info=_log.isEnabledFor(logging.DEBUG),
        )
        return _azure_error(exc, type(self).__name__)


class MsiV2Credential(_CredentialBase):
    """An azure-core async credential (``AsyncTokenCredential`` + ``AsyncSupportsTokenInfo``).

    Without ``client`` it creates an :class:`MsiV2Client` from ``client_kwargs`` and owns it (closed by
    :meth:`close`; ``async with`` also enters it, which turns on background refresh). A ``client``
    passed in is used as is and never closed. Exactly one scope per request; ``tenant_id`` and
    ``enable_cae`` are ignored (the identity's tenant is fixed; claims are honoured).
    """

    def __init__(self, *, client: MsiV2Client | None = None, **client_kwargs: Any) -> None:
        if client is not None and client_kwargs:
            raise ConfigurationError("pass either client= or MsiV2Client arguments, not both")
        super().__init__()
        self._owns_client = client is None
        self._client = client if client is not None else MsiV2Client(**client_kwargs)
        self._entered = False

    def __repr__(self) -> str:
        return f"MsiV2Credential({self._client!r})"

    @property
    def client(self) -> MsiV2Client:
        """The :class:`MsiV2Client` that gets the tokens."""
        return self._client

    async def _acquire(self, scopes: Sequence[str], claims: str | None, method: str) -> MtlsPopToken:
        scope = _single_scope(scopes)
        try:
            token = await self._client.acquire_token(scope, claims=claims or None)
        except Exception as exc:
            raise self._failed(exc, method) from exc
        self._succeeded(token, method)
        return token

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """An ``AccessToken`` (token and ``expires_on`` only: the mtls_pop type is lost)."""
        self._warn_token_type_lost()
        token = await self._acquire(scopes, claims, "get_token")
        return AccessToken(token.access_token, token.expires_on)

    async def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> MtlsPopTokenInfo:
        """A :class:`MtlsPopTokenInfo`; ``options`` may carry ``claims`` and ``pop=True``."""
        self._check_options(options)
        token = await self._acquire(scopes, (options or {}).get("claims"), "get_token_info")
        return MtlsPopTokenInfo(token)

    async def close(self) -> None:
        """Close the client if this credential created it (idempotent)."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> MsiV2Credential:
        if self._owns_client and not self._entered:
            self._entered = True
            await self._client.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.close()


class MsiV2CredentialSync(_CredentialBase):
    """An azure-core sync credential (``TokenCredential`` + ``SupportsTokenInfo``).

    Built on :class:`MsiV2SyncClient` (its threading rules apply: never call it in an event loop
    thread). Without ``client`` it creates and owns one; a ``client`` passed in is never closed.
    """

    def __init__(self, *, client: MsiV2SyncClient | None = None, **client_kwargs: Any) -> None:
        if client is not None and client_kwargs:
            raise ConfigurationError("pass either client= or MsiV2Client arguments, not both")
        super().__init__()
        self._owns_client = client is None
        self._client = client if client is not None else MsiV2SyncClient(**client_kwargs)

    def __repr__(self) -> str:
        return f"MsiV2CredentialSync({self._client!r})"

    @property
    def client(self) -> MsiV2SyncClient:
        """The :class:`MsiV2SyncClient` that gets the tokens."""
        return self._client

    def _acquire(self, scopes: Sequence[str], claims: str | None, method: str) -> MtlsPopToken:
        scope = _single_scope(scopes)
        try:
            token = self._client.acquire_token(scope, claims=claims or None)
        except Exception as exc:
            raise self._failed(exc, method) from exc
        self._succeeded(token, method)
        return token

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """An ``AccessToken`` (token and ``expires_on`` only: the mtls_pop type is lost)."""
        self._warn_token_type_lost()
        token = self._acquire(scopes, claims, "get_token")
        return AccessToken(token.access_token, token.expires_on)

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> MtlsPopTokenInfo:
        """A :class:`MtlsPopTokenInfo`; ``options`` may carry ``claims`` and ``pop=True``."""
        self._check_options(options)
        token = self._acquire(scopes, (options or {}).get("claims"), "get_token_info")
        return MtlsPopTokenInfo(token)

    def close(self) -> None:
        """Close the client if this credential created it (idempotent)."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> MsiV2CredentialSync:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.close()
