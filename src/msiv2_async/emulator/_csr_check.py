"""Strict verification of the PKCS#10 request sent to ``issuecredential`` (PROTOCOL.md §3).

Both client layouts are accepted: RDN order DC,CN ([NET]) or CN,DC ([PY]); any DirectoryString or
IA5String for CN/DC; the RSASSA-PSS AlgorithmIdentifier without NULLs and trailer (63 bytes, [NET]) or
with NULL hash parameters and an explicit trailer field 1 (72 bytes, [PY]).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from . import _der_reader as der

OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_SHA256 = "2.16.840.1.101.3.4.2.1"
OID_COMMON_NAME = "2.5.4.3"
OID_DOMAIN_COMPONENT = "0.9.2342.19200300.100.1.25"
OID_CUID = "1.3.6.1.4.1.311.90.2.10"

MIN_MODULUS_BITS = 2048
SALT_LENGTH = 32


class CsrError(ValueError):
    """The request breaks one of the rules; the message names the rule."""


def check_csr(
    data: bytes, *, client_id: str, tenant_id: str, cu_id: Mapping[str, object]
) -> rsa.RSAPublicKey:
    """Verify a DER CSR for the identity ``client_id`` in ``tenant_id``; return its public key.

    GUIDs are compared case-insensitively; ``cu_id`` is compared semantically (``vmId``/``vmssId`` of
    the parsed JSON, a JSON ``null`` counting as absent).
    """
    try:
        return _check(data, client_id=client_id, tenant_id=tenant_id, cu_id=cu_id)
    except der.DerError as exc:
        raise CsrError(f"CSR is not well-formed DER: {exc}") from exc


def _check(data: bytes, *, client_id: str, tenant_id: str, cu_id: Mapping[str, object]) -> rsa.RSAPublicKey:
    outer = der.read_single(data).expect(der.SEQUENCE, "CertificationRequest")
    parts = outer.children()
    if len(parts) != 3:
        raise CsrError("CertificationRequest must have exactly 3 elements")
    info, algorithm, signature_element = parts
    info.expect(der.SEQUENCE, "certificationRequestInfo")
    fields = info.children()
    if len(fields) != 4:
        raise CsrError("certificationRequestInfo must be version, subject, subjectPKInfo, attributes")
    version, subject, spki, attributes = fields
    if der.decode_integer(version) != 0:
        raise CsrError("CSR version must be 0")
    common_name, domain_component = _subject(subject)
    if common_name.lower() != client_id.lower():
        raise CsrError(f"subject CN {common_name!r} is not the identity's clientId {client_id}")
    if domain_component.lower() != tenant_id.lower():
        raise CsrError(f"subject DC {domain_component!r} is not the tenantId {tenant_id}")
    key = _public_key(spki)
    _cuid_attribute(attributes, cu_id)
    _pss_algorithm(algorithm)
    signature = der.decode_bit_string(signature_element)
    if len(signature) != (key.key_size + 7) // 8:
        raise CsrError("signature length does not match the modulus length")
    try:
        key.verify(
            signature,
            info.encoded,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=SALT_LENGTH),
            hashes.SHA256(),
        )
    except InvalidSignature as exc:
        raise CsrError(
            "signature does not verify (RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32) over "
            "certificationRequestInfo"
        ) from exc
    return key


def _subject(subject: der.Element) -> tuple[str, str]:
    subject.expect(der.SEQUENCE, "subject Name")
    values: dict[str, str] = {}
    rdns = subject.children()
    for rdn in rdns:
        members = rdn.expect(der.SET, "RelativeDistinguishedName").children()
        if len(members) != 1:
            raise CsrError("every subject RDN must hold exactly one attribute")
        pair = members[0].expect(der.SEQUENCE, "AttributeTypeAndValue").children()
        if len(pair) != 2:
            raise CsrError("AttributeTypeAndValue must be type and value")
        oid = der.decode_oid(pair[0])
        if oid not in (OID_COMMON_NAME, OID_DOMAIN_COMPONENT):
            raise CsrError(f"subject may only contain CN and DC, found {oid}")
        if oid in values:
            raise CsrError(f"subject contains {oid} more than once")
        values[oid] = der.decode_string(pair[1])
    if len(rdns) != 2 or len(values) != 2:
        raise CsrError("subject must be exactly CN=<clientId> and DC=<tenantId> (either order)")
    return values[OID_COMMON_NAME], values[OID_DOMAIN_COMPONENT]


def _public_key(spki: der.Element) -> rsa.RSAPublicKey:
    spki.expect(der.SEQUENCE, "subjectPKInfo")
    parts = spki.children()
    if len(parts) != 2:
        raise CsrError("subjectPKInfo must be algorithm and key")
    algorithm = parts[0].expect(der.SEQUENCE, "subjectPKInfo algorithm").children()
    if len(algorithm) != 2 or der.decode_oid(algorithm[0]) != OID_RSA_ENCRYPTION:
        raise CsrError("public key must be rsaEncryption with NULL parameters")
    der.decode_null(algorithm[1])
    der.decode_bit_string(parts[1])
    try:
        key = serialization.load_der_public_key(spki.encoded)
    except ValueError as exc:
        raise CsrError(f"RSA public key does not parse: {exc}") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise CsrError("public key must be RSA")
    if key.key_size < MIN_MODULUS_BITS:
        raise CsrError(f"RSA modulus must be at least {MIN_MODULUS_BITS} bits, got {key.key_size}")
    return key


def _cuid_attribute(attributes: der.Element, cu_id: Mapping[str, object]) -> None:
    attributes.expect(0xA0, "attributes [0]")
    items = attributes.children()
    if len(items) != 1:
        raise CsrError(f"CSR must carry exactly one attribute ({OID_CUID}), found {len(items)}")
    pair = items[0].expect(der.SEQUENCE, "Attribute").children()
    if len(pair) != 2 or der.decode_oid(pair[0]) != OID_CUID:
        raise CsrError(f"the attribute must be {OID_CUID} (cuId)")
    values = pair[1].expect(der.SET, "attribute values").children()
    if len(values) != 1:
        raise CsrError("the cuId attribute must hold exactly one value")
    text = der.decode_string(values[0].expect(der.UTF8_STRING, "cuId value (UTF8String)"))
    try:
        sent = json.loads(text)
    except ValueError as exc:
        raise CsrError("the cuId attribute is not JSON") from exc
    if not isinstance(sent, dict):
        raise CsrError("the cuId attribute must be a JSON object")
    for name in ("vmId", "vmssId"):
        if sent.get(name) != cu_id.get(name):
            raise CsrError(f"the cuId attribute's {name} does not match getplatformmetadata")


def _hash_algorithm(element: der.Element, what: str) -> None:
    parts = element.expect(der.SEQUENCE, what).children()
    if not parts or der.decode_oid(parts[0]) != OID_SHA256:
        raise CsrError(f"{what} must be SHA-256")
    if len(parts) == 2:
        der.decode_null(parts[1])
    elif len(parts) != 1:
        raise CsrError(f"{what} has unexpected parameters")


def _pss_algorithm(algorithm: der.Element) -> None:
    parts = algorithm.expect(der.SEQUENCE, "signatureAlgorithm").children()
    if len(parts) != 2 or der.decode_oid(parts[0]) != OID_RSASSA_PSS:
        raise CsrError("signature algorithm must be RSASSA-PSS (1.2.840.113549.1.1.10) with parameters")
    params = parts[1].expect(der.SEQUENCE, "RSASSA-PSS-params").children()
    tags = [param.tag for param in params]
    if tags not in ([0xA0, 0xA1, 0xA2], [0xA0, 0xA1, 0xA2, 0xA3]):
        raise CsrError("RSASSA-PSS parameters must be hashAlgorithm, maskGenAlgorithm, saltLength[, trailer]")
    (hash_algorithm,) = _explicit(params[0])
    _hash_algorithm(hash_algorithm, "PSS hashAlgorithm")
    (mgf,) = _explicit(params[1])
    mgf_parts = mgf.expect(der.SEQUENCE, "maskGenAlgorithm").children()
    if len(mgf_parts) != 2 or der.decode_oid(mgf_parts[0]) != OID_MGF1:
        raise CsrError("PSS maskGenAlgorithm must be MGF1")
    _hash_algorithm(mgf_parts[1], "MGF1 hash")
    (salt,) = _explicit(params[2])
    if der.decode_integer(salt) != SALT_LENGTH:
        raise CsrError(f"PSS saltLength must be {SALT_LENGTH}")
    if len(params) == 4:
        (trailer,) = _explicit(params[3])
        if der.decode_integer(trailer) != 1:
            raise CsrError("PSS trailerField must be 1")


def _explicit(element: der.Element) -> list[der.Element]:
    inner = element.children()
    if len(inner) != 1:
        raise CsrError("explicit tag must wrap exactly one element")
    return inner
