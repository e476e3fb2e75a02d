"""The effects the sans-IO flow yields, and what the driver sends back for each.

| effect        | performed by                          | result sent back   |
| ------------- | ------------------------------------- | ------------------ |
| HttpRequest   | the driver (IMDS: plain httpx;        | HttpResponse       |
|               | STS: the backend's mTLS transport)    |                    |
| OpenKey       | backend, in a worker thread           | RsaPublicNumbers   |
| Sign          | backend, in a worker thread           | bytes (signature)  |
| Attest        | backend, in a worker thread           | str or None        |
| Sleep         | the driver, on its clock              | None               |

An ``HttpRequest`` whose exchange failed below HTTP (connect, TLS, timeout, reset) is answered with a
``TransportFailure`` rather than an exception, so the flow decides whether to retry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ._errors import MsiV2Error
from ._models import Binding


@dataclass(frozen=True)
class HttpRequest:
    """One HTTP exchange. ``endpoint`` names it in errors and logs; ``binding`` selects the client cert."""

    target: Literal["imds", "sts"]
    endpoint: str
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes = field(default=b"", repr=False)
    connect_timeout: float = 2.0
    read_timeout: float = 10.0
    binding: Binding | None = None


@dataclass(frozen=True)
class HttpResponse:
    """A complete response. Header names are lower case; ``body`` is already size-capped."""

    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)


@dataclass(frozen=True)
class TransportFailure:
    """No HTTP answer: ``error`` is what to raise when giving up; ``timed_out`` tells timeouts apart."""

    error: MsiV2Error
    timed_out: bool


@dataclass(frozen=True)
class Sleep:
    """Wait before a retry. ``reason`` is logged; if the deadline comes first, ``give_up_with`` is raised."""

    seconds: float
    reason: str
    give_up_with: MsiV2Error


@dataclass(frozen=True)
class OpenKey:
    """Open or create the binding key called ``key_name``."""

    key_name: str


@dataclass(frozen=True)
class Sign:
    """RSASSA-PSS (SHA-256, MGF1-SHA-256, salt 32) signature of ``data`` with the binding key."""

    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Attest:
    """Attest the binding key with Microsoft Azure Attestation; ``None`` if the backend cannot."""

    endpoint: str
    client_id: str


Effect = HttpRequest | OpenKey | Sign | Attest | Sleep
