"""Plain data the emulator is configured with: identities, scripted faults and the defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_TENANT_ID = "5c4b6f1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b"
"""Tenant of every emulated identity unless the caller picks another one."""

DEFAULT_VM_ID = "9a8b7c6d-5e4f-4a3b-9c2d-1e0f2a3b4c5d"
"""The emulated VM's ``vmId``; it is the only member of ``cuId``."""

IMDS_SERVER_HEADER = "IMDS/150.870.65.1854"
"""The ``Server`` header real IMDS sends (and MSAL.NET insists on)."""

ATTESTATION_ENDPOINT = "https://sharedeus2.eus2.attest.azure.net"
"""Advertised by getplatformmetadata; the emulator never contacts it."""

ENDPOINTS = ("getplatformmetadata", "issuecredential", "token", "resource")
"""Names accepted by :meth:`Emulator.inject` and used as keys of :attr:`Emulator.stats`."""

_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
_RESOURCE_GROUP = "msiv2-emulator-rg"


@dataclass(frozen=True)
class Identity:
    """One managed identity of the emulated VM.

    ``client_id`` and ``object_id`` are GUID strings; ``resource_id`` is the ARM id (for a user-assigned
    identity ``/subscriptions/<sub>/resourcegroups/<rg>/providers/Microsoft.ManagedIdentity/
    userAssignedIdentities/<name>``); ``user_assigned`` is False only for the VM's system-assigned identity.
    """

    client_id: str
    object_id: str
    resource_id: str
    user_assigned: bool


@dataclass
class Fault:
    """A scripted answer that replaces the next normal answer of one endpoint.

    ``status``, ``headers`` and ``body`` make up the response; ``delay`` seconds pass before it is sent
    (useful to provoke client time-outs). ``server_header`` only matters on the IMDS endpoints: ``None``
    drops the ``Server`` header, a string replaces it. When ``headers`` carries no ``Content-Type`` and the
    body is not empty, the emulator sends ``application/json; charset=utf-8`` if the body parses as JSON
    and ``text/plain; charset=utf-8`` otherwise.
    """

    status: int = 500
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | str = b""
    delay: float = 0.0
    server_header: str | None = IMDS_SERVER_HEADER


def user_assigned_resource_id(name: str) -> str:
    """The ARM resource id of a user-assigned identity called ``name`` in the emulator's resource group."""
    return (
        f"/subscriptions/{_SUBSCRIPTION}/resourcegroups/{_RESOURCE_GROUP}"
        f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )


SYSTEM_IDENTITY = Identity(
    client_id="0f1e2d3c-4b5a-4697-8877-665544332211",
    object_id="6e5d4c3b-2a19-4f08-97e6-d5c4b3a29180",
    resource_id=(
        f"/subscriptions/{_SUBSCRIPTION}/resourceGroups/{_RESOURCE_GROUP}"
        "/providers/Microsoft.Compute/virtualMachines/msiv2-emulator-vm"
    ),
    user_assigned=False,
)
"""The emulated VM's system-assigned identity."""

DEFAULT_USER_ASSIGNED = Identity(
    client_id="1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9",
    object_id="2c3d4e5f-6071-4829-93a4-b5c6d7e8f90a",
    resource_id=user_assigned_resource_id("msiv2-emulator-uami"),
    user_assigned=True,
)
"""The one user-assigned identity an :class:`Emulator` has unless told otherwise."""
