"""The PKCS#10 certificate request IMDS signs (PROTOCOL.md §3), built from public numbers.

The request is built in two halves so that the private key never has to be here:
:func:`request_info` gives the bytes to sign, the backend signs them with RSASSA-PSS
(SHA-256, MGF1-SHA-256, salt 32), and :func:`assemble` wraps info and signature.
The layout is MSAL.NET's (§3.3 "DC, then CN"; §3.5 the 63-byte PSS identifier).
"""

from __future__ import annotations

import base64
import json
import re

from . import _der as der
from ._models import CuId, RsaPublicNumbers

OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_SHA256 = "2.16.840.1.101.3.4.2.1"
OID_COMMON_NAME = "2.5.4.3"
OID_DOMAIN_COMPONENT = "0.9.2342.19200300.100.1.25"
OID_CUID_ATTRIBUTE = "1.3.6.1.4.1.311.90.2.10"
PSS_SALT_LENGTH = 32

_PRINTABLE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]*")

PSS_ALGORITHM_IDENTIFIER = der.sequence(
    der.oid(OID_RSASSA_PSS),
    der.sequence(
        der.context(0, der.sequence(der.oid(OID_SHA256))),
        der.context(1, der.sequence(der.oid(OID_MGF1), der.sequence(der.oid(OID_SHA256)))),
        der.context(2, der.integer(PSS_SALT_LENGTH)),
    ),
)


def cuid_json(cu_id: CuId) -> str:
    """Compact JSON of the compute-unit id: ``vmId`` then ``vmssId``, absent members omitted."""
    members = {"vmId": cu_id.vm_id, "vmssId": cu_id.vmss_id}
    return json.dumps({k: v for k, v in members.items() if v}, separators=(",", ":"))


def _directory_string(value: str) -> bytes:
    tag = der.PRINTABLE_STRING if _PRINTABLE.fullmatch(value) else der.UTF8_STRING
    return der.tlv(tag, value.encode("utf-8"))


def _rdn(attribute_oid: str, value: str) -> bytes:
    return der.set_of(der.sequence(der.oid(attribute_oid), _directory_string(value)))


def subject_name(client_id: str, tenant_id: str) -> bytes:
    """``CN=<client_id>, DC=<tenant_id>`` encoded DC first, as MSAL.NET does."""
    return der.sequence(_rdn(OID_DOMAIN_COMPONENT, tenant_id), _rdn(OID_COMMON_NAME, client_id))


def subject_public_key_info(key: RsaPublicNumbers) -> bytes:
    """rsaEncryption SubjectPublicKeyInfo of ``key``."""
    rsa_public_key = der.sequence(der.integer(key.modulus), der.integer(key.exponent))
    algorithm = der.sequence(der.oid(OID_RSA_ENCRYPTION), der.tlv(der.NULL, b""))
    return der.sequence(algorithm, der.bit_string(rsa_public_key))


def request_info(*, client_id: str, tenant_id: str, cu_id: CuId, key: RsaPublicNumbers) -> bytes:
    """DER of certificationRequestInfo: the bytes the backend signs."""
    cuid_value = der.tlv(der.UTF8_STRING, cuid_json(cu_id).encode("utf-8"))
    attribute = der.sequence(der.oid(OID_CUID_ATTRIBUTE), der.set_of(cuid_value))
    return der.sequence(
        der.integer(0),
        subject_name(client_id, tenant_id),
        subject_public_key_info(key),
        der.context(0, attribute),
    )


def assemble(info: bytes, signature: bytes) -> bytes:
    """The complete CertificationRequest (DER) from its info and RSASSA-PSS signature."""
    return der.sequence(info, PSS_ALGORITHM_IDENTIFIER, der.bit_string(signature))


def wire_form(csr_der: bytes) -> str:
    """Single-line standard base64 with padding, no PEM armour (§3.6)."""
    return base64.b64encode(csr_der).decode("ascii")
