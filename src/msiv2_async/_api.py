"""The module-level ``acquire_token``: a default client per event loop, so repeated calls hit its cache."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Literal, overload

from anyio.lowlevel import RunVar

from ._models import BearerToken, MtlsPopToken
from .client import DEFAULT_SCOPE, MsiV2Client

_DEFAULT_CLIENTS: RunVar[dict[Hashable, MsiV2Client]] = RunVar("msiv2_async_default_clients")


def _freeze(value: Any) -> Hashable:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(_freeze(v) for v in value)
    return value  # type: ignore[no-any-return]


def _clients() -> dict[Hashable, MsiV2Client]:
    try:
        return _DEFAULT_CLIENTS.get()
    except LookupError:
        clients: dict[Hashable, MsiV2Client] = {}
        _DEFAULT_CLIENTS.set(clients)
        return clients


def default_client(**client_kwargs: Any) -> MsiV2Client:
    """The event loop's shared client for these arguments, created on first use."""
    clients = _clients()
    key = _freeze(client_kwargs)
    client = clients.get(key)
    if client is None or client.closed:
        client = clients[key] = MsiV2Client(**client_kwargs)
    return client


@overload
async def acquire_token(
    scope: str = ...,
    *,
    client: MsiV2Client | None = ...,
    token_type: Literal["mtls_pop"] = ...,
    claims: str | None = ...,
    force_refresh: bool = ...,
    timeout: float | None = ...,
    **client_kwargs: Any,
) -> MtlsPopToken: ...


@overload
async def acquire_token(
    scope: str = ...,
    *,
    client: MsiV2Client | None = ...,
    token_type: Literal["bearer"],
    claims: str | None = ...,
    force_refresh: bool = ...,
    timeout: float | None = ...,
    **client_kwargs: Any,
) -> BearerToken: ...


async def acquire_token(
    scope: str = DEFAULT_SCOPE,
    *,
    client: MsiV2Client | None = None,
    token_type: Literal["mtls_pop", "bearer"] = "mtls_pop",
    claims: str | None = None,
    force_refresh: bool = False,
    timeout: float | None = None,
    **client_kwargs: Any,
) -> MtlsPopToken | BearerToken:
    """An mtls_pop token for ``scope``.

    With ``client``, that client is used. Otherwise the event loop's default client for
    ``client_kwargs`` (the :class:`MsiV2Client` arguments) is created once and reused, so repeated
    calls are served from its cache. :func:`aclose_default_clients` closes those clients.
    """
    chosen = client if client is not None else default_client(**client_kwargs)
    if token_type == "bearer":
        return await chosen.acquire_token(
            scope, token_type="bearer", force_refresh=force_refresh, timeout=timeout
        )
    return await chosen.acquire_token(scope, claims=claims, force_refresh=force_refresh, timeout=timeout)


async def aclose_default_clients() -> None:
    """Close this event loop's default clients (their key, connections and caches)."""
    clients = _clients()
    while clients:
        _, client = clients.popitem()
        await client.aclose()
