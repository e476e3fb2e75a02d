"""The cache rules of _cache.py and the refresh rule of the flow, one test per rule."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest

from msiv2_async._cache import CachedToken, CachePolicy, TokenCache, TokenKey
from msiv2_async._flow import refresh_delay
from msiv2_async._models import Binding, BindingCertificate, ManagedIdentity, MtlsPopToken

T0 = 1_767_225_600.0
DAY = 86_400.0


def certificate(not_before: float = T0, lifetime: float = 7 * DAY, name: str = "a") -> BindingCertificate:
    return BindingCertificate(
        der=name.encode(),
        thumbprint_sha256=name * 43,
        not_before=datetime.fromtimestamp(not_before, timezone.utc),
        not_after=datetime.fromtimestamp(not_before + lifetime, timezone.utc),
        backend="software",
    )


def binding(cert: BindingCertificate) -> Binding:
    return Binding(cert, "client", "tenant", "https://x/token", attested=False)


def token(cert: BindingCertificate, expires_on: float, refresh_on: float) -> MtlsPopToken:
    return MtlsPopToken("secret", "mtls_pop", int(expires_on), int(refresh_on), "s/.default", cert, "id")


@pytest.mark.parametrize(
    ("expires_in", "refresh_in", "expected"),
    [
        (86_400, 3_000, 3_000),
        (86_400, None, 43_200),
        (7_200, None, 3_600),
        (3_599, None, 3_299),
        (100, None, 0),
    ],
)
def test_refresh_comes_from_refresh_in_else_half_life_from_two_hours_else_five_minutes_early(
    expires_in: int, refresh_in: int | None, expected: int
) -> None:
    assert refresh_delay(expires_in, refresh_in) == expected


def test_refresh_in_longer_than_the_lifetime_is_capped() -> None:
    assert refresh_delay(600, 10_000) == 600


def test_token_is_not_served_within_five_minutes_of_its_expiry() -> None:
    policy = CachePolicy()
    cached = token(certificate(), expires_on=T0 + DAY, refresh_on=T0 + DAY / 2)
    assert policy.token_usable(cached, T0 + DAY - 301)
    assert not policy.token_usable(cached, T0 + DAY - 300)


def test_token_is_not_served_past_its_certificate_not_after_minus_skew() -> None:
    policy = CachePolicy()
    cert = certificate(lifetime=DAY / 2)
    cached = token(cert, expires_on=T0 + DAY, refresh_on=T0 + DAY / 2)
    assert policy.token_usable(cached, T0 + DAY / 2 - 301)
    assert not policy.token_usable(cached, T0 + DAY / 2 - 300)


def test_token_is_due_at_refresh_on() -> None:
    policy = CachePolicy()
    cached = token(certificate(), expires_on=T0 + DAY, refresh_on=T0 + 100)
    assert not policy.token_due(cached, T0 + 99)
    assert policy.token_due(cached, T0 + 100)


@pytest.mark.parametrize(("fraction", "due_after_days"), [(0.5, 3.5), (0.25, 1.75), (1.0, 7 - 300 / DAY)])
def test_certificate_renewal_comes_at_the_configured_fraction_of_its_lifetime(
    fraction: float, due_after_days: float
) -> None:
    policy = CachePolicy(renewal_fraction=fraction)
    current = binding(certificate())
    assert not policy.certificate_due(current, T0 + due_after_days * DAY - 1)
    assert policy.certificate_due(current, T0 + due_after_days * DAY)


def test_certificate_stays_usable_until_not_after_minus_skew() -> None:
    policy = CachePolicy()
    current = binding(certificate())
    assert policy.certificate_usable(current, T0 + 7 * DAY - 301)
    assert not policy.certificate_usable(current, T0 + 7 * DAY - 300)


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_renewal_fraction_outside_zero_to_one_is_rejected(fraction: float) -> None:
    with pytest.raises(ValueError, match="renewal_fraction"):
        CachePolicy(renewal_fraction=fraction)


def test_refresh_attempts_are_damped_to_one_per_thirty_seconds() -> None:
    policy = CachePolicy()
    entry = CachedToken(token(certificate(), T0 + DAY, T0))
    assert policy.may_retry_refresh(entry, 1000.0)
    entry.last_refresh_attempt = 1000.0
    assert not policy.may_retry_refresh(entry, 1029.9)
    assert policy.may_retry_refresh(entry, 1030.0)


def test_a_new_certificate_never_serves_tokens_bound_to_the_old_one() -> None:
    cache = TokenCache()
    old, new = certificate(name="a"), certificate(name="b")
    identity = ManagedIdentity.system_assigned()
    old_key = TokenKey(identity, "s1", "mtls_pop", False, old.thumbprint_sha256)
    new_key = TokenKey(identity, "s2", "mtls_pop", False, new.thumbprint_sha256)
    cache.put(old_key, token(old, T0 + DAY, T0 + DAY / 2))
    cache.put(new_key, token(new, T0 + DAY, T0 + DAY / 2))
    assert cache.get(old_key) is None
    entry = cache.get(new_key)
    assert entry is not None
    assert entry.token.source == "cache"


def test_token_key_separates_identity_scope_type_attestation_and_certificate() -> None:
    base = TokenKey(ManagedIdentity.system_assigned(), "s", "mtls_pop", False, "t")
    variants = [
        dataclasses.replace(base, identity=ManagedIdentity.user_assigned(client_id="c")),
        dataclasses.replace(base, scope="other"),
        dataclasses.replace(base, token_type="bearer"),
        dataclasses.replace(base, attested=True),
        dataclasses.replace(base, certificate_thumbprint="u"),
    ]
    assert len({base, *variants}) == 6


def test_cached_token_repr_hides_the_token() -> None:
    entry = CachedToken(token(certificate(), T0 + DAY, T0))
    assert "secret" not in repr(entry)
