"""Attestation JWTs cached per key until shortly before their ``exp`` (MSAL.NET ``PopKeyAttestor``).

The cache key is the endpoint (lower case, no trailing slash) plus the key id (container name and
a hash of the modulus, so a re-created per-boot key never reuses the old key's JWT). A token is
reused while ``exp`` is more than 5 minutes away; a token without ``exp`` is not cached. Concurrent
callers for one key share one attestation (a per-key lock).
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Callable

REUSE_MARGIN_SECONDS = 300.0


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (no signature check: only used to decide reuse), or ``None``."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class AttestationCache:
    """Thread-safe, single-flight per key; ``clock`` returns Unix seconds."""

    def __init__(self, clock: Callable[[], float] = time.time, margin: float = REUSE_MARGIN_SECONDS) -> None:
        self._clock = clock
        self._margin = margin
        self._tokens: dict[str, tuple[str, float]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.attestations = 0

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def get(self, key: str, attest: Callable[[], str]) -> str:
        """The cached token of ``key`` if it is fresh enough, else a new one from ``attest``."""
        with self._lock(key):
            cached = self._tokens.get(key)
            if cached is not None and cached[1] > self._clock() + self._margin:
                return cached[0]
            token = attest()
            self.attestations += 1
            expiry = jwt_expiry(token)
            if expiry is not None and expiry > self._clock() + self._margin:
                self._tokens[key] = (token, expiry)
            else:
                self._tokens.pop(key, None)
            return token

    def forget(self, key_id: str) -> None:
        """Drop every token of a key (it was re-created or closed)."""
        with self._guard:
            for cache_key in [k for k in self._tokens if k.endswith("|" + key_id)]:
                del self._tokens[cache_key]

    def clear(self) -> None:
        """Drop every cached token."""
        with self._guard:
            self._tokens.clear()
