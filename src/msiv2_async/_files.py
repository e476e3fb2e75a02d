"""Private files for the opt-in persistent cache: 0700 directory, 0600 files, atomic writes, no symlinks.

All functions block; callers run them in a worker thread. A file that is a symlink, not ours, or
readable by others is refused (treated as absent, never read); the directory must be ours and 0700.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time

from ._errors import ConfigurationError
from ._logging import get_logger

_log = get_logger("msiv2_async.cache")
MAX_FILE_BYTES = 256 * 1024


def ensure_private_directory(path: str) -> None:
    """Create ``path`` as a 0700 directory, or check that the existing one is ours, 0700, not a symlink."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise ConfigurationError(f"cannot use cache directory {path!r}: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise ConfigurationError(f"cache directory {path!r} must be a real directory, not a symlink")
    if info.st_uid != os.geteuid():
        raise ConfigurationError(f"cache directory {path!r} belongs to another user")
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise ConfigurationError(f"cache directory {path!r} must have mode 0700 (chmod 700 it)")


def read_private_file(path: str) -> bytes | None:
    """The content of ``path``; ``None`` if absent or refused (symlink, other owner, group/other bits)."""
    try:
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        _log.warning("refusing cache file %s: %s", path, exc.strerror)
        return None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if (
            not stat.S_ISREG(info.st_mode)
            or info.st_uid != os.geteuid()
            or stat.S_IMODE(info.st_mode) & 0o077
        ):
            _log.warning("refusing cache file %s: not a regular 0600 file of this user", path)
            return None
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        _log.warning("refusing cache file %s: larger than %d bytes", path, MAX_FILE_BYTES)
        return None
    return data


def write_private_file(path: str, data: bytes) -> None:
    """Atomically replace ``path``: temp file in the same directory, write, fsync, rename, fsync dir."""
    directory = os.path.dirname(path) or "."
    fd, temporary = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def remove_stale_temporaries(directory: str, older_than: float = 60.0) -> None:
    """Delete ``.tmp-*`` files that a process killed mid-write left behind."""
    cutoff = time.time() - older_than
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith(".tmp-") and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)


def remove_file(path: str) -> None:
    """Delete ``path`` if present."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
