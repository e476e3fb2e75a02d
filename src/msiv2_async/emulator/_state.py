"""State shared between the caller's thread and the emulator's event loop, guarded by one lock."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from cryptography import x509

from ._models import ENDPOINTS, Fault, Identity


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
    """Request counters, queued faults and the logs tests inspect."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENDPOINTS, 0))
    faults: dict[str, deque[Fault]] = field(default_factory=lambda: {name: deque() for name in ENDPOINTS})
    issued_certificates: list[x509.Certificate] = field(default_factory=list)
    resource_log: list[dict[str, Any]] = field(default_factory=list)

    def begin(self, endpoint: str) -> Fault | None:
        """Count one request to ``endpoint`` and take the next queued fault for it, if any."""
        with self.lock:
            self.counts[endpoint] += 1
            queue = self.faults[endpoint]
            return queue.popleft() if queue else None

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

    def queue(self, endpoint: str, faults: tuple[Fault, ...]) -> None:
        """Append faults to the queue of ``endpoint``."""
        if endpoint not in self.faults:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {', '.join(ENDPOINTS)}")
        with self.lock:
            self.faults[endpoint].extend(faults)

    def record_certificate(self, certificate: x509.Certificate) -> None:
        """Remember a certificate IMDS issued."""
        with self.lock:
            self.issued_certificates.append(certificate)

    def record_resource(self, entry: dict[str, Any]) -> None:
        """Remember one resource request."""
        with self.lock:
            self.resource_log.append(entry)
