"""azure-core authentication policies that send ``Authorization: mtls_pop <token>``.

azure-core's bearer policies hard-code ``Bearer`` and drop every token option that is not in
``TokenRequestOptions``. These subclasses change exactly that: ``_get_token`` asks the credential's
``get_token_info`` with ``pop=True`` (and claims), the header is written with the ``mtls_pop`` scheme
(sync: ``_update_headers``; async: ``on_request`` and ``authorize_request``, which write it inline),
and ``on_challenge`` answers a 401 claims challenge of the ``mtls_pop`` (or ``Bearer``) scheme with
one new token (azure-core resends the request once, never more). Every authorized request also names
the certificate its token is bound to in the transport options (``msiv2_binding_certificate``), which
:class:`AsyncMtlsTransport` / :class:`MtlsTransport` present in the TLS handshake.

The stock refresh logic stays: the policy keeps its token until ``refresh_on`` (plus up to 60 s of
jitter) and drops it on any 401.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, cast

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.exceptions import ClientAuthenticationError
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncBearerTokenCredentialPolicy, BearerTokenCredentialPolicy

from .._challenge import claims_challenge
from .._models import BindingCertificate
from .._sts import TOKEN_TYPE

CERTIFICATE_OPTION = "msiv2_binding_certificate"
"""Transport option (``request.context.options``) carrying the token's :class:`BindingCertificate`."""


def _pop_options(kwargs: dict[str, Any]) -> TokenRequestOptions:
    options: dict[str, Any] = {"pop": True}
    if kwargs.get("claims"):
        options["claims"] = kwargs["claims"]
    return cast(TokenRequestOptions, options)


def _checked(token: AccessTokenInfo) -> AccessTokenInfo:
    """``token`` if it is an mtls_pop token that names its certificate; otherwise an error."""
    certificate = getattr(token, "binding_certificate", None)
    if token.token_type.lower() != TOKEN_TYPE or not isinstance(certificate, BindingCertificate):
        raise ClientAuthenticationError(
            message="the credential did not return an mtls_pop token with its binding certificate; "
            "use msiv2_async.azure.MsiV2Credential (or MsiV2CredentialSync) with this policy"
        )
    return token


def _no_token_info(credential: object) -> ClientAuthenticationError:
    return ClientAuthenticationError(
        message=f"{type(credential).__name__} has no get_token_info; mtls_pop needs "
        "msiv2_async.azure.MsiV2Credential (or MsiV2CredentialSync)"
    )


def _authorize(request: PipelineRequest[Any], token: AccessToken | AccessTokenInfo | None) -> None:
    """Write ``mtls_pop <token>`` and name the bound certificate for the transport."""
    assert isinstance(token, AccessTokenInfo)
    request.http_request.headers["Authorization"] = f"{TOKEN_TYPE} {token.token}"
    request.context.options[CERTIFICATE_OPTION] = getattr(token, "binding_certificate", None)


def _challenge_claims(response: PipelineResponse[Any, Any]) -> str | None:
    headers = response.http_response.headers
    return claims_challenge(headers.get("WWW-Authenticate"))


class AsyncMtlsPopPolicy(AsyncBearerTokenCredentialPolicy[Any, Any]):
    """``AsyncBearerTokenCredentialPolicy`` that sends mtls_pop tokens; use with :class:`AsyncMtlsTransport`.

    ``credential`` must be a :class:`MsiV2Credential` (or return its ``MtlsPopTokenInfo``).
    """

    async def _get_token(self, *scopes: str, **kwargs: Any) -> AccessToken | AccessTokenInfo:
        get_token_info = getattr(self._credential, "get_token_info", None)
        if get_token_info is None:
            raise _no_token_info(self._credential)
        token = await get_token_info(*scopes, options=_pop_options(kwargs))
        return _checked(cast(AccessTokenInfo, token))

    async def on_request(self, request: PipelineRequest[Any]) -> None:
        """Get (or reuse) the token, write ``mtls_pop <token>`` and name its certificate."""
        await super().on_request(request)
        _authorize(request, self._token)

    async def authorize_request(self, request: PipelineRequest[Any], *scopes: str, **kwargs: Any) -> None:
        """Get a new token (``kwargs`` may hold ``claims``) and authorize ``request`` with it."""
        await super().authorize_request(request, *scopes, **kwargs)
        _authorize(request, self._token)

    async def on_challenge(
        self,
        request: PipelineRequest[Any],
        response: PipelineResponse[Any, Any],
    ) -> bool:
        """A claims challenge: get a token with those claims and let azure-core resend once."""
        claims = _challenge_claims(response)
        if claims is None:
            return False
        await self.authorize_request(request, *self._scopes, claims=claims)
        return True


class MtlsPopPolicy(BearerTokenCredentialPolicy[Any, Any]):
    """``BearerTokenCredentialPolicy`` that sends mtls_pop tokens; use with :class:`MtlsTransport`.

    ``credential`` must be a :class:`MsiV2CredentialSync` (or return its ``MtlsPopTokenInfo``).
    """

    @staticmethod
    def _update_headers(headers: MutableMapping[str, str], token: str) -> None:
        headers["Authorization"] = f"{TOKEN_TYPE} {token}"

    def _get_token(self, *scopes: str, **kwargs: Any) -> AccessToken | AccessTokenInfo:
        get_token_info = getattr(self._credential, "get_token_info", None)
        if get_token_info is None:
            raise _no_token_info(self._credential)
        token = get_token_info(*scopes, options=_pop_options(kwargs))
        return _checked(cast(AccessTokenInfo, token))

    def on_request(self, request: PipelineRequest[Any]) -> None:
        """Get (or reuse) the token, write ``mtls_pop <token>`` and name its certificate."""
        super().on_request(request)
        _authorize(request, self._token)

    def authorize_request(self, request: PipelineRequest[Any], *scopes: str, **kwargs: Any) -> None:
        """Get a new token (``kwargs`` may hold ``claims``) and authorize ``request`` with it."""
        super().authorize_request(request, *scopes, **kwargs)
        _authorize(request, self._token)

    def on_challenge(
        self,
        request: PipelineRequest[Any],
        response: PipelineResponse[Any, Any],
    ) -> bool:
        """A claims challenge: get a token with those claims and let azure-core resend once."""
        claims = _challenge_claims(response)
        if claims is None:
            return False
        self.authorize_request(request, *self._scopes, claims=claims)
        return True
