"""Guarding resource calls: a bound token travels only over https, never to a link-local address."""

from __future__ import annotations

import ipaddress

import httpx

from ._errors import UntrustedEndpointError


def check_resource_url(url: httpx.URL) -> None:
    """Refuse plain http and link-local hosts such as IMDS (169.254.169.254) before any byte is sent."""
    if url.scheme != "https":
        raise UntrustedEndpointError(f"refusing to send an mtls_pop token over {url.scheme!r}; use https")
    try:
        address = ipaddress.ip_address(url.host)
    except ValueError:
        return
    if address.is_link_local:
        raise UntrustedEndpointError(f"refusing to send an mtls_pop token to link-local address {url.host}")


class ResourceGuardTransport(httpx.AsyncBaseTransport):
    """Wraps an mTLS transport and applies :func:`check_resource_url` to every request."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Check the URL, then delegate."""
        check_resource_url(request.url)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._inner.aclose()
