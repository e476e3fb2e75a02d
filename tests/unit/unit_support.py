"""Spec facts, a tiny independent DER reader and canned-response builders for the unit tests.

Everything named ``SPEC_*`` or ``CANNED_*`` is copied from PROTOCOL.md, not produced by the code
under test. The DER reader is deliberately separate from ``msiv2_async._der`` and from the emulator's
reader, so that encoder bugs cannot hide behind a matching decoder.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from msiv2_async._effects import HttpResponse

# --- PROTOCOL.md §12 identifiers -------------------------------------------------------------------
TENANT_ID = "5c4b6f1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b"
CLIENT_ID = "0f1e2d3c-4b5a-4697-8877-665544332211"
VM_ID = "9a8b7c6d-5e4f-4a3b-9c2d-1e0f2a3b4c5d"
CORRELATION_ID = "3f2e1d0c-0b0a-4999-8888-777766665555"
ATTESTATION_ENDPOINT = "https://sharedeus2.eus2.attest.azure.net"
MTLS_ENDPOINT = "https://eastus2.mtlsauth.microsoft.com"
IMDS_SERVER = "IMDS/150.870.65.1854"
RESOURCE_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/rg/providers/"
    "Microsoft.ManagedIdentity/userAssignedIdentities/my-identity"
)

# A fixed "now" for every test that checks validity windows or expiry arithmetic.
NOW = datetime(2030, 1, 15, 12, 0, 0, tzinfo=timezone.utc)

# --- PROTOCOL.md §2.2 / §12(b): getplatformmetadata bodies -----------------------------------------
CANNED_METADATA_TEST = (
    b'{"cuId": { "vmId": "fake_vmId" },"clientId": "d3adb33f-c0de-ed0c-c0de-deadb33fc0d3",'
    b'"tenantId": "751a212b-4003-416e-b600-e1f48e40db9f",'
    b'"attestationEndpoint": "https://fake_attestation_endpoint"}'
)
CANNED_METADATA_EXAMPLE = (
    b'{"cuId":{"vmId":"9a8b7c6d-5e4f-4a3b-9c2d-1e0f2a3b4c5d"},'
    b'"clientId":"0f1e2d3c-4b5a-4697-8877-665544332211",'
    b'"tenantId":"5c4b6f1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b",'
    b'"attestationEndpoint":"https://sharedeus2.eus2.attest.azure.net"}'
)

# --- PROTOCOL.md §4.2 / §12(d): issuecredential bodies (the certificate placeholder is substituted) -
CANNED_ISSUE_TEST = (
    '{"client_id": "d3adb33f-c0de-ed0c-c0de-deadb33fc0d3",'
    '"tenant_id": "751a212b-4003-416e-b600-e1f48e40db9f",'
    '"certificate": "MIIDATCCAemgAwIBAgIU...","identity_type": "fake_identity_type",'
    '"mtls_authentication_endpoint": "http://fake_mtls_authentication_endpoint"}'
)
CANNED_ISSUE_EXAMPLE = (
    '{"client_id":"0f1e2d3c-4b5a-4697-8877-665544332211","tenant_id":"5c4b6f1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b",'
    '"certificate":"MIIDpDCCAoygAwIBAgIQ...<base64 DER>...","identity_type":"SystemAssigned",'
    '"mtls_authentication_endpoint":"https://eastus2.mtlsauth.microsoft.com"}'
)

# --- PROTOCOL.md §6.2 / §12(e): token bodies --------------------------------------------------------
CANNED_TOKEN_TEST = (
    b'{"token_type":"mtls_pop","expires_in":"3599","access_token":"some-access-token",'
    b'"resource":"https://management.azure.com/"}'
)
CANNED_TOKEN_EXAMPLE = (
    '{"token_type":"mtls_pop","expires_in":86399,"ext_expires_in":86399,"refresh_in":43199,'
    '"access_token":"%s","resource":"https://vault.azure.net"}'
)
CANNED_STS_ERROR_392200 = (
    b'{"error":"invalid_request","error_description":"AADSTS392200: Client certificate is missing '
    b'from the request. ...","error_codes":[392200]}'
)
CANNED_STS_ERROR_1000611 = (
    b'{"error":"invalid_client","error_description":"AADSTS1000611: ...","error_codes":[1000611]}'
)

# --- PROTOCOL.md §3.4 / §3.5: byte layouts ---------------------------------------------------------
SPEC_PSS_ALGORITHM_IDENTIFIER_NET = bytes.fromhex(
    "303d 0609 2a864886f70d01010a 3030 a00d 300b 0609 608648016503040201 a11a 3018 0609 "
    "2a864886f70d010108 300b 0609 608648016503040201 a203 020120"
)
SPEC_CUID_EXAMPLE_JSON = '{"vmId":"11111111-2222-3333-4444-555555555555"}'
SPEC_CUID_EXAMPLE_ATTRIBUTE_PREFIX = bytes.fromhex("303f060a2b0601040182375a020a3131 0c2f")
# The §12(d) CSR excerpt "MIIDGzCCAdMCAQAwZTE0MDIGCgmSJomT8ixkARkW" decodes to a CSR whose subject starts
# with the DC RDN: it carries the DER of OID 0.9.2342.19200300.100.1.25 followed by an IA5String tag.
SPEC_CSR_EXCERPT = "MIIDGzCCAdMCAQAwZTE0MDIGCgmSJomT8ixkARkW"

OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
OID_COMMON_NAME = "2.5.4.3"
OID_DOMAIN_COMPONENT = "0.9.2342.19200300.100.1.25"
OID_CUID = "1.3.6.1.4.1.311.90.2.10"
OID_EXTENSION_REQUEST = "1.2.840.113549.1.9.14"

TAG_INTEGER = 0x02
TAG_BIT_STRING = 0x03
TAG_NULL = 0x05
TAG_OID = 0x06
TAG_UTF8_STRING = 0x0C
TAG_PRINTABLE_STRING = 0x13
TAG_SEQUENCE = 0x30
TAG_SET = 0x31
TAG_CONTEXT_0_CONSTRUCTED = 0xA0


# --- an independent, strict DER reader -------------------------------------------------------------
@dataclass(frozen=True)
class Tlv:
    """One decoded element."""

    tag: int
    content: bytes
    encoded: bytes

    def children(self) -> list[Tlv]:
        """The elements inside a constructed element."""
        assert self.tag & 0x20, f"tag {self.tag:#x} is primitive"
        return read_all(self.content)


def _read(data: bytes, offset: int) -> tuple[Tlv, int]:
    assert offset + 2 <= len(data), "truncated header"
    tag = data[offset]
    assert tag & 0x1F != 0x1F, "high tag numbers are not used"
    first = data[offset + 1]
    if first < 0x80:
        length, header = first, 2
    else:
        count = first & 0x7F
        assert 1 <= count <= 4, "indefinite or absurd length"
        raw = data[offset + 2 : offset + 2 + count]
        assert raw[0] != 0, "length has a leading zero octet (not DER)"
        length, header = int.from_bytes(raw, "big"), 2 + count
        assert length >= 0x80, "long form used for a short length (not DER)"
    end = offset + header + length
    assert end <= len(data), "content runs past the end"
    return Tlv(tag, data[offset + header : end], data[offset:end]), end


def read_all(data: bytes) -> list[Tlv]:
    """Every element of ``data``, back to back."""
    items, offset = [], 0
    while offset < len(data):
        item, offset = _read(data, offset)
        items.append(item)
    return items


def read_single(data: bytes) -> Tlv:
    """Exactly one element and no trailing bytes."""
    item, end = _read(data, 0)
    assert end == len(data), f"{len(data) - end} trailing bytes"
    return item


def decode_oid(element: Tlv) -> str:
    """Dotted form of an OBJECT IDENTIFIER element."""
    assert element.tag == TAG_OID
    subidentifiers, value = [], 0
    for byte in element.content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            subidentifiers.append(value)
            value = 0
    first = subidentifiers[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(arc) for arc in [*head, *subidentifiers[1:]])


def decode_integer(element: Tlv) -> int:
    """Value of an INTEGER element (two's complement)."""
    assert element.tag == TAG_INTEGER
    return int.from_bytes(element.content, "big", signed=True)


# --- JWTs and responses ----------------------------------------------------------------------------
def b64url(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_jwt(payload: dict[str, Any]) -> str:
    """An unsigned-looking JWT (the client never validates signatures) with ``payload``."""
    header = b64url(json.dumps({"typ": "JWT", "alg": "RS256"}).encode())
    return f"{header}.{b64url(json.dumps(payload).encode())}.{b64url(b'signature-bytes')}"


def imds_response(status: int, body: bytes | str, *, server: str | None = IMDS_SERVER) -> HttpResponse:
    """An IMDS answer; header names are lower case as the driver delivers them."""
    headers = {"content-type": "application/json; charset=utf-8"}
    if server is not None:
        headers["server"] = server
    return HttpResponse(status=status, headers=headers, body=body.encode() if isinstance(body, str) else body)


def sts_response(status: int, body: bytes | str) -> HttpResponse:
    """An STS answer."""
    return HttpResponse(
        status=status,
        headers={"content-type": "application/json; charset=utf-8", "client-request-id": CORRELATION_ID},
        body=body.encode() if isinstance(body, str) else body,
    )


def issue_body(certificate_der: bytes, template: str = CANNED_ISSUE_EXAMPLE, **replace: str) -> str:
    """A canned issuecredential body with a real certificate (and optional field overrides)."""
    obj = json.loads(template)
    obj["certificate"] = base64.b64encode(certificate_der).decode("ascii")
    obj.update(replace)
    return json.dumps(obj)
