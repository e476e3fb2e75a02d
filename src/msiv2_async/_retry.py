"""Retry and throttling policy as pure data and functions (PROTOCOL.md §9, RELIABILITY.md §1.4).

| call            | retried on                                   | schedule                            |
| --------------- | -------------------------------------------- | ----------------------------------- |
| IMDS (both)     | 404, 408, 410, 429, 5xx, transport errors     | 1, 2, 4 s (3 retries); a 410 first   |
|                 | and timeouts                                 | answer: every 10 s, 7 retries (70 s) |
| IMDS            | ``Retry-After`` up to ``retry_after_cap``    | the server's value instead           |
| IMDS            | ``Retry-After`` beyond the cap               | no retry: ImdsThrottledError          |
| STS token       | 5xx without ``Retry-After``, timeouts        | one retry after 1 s                  |
| STS token       | 429, or any answer with ``Retry-After``      | no retry: a throttle window of       |
|                 |                                              | min(Retry-After or 60 s, 3600 s)     |
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

IMDS_RETRYABLE = frozenset({404, 408, 410, 429, *range(500, 600)})
GONE = 410


@dataclass(frozen=True)
class RetryPolicy:
    """Every number of the retry policy; override any of them with ``MsiV2Client(retry=...)``."""

    imds_delays: tuple[float, ...] = (1.0, 2.0, 4.0)
    gone_delay: float = 10.0
    gone_retries: int = 7
    retry_after_cap: float = 60.0
    sts_retry_delay: float = 1.0
    sts_retries: int = 1
    throttle_default: float = 60.0
    throttle_cap: float = 3600.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError("jitter must be in [0, 1)")


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(imds_delays=(), gone_retries=0, sts_retries=0, jitter=0.0)


@dataclass(frozen=True)
class Decision:
    """What to do after a failed attempt: wait ``delay`` and retry, or give up (``delay`` is None).

    ``throttled_for`` is set when the server asked us to stay away longer than we are willing to wait.
    """

    delay: float | None
    throttled_for: float | None = None


GIVE_UP = Decision(None)


def retry_after_seconds(headers: Mapping[str, str], now: datetime | None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds, or an HTTP-date relative to ``Date`` (else ``now``)."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(min(int(value), 10**9))
    try:
        target = email.utils.parsedate_to_datetime(value)
        reference = email.utils.parsedate_to_datetime(headers["date"]) if "date" in headers else now
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if reference is None:
        return None
    if target.tzinfo is None:
        target = target.replace(tzinfo=timezone.utc)
    if reference.tzinfo is None:
        reference = reference.replace(tzinfo=timezone.utc)
    return max((target - reference).total_seconds(), 0.0)


def imds_decision(
    policy: RetryPolicy,
    attempts: int,
    status: int | None,
    first_status: int | None,
    retry_after: float | None,
) -> Decision:
    """After ``attempts`` attempts of an IMDS call, the last one ending with ``status`` (None: transport)."""
    if status is not None and status not in IMDS_RETRYABLE:
        return GIVE_UP
    retries_done = attempts - 1
    max_retries = policy.gone_retries if first_status == GONE else len(policy.imds_delays)
    if retries_done >= max_retries:
        return GIVE_UP
    if status == GONE or not policy.imds_delays:
        delay = policy.gone_delay
    else:
        delay = policy.imds_delays[min(retries_done, len(policy.imds_delays) - 1)]
    if retry_after is not None:
        if retry_after > policy.retry_after_cap:
            return Decision(None, throttled_for=min(retry_after, policy.throttle_cap))
        delay = max(delay, retry_after)
    return Decision(delay)


def sts_decision(
    policy: RetryPolicy, attempts: int, status: int | None, retry_after: float | None
) -> Decision:
    """After ``attempts`` attempts of the token request; ``status`` None means it timed out."""
    if attempts > policy.sts_retries:
        return GIVE_UP
    if status is None or (500 <= status < 600 and retry_after is None):
        return Decision(policy.sts_retry_delay)
    return GIVE_UP


def sts_throttle_window(policy: RetryPolicy, status: int, retry_after: float | None) -> float | None:
    """How long identical token requests fail fast after a final ``status``; None for no window."""
    if retry_after is not None:
        return min(retry_after, policy.throttle_cap)
    if status == 429 or 500 <= status < 600:
        return policy.throttle_default
    return None
