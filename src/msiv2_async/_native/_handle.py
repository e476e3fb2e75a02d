"""A native handle owned by one Python object: released exactly once, on every path."""

from __future__ import annotations

import contextlib
import threading
import warnings
from types import TracebackType
from typing import Any, TypeVar

H = TypeVar("H", bound="OwnedHandle")


class OwnedHandle:
    """Base of every wrapper that owns a handle; use it as a context manager.

    :meth:`close` is idempotent and thread-safe; ``__del__`` is only a safety net that releases a
    forgotten handle and warns (``ResourceWarning``).
    """

    _value: Any = None

    def __init__(self, value: Any) -> None:
        self._value = value
        self._close_lock = threading.Lock()

    @property
    def closed(self) -> bool:
        """True once the handle has been released (or handed over)."""
        return self._value is None

    def _release(self, value: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def detach(self) -> Any:
        """Give up ownership without releasing (the callee took it over); returns the raw value."""
        with self._close_lock:
            value, self._value = self._value, None
        return value

    def close(self) -> None:
        """Release the handle (once)."""
        value = self.detach()
        if value is not None:
            self._release(value)

    def __enter__(self: H) -> H:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_value", None) is not None and hasattr(self, "_close_lock"):
            warnings.warn(f"unclosed {type(self).__name__}", ResourceWarning, stacklevel=2)
            with contextlib.suppress(Exception):
                self.close()
