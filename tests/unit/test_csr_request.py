"""The PKCS#10 request of PROTOCOL.md §3, taken apart field by field with an independent reader."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from unit_support import (
    CLIENT_ID,
    OID_COMMON_NAME,
    OID_CUID,
    OID_DOMAIN_COMPONENT,
    OID_EXTENSION_REQUEST,
    OID_RSASSA_PSS,
    SPEC_CUID_EXAMPLE_ATTRIBUTE_PREFIX,
    SPEC_CUID_EXAMPLE_JSON,
    SPEC_PSS_ALGORITHM_IDENTIFIER_NET,
    TAG_BIT_STRING,
    TAG_CONTEXT_0_CONSTRUCTED,
    TAG_PRINTABLE_STRING,
    TAG_SEQUENCE,
    TAG_SET,
    TAG_UTF8_STRING,
    TENANT_ID,
    VM_ID,
    Tlv,
    decode_integer,
    decode_oid,
    read_single,
)

from msiv2_async import _csr
from msiv2_async._models import CuId, RsaPublicNumbers
from msiv2_async.backends.software import SoftwareBackend

VMSS_ID = "6b5a4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d"


@dataclass(frozen=True)
class BuiltCsr:
    info: bytes
    signature: bytes
    der: bytes


@pytest.fixture(scope="module")
def built(software_backend: SoftwareBackend, backend_numbers: RsaPublicNumbers) -> BuiltCsr:
    info = _csr.request_info(
        client_id=CLIENT_ID, tenant_id=TENANT_ID, cu_id=CuId(vm_id=VM_ID), key=backend_numbers
    )
    signature = software_backend.sign(info)
    return BuiltCsr(info, signature, _csr.assemble(info, signature))


def _parts(csr_der: bytes) -> tuple[Tlv, Tlv, Tlv]:
    outer = read_single(csr_der)
    assert outer.tag == TAG_SEQUENCE
    info, algorithm, signature = outer.children()
    return info, algorithm, signature


def _info_fields(csr_der: bytes) -> list[Tlv]:
    return _parts(csr_der)[0].children()


def test_csr_is_info_algorithm_and_signature_with_no_trailing_bytes(built: BuiltCsr) -> None:
    info, algorithm, signature = _parts(built.der)
    assert info.encoded == built.info
    assert (info.tag, algorithm.tag, signature.tag) == (TAG_SEQUENCE, TAG_SEQUENCE, TAG_BIT_STRING)


def test_csr_info_has_version_subject_spki_and_attributes_in_order(built: BuiltCsr) -> None:
    fields = _info_fields(built.der)
    assert [f.tag for f in fields] == [0x02, TAG_SEQUENCE, TAG_SEQUENCE, TAG_CONTEXT_0_CONSTRUCTED]


def test_csr_version_is_zero(built: BuiltCsr) -> None:
    version = _info_fields(built.der)[0]
    assert version.encoded == b"\x02\x01\x00"
    assert decode_integer(version) == 0


def test_csr_subject_is_dc_then_cn_as_printable_strings(built: BuiltCsr) -> None:
    rdns = _info_fields(built.der)[1].children()
    assert len(rdns) == 2
    decoded = []
    for rdn in rdns:
        assert rdn.tag == TAG_SET
        (attribute,) = rdn.children()  # single-valued RDN
        attribute_type, value = attribute.children()
        assert value.tag == TAG_PRINTABLE_STRING
        decoded.append((decode_oid(attribute_type), value.content.decode("ascii")))
    assert decoded == [(OID_DOMAIN_COMPONENT, TENANT_ID), (OID_COMMON_NAME, CLIENT_ID)]


def test_csr_subject_renders_as_cn_then_dc_in_rfc4514(built: BuiltCsr) -> None:
    csr = x509.load_der_x509_csr(built.der)
    assert csr.subject.rfc4514_string() == f"CN={CLIENT_ID},DC={TENANT_ID}"


def test_subject_value_outside_printable_string_falls_back_to_utf8string() -> None:
    name = read_single(_csr.subject_name("client@example", "tenant"))
    cn_value = name.children()[1].children()[0].children()[1]
    dc_value = name.children()[0].children()[0].children()[1]
    assert cn_value.tag == TAG_UTF8_STRING  # '@' is not a PrintableString character
    assert dc_value.tag == TAG_PRINTABLE_STRING


def test_csr_subject_cannot_be_extended_by_a_hostile_client_id() -> None:
    name = read_single(_csr.subject_name("x, O=Evil", TENANT_ID))
    assert len(name.children()) == 2
    cn = name.children()[1].children()[0].children()[1]
    assert cn.content == b"x, O=Evil"


def test_csr_subject_public_key_info_is_rsa_encryption_of_our_key(
    built: BuiltCsr, backend_public_key: rsa.RSAPublicKey
) -> None:
    spki = _info_fields(built.der)[2]
    assert spki.encoded == backend_public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    algorithm, key_bits = spki.children()
    oid, parameters = algorithm.children()
    assert decode_oid(oid) == "1.2.840.113549.1.1.1"
    assert parameters.encoded == b"\x05\x00"
    assert key_bits.content[0] == 0  # no unused bits


def test_csr_key_is_rsa_2048_with_exponent_65537(built: BuiltCsr) -> None:
    key_bits = _info_fields(built.der)[2].children()[1]
    modulus, exponent = read_single(key_bits.content[1:]).children()
    assert decode_integer(modulus).bit_length() == 2048
    assert decode_integer(exponent) == 65537


def test_csr_has_exactly_one_attribute_the_cuid_as_utf8string_json(built: BuiltCsr) -> None:
    attributes = _info_fields(built.der)[3].children()
    assert len(attributes) == 1
    attribute_type, values = attributes[0].children()
    assert decode_oid(attribute_type) == OID_CUID
    assert values.tag == TAG_SET
    (value,) = values.children()
    assert value.tag == TAG_UTF8_STRING
    assert value.content == json.dumps({"vmId": VM_ID}, separators=(",", ":")).encode()


def test_csr_carries_no_extension_request(built: BuiltCsr) -> None:
    attributes = _info_fields(built.der)[3].children()
    oids = [decode_oid(a.children()[0]) for a in attributes]
    assert OID_EXTENSION_REQUEST not in oids


def test_cuid_attribute_matches_the_spec_example_bytes(backend_numbers: RsaPublicNumbers) -> None:
    info = _csr.request_info(
        client_id=CLIENT_ID,
        tenant_id=TENANT_ID,
        cu_id=CuId(vm_id="11111111-2222-3333-4444-555555555555"),
        key=backend_numbers,
    )
    attribute = read_single(info).children()[3].children()[0]
    assert attribute.encoded == SPEC_CUID_EXAMPLE_ATTRIBUTE_PREFIX + SPEC_CUID_EXAMPLE_JSON.encode()


@pytest.mark.parametrize(
    ("cu_id", "expected"),
    [
        (CuId(vm_id="a"), '{"vmId":"a"}'),
        (CuId(vmss_id="b"), '{"vmssId":"b"}'),
        (CuId(vmss_id="b", vm_id="a"), '{"vmId":"a","vmssId":"b"}'),
        (CuId(vm_id="a", vmss_id=None), '{"vmId":"a"}'),
    ],
)
def test_cuid_json_is_compact_vm_id_then_vmss_id_absent_members_omitted(cu_id: CuId, expected: str) -> None:
    assert _csr.cuid_json(cu_id) == expected


def test_csr_signature_algorithm_is_the_63_byte_net_pss_identifier(built: BuiltCsr) -> None:
    algorithm = _parts(built.der)[1]
    assert len(SPEC_PSS_ALGORITHM_IDENTIFIER_NET) == 63
    assert algorithm.encoded == SPEC_PSS_ALGORITHM_IDENTIFIER_NET
    assert decode_oid(algorithm.children()[0]) == OID_RSASSA_PSS


def test_csr_signature_is_rsassa_pss_sha256_salt_32_over_the_info(
    built: BuiltCsr, backend_public_key: rsa.RSAPublicKey
) -> None:
    signature = _parts(built.der)[2]
    assert signature.content[0] == 0  # no unused bits
    assert len(signature.content) == 257
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    backend_public_key.verify(signature.content[1:], built.info, pss, hashes.SHA256())


def test_csr_signature_is_valid_for_cryptography(
    built: BuiltCsr, backend_public_key: rsa.RSAPublicKey
) -> None:
    csr = x509.load_der_x509_csr(built.der)
    assert csr.is_signature_valid
    assert csr.public_key() == backend_public_key
    assert csr.attributes.get_attribute_for_oid(x509.ObjectIdentifier(OID_CUID)).value == (
        json.dumps({"vmId": VM_ID}, separators=(",", ":")).encode()
    )


def test_csr_with_a_tampered_info_is_not_valid_for_cryptography(built: BuiltCsr) -> None:
    tampered = bytearray(built.der)
    position = bytes(tampered).find(CLIENT_ID.encode())
    tampered[position] ^= 0x01
    assert not x509.load_der_x509_csr(bytes(tampered)).is_signature_valid


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_csr_verifies_with_openssl_req(built: BuiltCsr) -> None:
    result = subprocess.run(
        ["openssl", "req", "-inform", "DER", "-verify", "-noout", "-subject"],
        input=built.der,
        capture_output=True,
        check=False,
        timeout=10,
    )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    assert "verify OK" in output
    assert CLIENT_ID in output
    assert TENANT_ID in output


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_csr_with_both_cuid_members_verifies_with_openssl_req(
    software_backend: SoftwareBackend, backend_numbers: RsaPublicNumbers
) -> None:
    info = _csr.request_info(
        client_id=CLIENT_ID,
        tenant_id=TENANT_ID,
        cu_id=CuId(vm_id=VM_ID, vmss_id=VMSS_ID),
        key=backend_numbers,
    )
    csr_der = _csr.assemble(info, software_backend.sign(info))
    result = subprocess.run(
        ["openssl", "req", "-inform", "DER", "-verify", "-noout", "-text"],
        input=csr_der,
        capture_output=True,
        check=False,
        timeout=10,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert f'{{"vmId":"{VM_ID}","vmssId":"{VMSS_ID}"}}' in result.stdout.decode()


def test_csr_wire_form_is_single_line_padded_standard_base64(built: BuiltCsr) -> None:
    wire = _csr.wire_form(built.der)
    assert "\n" not in wire
    assert "\r" not in wire
    assert "-----" not in wire
    assert len(wire) % 4 == 0
    assert base64.b64decode(wire, validate=True) == built.der


def test_csr_wire_form_keeps_padding_characters() -> None:
    assert _csr.wire_form(b"\x30\x00\x00\x00") == "MAAAAA=="


def test_csr_wire_form_uses_only_the_standard_base64_alphabet(built: BuiltCsr) -> None:
    wire = _csr.wire_form(built.der)
    assert set(wire) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
