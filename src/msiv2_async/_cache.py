"""Cache rules, as pure functions of a clock reading: when a token or certificate may be served or renewed.

Tokens
- served only while ``now < expires_on - 300 s`` and ``now < certificate NotAfter - 300 s``;
- due for refresh at ``refresh_on`` (see :func:`msiv2_async._flow.refresh_time`) or when their
  certificate is due for renewal; a due token is still served while it is valid, and one refresh runs;
- a failed refresh is not retried more often than every 30 s while the old token is served.

Binding certificates
- renewed once ``renewal_fraction`` of their lifetime has passed (default one half: 3.5 days of a
  7-day certificate), or when the STS rejects them;
- usable for new token requests until ``NotAfter - 300 s`` even when renewal is due but failed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from ._models import BearerToken, Binding, ManagedIdentity, MtlsPopToken

EXPIRY_MARGIN = 300.0
CERTIFICATE_SKEW = 300.0
REFRESH_RETRY_INTERVAL = 30.0
DEFAULT_RENEWAL_FRACTION = 0.5


@dataclass(frozen=True)
class TokenKey:
    """What a cached token is for: identity, scope, token type, attestation mode, certificate."""

    identity: ManagedIdentity
    scope: str
    token_type: str
    attested: bool
    certificate_thumbprint: str


@dataclass
class CachedToken:
    """A cached token and when its last refresh was attempted (monotonic seconds)."""

    token: MtlsPopToken | BearerToken
    last_refresh_attempt: float | None = None


@dataclass(frozen=True)
class CachePolicy:
    """The numbers behind the rules above; every one overridable."""

    renewal_fraction: float = DEFAULT_RENEWAL_FRACTION
    expiry_margin: float = EXPIRY_MARGIN
    certificate_skew: float = CERTIFICATE_SKEW
    refresh_retry_interval: float = REFRESH_RETRY_INTERVAL

    def __post_init__(self) -> None:
        if not 0.0 < self.renewal_fraction <= 1.0:
            raise ValueError("renewal_fraction must be in (0, 1]")

    def certificate_usable(self, binding: Binding, now: float) -> bool:
        """The certificate may still carry token requests and cached tokens."""
        return now < binding.certificate.not_after.timestamp() - self.certificate_skew

    def certificate_due(self, binding: Binding, now: float) -> bool:
        """The certificate should be replaced (it may still be usable)."""
        not_before = binding.certificate.not_before.timestamp()
        not_after = binding.certificate.not_after.timestamp()
        renew_at = not_before + self.renewal_fraction * (not_after - not_before)
        return now >= renew_at or not self.certificate_usable(binding, now)

    def token_usable(self, token: MtlsPopToken | BearerToken, now: float) -> bool:
        """The token may be served: not near its expiry nor (if bound) its certificate's."""
        end = token.expires_on - self.expiry_margin
        if token.binding_certificate is not None:
            end = min(end, token.binding_certificate.not_after.timestamp() - self.certificate_skew)
        return now < end

    def token_due(self, token: MtlsPopToken | BearerToken, now: float) -> bool:
        """The token should be refreshed (it may still be usable)."""
        return token.refresh_on is not None and now >= token.refresh_on

    def fresh_until(self, token: MtlsPopToken | BearerToken, binding: Binding | None) -> float:
        """The wall time until which ``token`` is usable and neither it nor ``binding`` is due."""
        end = token.expires_on - self.expiry_margin
        if token.refresh_on is not None:
            end = min(end, token.refresh_on)
        for certificate in (token.binding_certificate, binding.certificate if binding else None):
            if certificate is not None:
                not_before = certificate.not_before.timestamp()
                not_after = certificate.not_after.timestamp()
                renew_at = not_before + self.renewal_fraction * (not_after - not_before)
                end = min(end, renew_at, not_after - self.certificate_skew)
        return end

    def may_retry_refresh(self, entry: CachedToken, monotonic_now: float) -> bool:
        """Damping: at most one refresh attempt per ``refresh_retry_interval``."""
        last = entry.last_refresh_attempt
        return last is None or monotonic_now - last >= self.refresh_retry_interval


@dataclass
class CacheStats:
    """Counters reported by ``MsiV2Client.cache_stats`` and the CLI's ``--json``."""

    hits: int = 0
    misses: int = 0
    stale_hits: int = 0
    token_flights: int = 0
    certificate_mints: int = 0
    background_refreshes: int = 0
    failed_refreshes: int = 0
    remints_on_rejection: int = 0
    persisted_certificates_loaded: int = 0
    key_regenerations: int = 0

    def as_dict(self) -> dict[str, int]:
        """A plain dict copy."""
        return dict(self.__dict__)


@dataclass
class TokenCache:
    """In-memory tokens, keyed by :class:`TokenKey`; tokens never leave memory.

    ``hot`` is the warm path's shortcut: per token type and scope *as the caller spelled it*, a token
    that may be served with no other check until a wall time (:meth:`CachePolicy.fresh_until`). Any
    change to the entries empties it.
    """

    entries: dict[TokenKey, CachedToken] = field(default_factory=dict)
    hot: dict[str, dict[str, tuple[MtlsPopToken | BearerToken, float]]] = field(default_factory=dict)

    def get(self, key: TokenKey) -> CachedToken | None:
        """The entry for ``key``."""
        return self.entries.get(key)

    def remember(self, token_type: str, scope: str, token: MtlsPopToken | BearerToken, until: float) -> None:
        """Serve ``token`` for (``token_type``, ``scope``) from :attr:`hot` until the wall time ``until``."""
        self.hot.setdefault(token_type, {})[scope] = (token, until)

    def put(self, key: TokenKey, token: MtlsPopToken | BearerToken) -> None:
        """Store ``token`` (served as ``source="cache"``); a bound token evicts other certificates' tokens."""
        self.hot.clear()
        if key.certificate_thumbprint:
            self.drop_certificate(lambda thumbprint: thumbprint not in ("", key.certificate_thumbprint))
        self.entries[key] = CachedToken(dataclasses.replace(token, source="cache"))

    def drop_certificate(self, matches: Callable[[str], bool]) -> None:
        """Forget the tokens whose certificate thumbprint ``matches``."""
        self.hot.clear()
        self.entries = {k: v for k, v in self.entries.items() if not matches(k.certificate_thumbprint)}

    def clear(self) -> None:
        """Forget every token."""
        self.hot.clear()
        self.entries.clear()
