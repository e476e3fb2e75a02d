"""Where binding certificates persist between processes, behind an interface a backend can replace.

:class:`FileBindingStore` keeps one schema-versioned JSON file per slot (identity, backend, IMDS,
attestation mode) in the cache directory, and a lock file per slot that is held (``flock``) only
around a mint, so P processes on one machine mint one certificate between them. A process that dies
while holding the lock releases it with its file descriptors. Tokens are never persisted.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.to_thread

from ._errors import ConfigurationError
from ._files import (
    ensure_private_directory,
    read_private_file,
    remove_file,
    remove_stale_temporaries,
    write_private_file,
)

SCHEMA_VERSION = 1
CACHE_DIR_ENV = "MSIV2_ASYNC_CACHE_DIR"
LOCK_POLL_SECONDS = 0.02
LOCK_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class PersistedBinding:
    """A binding as read back from a store; the client re-validates it before use."""

    certificate_der: bytes
    client_id: str
    tenant_id: str
    mtls_authentication_endpoint: str
    attested: bool


class BindingStore(Protocol):
    """Persistence of binding certificates across processes."""

    async def load(self, slot: str) -> PersistedBinding | None:
        """The persisted binding of ``slot``, or ``None``."""
        ...

    async def save(self, slot: str, binding: PersistedBinding) -> None:
        """Persist ``binding`` for ``slot``, replacing any previous one atomically."""
        ...

    async def delete(self, slot: str) -> None:
        """Forget the binding of ``slot`` (rejected or orphaned)."""
        ...

    def mint_lock(self, slot: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Held by one process at a time around minting for ``slot``."""
        ...


def _encode(slot: str, binding: PersistedBinding) -> bytes:
    document = {
        "version": SCHEMA_VERSION,
        "slot": slot,
        "certificate": base64.b64encode(binding.certificate_der).decode("ascii"),
        "client_id": binding.client_id,
        "tenant_id": binding.tenant_id,
        "mtls_authentication_endpoint": binding.mtls_authentication_endpoint,
        "attested": binding.attested,
    }
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def _decode(slot: str, data: bytes) -> PersistedBinding | None:
    try:
        document: Any = json.loads(data)
        if not isinstance(document, dict) or document.get("version") != SCHEMA_VERSION:
            return None
        if document.get("slot") != slot or not isinstance(document.get("attested"), bool):
            return None
        fields = ("certificate", "client_id", "tenant_id", "mtls_authentication_endpoint")
        if not all(isinstance(document.get(name), str) for name in fields):
            return None
        return PersistedBinding(
            certificate_der=base64.b64decode(document["certificate"], validate=True),
            client_id=document["client_id"],
            tenant_id=document["tenant_id"],
            mtls_authentication_endpoint=document["mtls_authentication_endpoint"],
            attested=document["attested"],
        )
    except (ValueError, binascii.Error, RecursionError):
        return None


class FileBindingStore:
    """The POSIX file store of the persistent cache (directory 0700, files 0600)."""

    def __init__(self, directory: str) -> None:
        try:
            import fcntl  # noqa: F401
        except ImportError:
            raise ConfigurationError("the file cache needs POSIX file locks (fcntl)") from None
        self.directory = os.path.abspath(directory)
        ensure_private_directory(self.directory)

    def __repr__(self) -> str:
        return f"FileBindingStore({self.directory!r})"

    def _path(self, slot: str, suffix: str) -> str:
        name = hashlib.sha256(slot.encode("utf-8")).hexdigest()[:32]
        return os.path.join(self.directory, f"binding-{name}{suffix}")

    async def load(self, slot: str) -> PersistedBinding | None:
        """Read and decode the slot's file; a corrupt or foreign file reads as absent."""
        data = await anyio.to_thread.run_sync(read_private_file, self._path(slot, ".json"))
        return None if data is None else _decode(slot, data)

    async def save(self, slot: str, binding: PersistedBinding) -> None:
        """Atomic replace of the slot's file (and cleanup of temporaries left by killed writers)."""
        await anyio.to_thread.run_sync(write_private_file, self._path(slot, ".json"), _encode(slot, binding))
        await anyio.to_thread.run_sync(remove_stale_temporaries, self.directory)

    async def delete(self, slot: str) -> None:
        """Remove the slot's file."""
        await anyio.to_thread.run_sync(remove_file, self._path(slot, ".json"))

    @contextlib.asynccontextmanager
    async def mint_lock(self, slot: str) -> AsyncIterator[None]:
        """An exclusive ``flock`` on the slot's lock file, polled so that waiting stays cancellable."""
        import fcntl

        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        path = self._path(slot, ".lock")
        try:
            fd = await anyio.to_thread.run_sync(os.open, path, flags, 0o600)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot use the cache lock file {path!r} ({exc.strerror}); remove it if it is a symlink"
            ) from None
        try:
            with anyio.move_on_after(LOCK_TIMEOUT_SECONDS):
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        await anyio.sleep(LOCK_POLL_SECONDS)
            yield
        finally:
            os.close(fd)
