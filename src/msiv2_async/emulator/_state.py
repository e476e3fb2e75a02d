"""State shared between the caller's thread and the emulator's event loop, guarded by one lock."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from cryptography import x509

from ._models import COUNTERS, ENDPOINTS, TLS_MODES, Fault, Identity

TLS_ENDPOINTS = ("token", "resource")
"""The endpoints served over TLS; their listeners have a TLS mode and can reject client certificates."""


@dataclass
class Settings:
    """What the emulated VM and tenant look like; the knobs may be changed while the emulator runs."""

    tenant_id: str
    vm_id: str
    system_identity: Identity
    user_assigned: tuple[Identity, ...]
    certificate_lifetime: timedelta
    token_lifetime: timedelta
    require_attestation: bool

    @property
    def cu_id(self) -> dict[str, str]:
        """The ``cuId`` object getplatformmetadata returns."""
        return {"vmId": self.vm_id}

    def identity_by_client_id(self, client_id: str) -> Identity | None:
        """The identity (system- or user-assigned) with this client id, compared case-insensitively."""
        for identity in (self.system_identity, *self.user_assigned):
            if identity.client_id.lower() == client_id.lower():
                return identity
        return None


@dataclass
class State:
    """Request counters, queued faults, TLS knobs, handed-out secrets and the logs tests inspect."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*ENDPOINTS, *COUNTERS), 0))
    faults: dict[str, deque[Fault]] = field(default_factory=lambda: {name: deque() for name in ENDPOINTS})
    issued_certificates: list[x509.Certificate] = field(default_factory=list)
    resource_log: list[dict[str, Any]] = field(default_factory=list)
    secrets: dict[str, None] = field(default_factory=dict)
    tls_modes: dict[str, str] = field(default_factory=lambda: dict.fromkeys(TLS_ENDPOINTS, "normal"))
    pending_rejections: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TLS_ENDPOINTS, 0))
    active: int = 0

    def begin(self, endpoint: str) -> Fault | None:
        """Count one request to ``endpoint`` and take the next queued fault for it, if any."""
        with self.lock:
            self.counts[endpoint] += 1
            queue = self.faults[endpoint]
            return queue.popleft() if queue else None

    def count_hygiene(self, *, metadata_missing: bool, forwarded_for: bool) -> None:
        """Count an IMDS request without ``Metadata: true`` and/or with ``X-Forwarded-For``."""
        with self.lock:
            if metadata_missing:
                self.counts["metadata_header_missing"] += 1
                self.counts["rejected_requests"] += 1
            if forwarded_for:
                self.counts["forwarded_for"] += 1
                self.counts["rejected_requests"] += 1

    def snapshot(self) -> dict[str, int]:
        """A copy of the counters."""
        with self.lock:
            return dict(self.counts)

    def reset(self) -> None:
        """Set every counter back to zero."""
        with self.lock:
            for name in self.counts:
                self.counts[name] = 0

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self.lock:
            for queue in self.faults.values():
                queue.clear()

    def queue(self, endpoint: str, faults: Iterable[Fault]) -> None:
        """Append faults to the queue of ``endpoint`` (all or none: each is checked first)."""
        if endpoint not in self.faults:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {', '.join(ENDPOINTS)}")
        checked = list(faults)
        for fault in checked:
            if not isinstance(fault, Fault):
                raise TypeError(f"expected Fault instances, got {type(fault).__name__}")
            fault.check_endpoint(endpoint)
        with self.lock:
            self.faults[endpoint].extend(checked)

    def set_tls_mode(self, endpoint: str, mode: str) -> None:
        """Switch the TLS behaviour of ``endpoint``'s listener (one of :data:`TLS_MODES`)."""
        if mode not in TLS_MODES:
            raise ValueError(f"unknown TLS mode {mode!r}; expected one of {', '.join(TLS_MODES)}")
        with self.lock:
            self.tls_modes[endpoint] = mode

    def tls_mode(self, endpoint: str) -> str:
        """The TLS mode of ``endpoint``'s listener."""
        with self.lock:
            return self.tls_modes[endpoint]

    def set_rejections(self, endpoint: str, count: int) -> None:
        """Make the next ``count`` TLS handshakes of ``endpoint``'s listener reject the client certificate."""
        if count < 0:
            raise ValueError("the number of handshakes to reject must not be negative")
        with self.lock:
            self.pending_rejections[endpoint] = count

    def take_rejection(self, endpoint: str) -> bool:
        """Whether the TLS handshake starting now on ``endpoint``'s listener must reject the client cert.

        A pending count from :meth:`set_rejections` is used first, then a ``handshake_reject`` fault at the
        head of the endpoint's queue. Either way the rejection is counted.
        """
        with self.lock:
            queue = self.faults[endpoint]
            if self.pending_rejections[endpoint] > 0:
                self.pending_rejections[endpoint] -= 1
            elif queue and queue[0].action == "handshake_reject":
                queue.popleft()
            else:
                return False
            self.counts[f"{endpoint}_handshake_rejections"] += 1
            return True

    def record_certificate(self, certificate: x509.Certificate) -> None:
        """Remember a certificate IMDS issued."""
        with self.lock:
            self.issued_certificates.append(certificate)

    def record_resource(self, entry: dict[str, Any]) -> None:
        """Remember one resource request."""
        with self.lock:
            self.resource_log.append(entry)

    def record_secrets(self, *values: str) -> None:
        """Remember secret strings the emulator handed out (reported by :meth:`Emulator.sentinels`)."""
        with self.lock:
            for value in values:
                if value:
                    self.secrets[value] = None

    def secret_list(self) -> list[str]:
        """The secrets handed out so far, in order."""
        with self.lock:
            return list(self.secrets)

    def enter(self) -> None:
        """One more request is being handled."""
        with self.lock:
            self.active += 1

    def leave(self) -> None:
        """A request is no longer being handled."""
        with self.lock:
            self.active -= 1
