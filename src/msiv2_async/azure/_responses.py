"""azure-core response objects over ``httpx.Response``, built on azure-core's public abstract classes.

``azure.core.rest`` responses for ``azure.core.rest.HttpRequest`` (what current SDKs send) and
``azure.core.pipeline.transport`` responses for the legacy ``HttpRequest`` (older SDKs).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any

import httpx
from azure.core.exceptions import (
    HttpResponseError,
    ResponseNotReadError,
    ServiceResponseError,
    StreamClosedError,
    StreamConsumedError,
)
from azure.core.pipeline.transport import AsyncHttpResponse as LegacyAsyncHttpResponse
from azure.core.pipeline.transport import HttpRequest as LegacyHttpRequest
from azure.core.pipeline.transport import HttpResponse as LegacyHttpResponse
from azure.core.rest import AsyncHttpResponse, HttpRequest, HttpResponse

DEFAULT_BLOCK_SIZE = 4096


def _charset(content_type: str | None) -> str | None:
    for part in (content_type or "").split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset" and value:
            return value.strip('"')
    return None


def _decode(content: bytes, encoding: str | None) -> str:
    if encoding is None or encoding.lower().replace("-", "") == "utf8":
        encoding = "utf-8-sig"
    return content.decode(encoding, errors="replace")


class _RestCommon:
    """The metadata half of a rest response: status, headers, encoding, body access checks."""

    def __init__(self, request: HttpRequest, internal: httpx.Response, block_size: int | None) -> None:
        self._request = request
        self._internal = internal
        self._block_size = block_size or DEFAULT_BLOCK_SIZE
        self._content: bytes | None = None
        self._encoding: str | None = None
        self._closed = False
        self._consumed = False

    @property
    def request(self) -> HttpRequest:
        """The request this answers."""
        return self._request

    @property
    def internal_response(self) -> httpx.Response:
        """The ``httpx.Response`` underneath."""
        return self._internal

    @property
    def status_code(self) -> int:
        """The HTTP status."""
        return self._internal.status_code

    @property
    def headers(self) -> MutableMapping[str, str]:
        """Response headers (case-insensitive)."""
        return self._internal.headers

    @property
    def reason(self) -> str:
        """The reason phrase."""
        return self._internal.reason_phrase

    @property
    def content_type(self) -> str | None:
        """The ``Content-Type`` header."""
        value: str | None = self._internal.headers.get("Content-Type")
        return value

    @property
    def is_closed(self) -> bool:
        """Whether the connection was released."""
        return self._closed

    @property
    def is_stream_consumed(self) -> bool:
        """Whether the body was read or iterated."""
        return self._consumed

    @property
    def encoding(self) -> str | None:
        """The text encoding: set explicitly, else the ``charset`` of ``Content-Type``."""
        return self._encoding or _charset(self.content_type)

    @encoding.setter
    def encoding(self, value: str | None) -> None:
        self._encoding = value

    @property
    def url(self) -> str:
        """The request URL."""
        return str(self._request.url)

    @property
    def content(self) -> bytes:
        """The body; raises ``ResponseNotReadError`` before it was read."""
        if self._content is None:
            raise ResponseNotReadError(self)
        return self._content

    def text(self, encoding: str | None = None) -> str:
        """The body as text."""
        return _decode(self.content, encoding or self.encoding)

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.text())

    def raise_for_status(self) -> None:
        """Raise ``HttpResponseError`` for a status of 400 or more."""
        if self.status_code >= 400:
            raise HttpResponseError(response=self)

    def _check_stream(self) -> None:
        if self._consumed:
            raise StreamConsumedError(self)
        if self._closed:
            raise StreamClosedError(self)

    def __repr__(self) -> str:
        content_type = f", Content-Type: {self.content_type}" if self.content_type else ""
        return f"<HttpResponse: {self.status_code} {self.reason}{content_type}>"


class AsyncRestResponse(_RestCommon, AsyncHttpResponse):
    """An ``azure.core.rest.AsyncHttpResponse`` over an ``httpx.Response``."""

    async def read(self) -> bytes:
        """Read the whole body (decoded as ``Content-Encoding`` says) and release the connection."""
        if self._content is None:
            try:
                self._content = await self._internal.aread()
            except httpx.TransportError as exc:
                raise ServiceResponseError(str(exc), error=exc) from exc
            finally:
                self._consumed = True
                await self.close()
        return self._content

    async def iter_raw(self, **kwargs: Any) -> AsyncIterator[bytes]:
        """The body as it came (not decompressed)."""
        self._check_stream()
        self._consumed = True
        try:
            async for chunk in self._internal.aiter_raw(self._block_size):
                yield chunk
        except httpx.TransportError as exc:
            raise ServiceResponseError(str(exc), error=exc) from exc
        finally:
            await self.close()

    async def iter_bytes(self, **kwargs: Any) -> AsyncIterator[bytes]:
        """The body, decompressed."""
        if self._content is not None:
            for start in range(0, len(self._content), self._block_size):
                yield self._content[start : start + self._block_size]
            return
        self._check_stream()
        self._consumed = True
        try:
            async for chunk in self._internal.aiter_bytes(self._block_size):
                yield chunk
        except httpx.TransportError as exc:
            raise ServiceResponseError(str(exc), error=exc) from exc
        finally:
            await self.close()

    async def close(self) -> None:
        """Release the connection (idempotent)."""
        if not self._closed:
            self._closed = True
            await self._internal.aclose()

    async def __aexit__(self, *args: Any) -> None:
        await self.close()


class RestResponse(_RestCommon, HttpResponse):
    """An ``azure.core.rest.HttpResponse`` over an ``httpx.Response``."""

    def read(self) -> bytes:
        """Read the whole body (decoded as ``Content-Encoding`` says) and release the connection."""
        if self._content is None:
            try:
                self._content = self._internal.read()
            except httpx.TransportError as exc:
                raise ServiceResponseError(str(exc), error=exc) from exc
            finally:
                self._consumed = True
                self.close()
        return self._content

    def iter_raw(self, **kwargs: Any) -> Iterator[bytes]:
        """The body as it came (not decompressed)."""
        self._check_stream()
        self._consumed = True
        try:
            yield from self._internal.iter_raw(self._block_size)
        except httpx.TransportError as exc:
            raise ServiceResponseError(str(exc), error=exc) from exc
        finally:
            self.close()

    def iter_bytes(self, **kwargs: Any) -> Iterator[bytes]:
        """The body, decompressed."""
        if self._content is not None:
            for start in range(0, len(self._content), self._block_size):
                yield self._content[start : start + self._block_size]
            return
        self._check_stream()
        self._consumed = True
        try:
            yield from self._internal.iter_bytes(self._block_size)
        except httpx.TransportError as exc:
            raise ServiceResponseError(str(exc), error=exc) from exc
        finally:
            self.close()

    def close(self) -> None:
        """Release the connection (idempotent)."""
        if not self._closed:
            self._closed = True
            self._internal.close()

    def __enter__(self) -> RestResponse:
        return self

    def __exit__(self, *args: Any) -> None:
        self.close()


def _fill_legacy(response: LegacyHttpResponse | LegacyAsyncHttpResponse, internal: httpx.Response) -> None:
    response.status_code = internal.status_code
    response.headers = internal.headers
    response.reason = internal.reason_phrase
    response.content_type = internal.headers.get("Content-Type")


class LegacyAsyncResponse(LegacyAsyncHttpResponse):
    """An ``azure.core.pipeline.transport.AsyncHttpResponse`` over an ``httpx.Response``."""

    def __init__(self, request: LegacyHttpRequest, internal: httpx.Response, block_size: int | None) -> None:
        super().__init__(request, internal, block_size=block_size)
        _fill_legacy(self, internal)
        self._internal = internal
        self._body: bytes | None = None

    async def load_body(self) -> None:
        """Read the whole body into memory."""
        if self._body is None:
            try:
                self._body = await self._internal.aread()
            except httpx.TransportError as exc:
                raise ServiceResponseError(str(exc), error=exc) from exc
            finally:
                await self._internal.aclose()

    def body(self) -> bytes:
        """The body (``load_body`` must have run: the transport does so unless streaming)."""
        if self._body is None:
            raise ValueError("the body is not loaded; await load_body() first")
        return self._body

    async def _chunks(self, decompress: bool) -> AsyncIterator[bytes]:
        try:
            chunks = self._internal.aiter_bytes if decompress else self._internal.aiter_raw
            async for chunk in chunks(self.block_size):
                yield chunk
        except httpx.TransportError as exc:
            raise ServiceResponseError(str(exc), error=exc) from exc
        finally:
            await self._internal.aclose()

    def stream_download(
        self, pipeline: Any, *, decompress: bool = True, **kwargs: Any
    ) -> AsyncIterator[bytes]:
        """The body in chunks."""
        return self._chunks(decompress)

    async def __aexit__(self, *args: Any) -> None:
        await self._internal.aclose()


class LegacyResponse(LegacyHttpResponse):
    """An ``azure.core.pipeline.transport.HttpResponse`` over an ``httpx.Response``."""

    def __init__(self, request: LegacyHttpRequest, internal: httpx.Response, block_size: int | None) -> None:
        super().__init__(request, internal, block_size=block_size)
        _fill_legacy(self, internal)
        self._internal = internal
        self._body: bytes | None = None

    def body(self) -> bytes:
        """The body, read on first use."""
        if self._body is None:
            try:
                self._body = self._internal.read()
            except httpx.TransportError as exc:
                raise ServiceResponseError(str(exc), error=exc) from exc
            finally:
                self._internal.close()
        return self._body

    def stream_download(self, pipeline: Any, **kwargs: Any) -> Iterator[bytes]:
        """The body in chunks."""
        decompress = kwargs.get("decompress", True)
        try:
            chunks = self._internal.iter_bytes if decompress else self._internal.iter_raw
            yield from chunks(self.block_size)
        except httpx.TransportError as exc:
            raise ServiceResponseError(str(exc), error=exc) from exc
        finally:
            self._internal.close()
