"""A cross-process lock on a file, polled so that waiting stays cancellable; released when the process dies.

``msvcrt.locking`` on Windows, ``fcntl.flock`` elsewhere (the Linux test mode).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator

import anyio
import anyio.to_thread

POLL_SECONDS = 0.02


def default_lock_directory() -> str:
    """``%LOCALAPPDATA%\\msiv2_async\\locks`` on Windows, ``~/.cache/msiv2_async/locks`` elsewhere."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "msiv2_async", "locks")


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _open(path: str) -> int:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    return os.open(
        path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOINHERIT", 0) | getattr(os, "O_CLOEXEC", 0), 0o600
    )


@contextlib.asynccontextmanager
async def file_lock(path: str, timeout: float = 60.0) -> AsyncIterator[bool]:
    """Hold an exclusive lock on ``path``; yields False if it could not be had within ``timeout``."""
    fd = await anyio.to_thread.run_sync(_open, path)
    acquired = False
    try:
        with anyio.move_on_after(timeout):
            while not (acquired := _try_lock(fd)):  # noqa: ASYNC110 - polling another process's lock
                await anyio.sleep(POLL_SECONDS)
        yield acquired
    finally:
        os.close(fd)
