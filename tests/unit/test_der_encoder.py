"""The DER encoder (X.690 §8 / §10 / §11.6): lengths, INTEGER, OBJECT IDENTIFIER, SET OF."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from unit_support import SPEC_CSR_EXCERPT, read_single

from msiv2_async import _der as der


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (0, "0400"),
        (1, "0401"),
        (127, "047f"),
        (128, "048180"),
        (255, "0481ff"),
        (256, "04820100"),
        (65535, "0482ffff"),
        (65536, "0483010000"),
    ],
)
def test_length_uses_short_form_below_128_and_minimal_long_form_above(length: int, header: str) -> None:
    encoded = der.tlv(0x04, b"\xaa" * length)
    assert encoded[: len(header) // 2].hex() == header
    assert len(encoded) == len(header) // 2 + length
    assert read_single(encoded).content == b"\xaa" * length


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "020100"),
        (1, "020101"),
        (127, "02017f"),
        (128, "02020080"),
        (255, "020200ff"),
        (256, "02020100"),
        (32767, "02027fff"),
        (32768, "0203008000"),
        (65537, "0203010001"),
        (-1, "0201ff"),
        (-128, "020180"),
        (-129, "0202ff7f"),
        (-32768, "02028000"),
    ],
)
def test_integer_is_minimal_twos_complement(value: int, expected: str) -> None:
    assert der.integer(value).hex() == expected


def test_integer_with_high_bit_set_gets_one_leading_zero_octet() -> None:
    value = (1 << 2047) | 12345  # a 2048-bit modulus always has its top bit set
    encoded = der.integer(value)
    assert encoded[:4].hex() == "02820101"  # 257 content octets
    assert encoded[4] == 0x00
    assert encoded[5] & 0x80
    assert int.from_bytes(encoded[4:], "big") == value


def test_rsa_public_key_encoding_matches_cryptography(other_private_key: rsa.RSAPrivateKey) -> None:
    public_key = other_private_key.public_key()
    numbers = public_key.public_numbers()
    ours = der.sequence(der.integer(numbers.n), der.integer(numbers.e))
    assert ours == public_key.public_bytes(Encoding.DER, PublicFormat.PKCS1)


@pytest.mark.parametrize(
    ("dotted", "expected"),
    [
        # PROTOCOL.md §3.5 / §3.4 byte layouts
        ("1.2.840.113549.1.1.10", "06092a864886f70d01010a"),
        ("1.2.840.113549.1.1.8", "06092a864886f70d010108"),
        ("2.16.840.1.101.3.4.2.1", "0609608648016503040201"),
        ("1.3.6.1.4.1.311.90.2.10", "060a2b0601040182375a020a"),
        # X.690 §8.19.5 example
        ("2.100.3", "0603813403"),
        ("2.5.4.3", "0603550403"),
    ],
)
def test_oid_encodes_multi_byte_arcs_in_base_128(dotted: str, expected: str) -> None:
    assert der.oid(dotted).hex() == expected


def test_oid_domain_component_matches_the_spec_csr_excerpt() -> None:
    excerpt = base64.b64decode(SPEC_CSR_EXCERPT)
    assert der.oid("0.9.2342.19200300.100.1.25") in excerpt


@pytest.mark.parametrize(
    "dotted",
    [
        "0.9.2342.19200300.100.1.25",
        "1.2.840.113549.1.9.14",
        "1.3.6.1.4.1.311.90.2.10",
        "1.3.6.1.4.1.311.21.20",
        "2.999.1",
        "2.100.3",
        "1.2.3.4294967296",
    ],
)
def test_oid_encoding_matches_cryptography(dotted: str) -> None:
    name = x509.Name([x509.NameAttribute(x509.ObjectIdentifier(dotted), "v")])
    assert der.oid(dotted) in name.public_bytes()


def test_set_of_sorts_members_by_encoding() -> None:
    a, b, c = der.integer(1), der.integer(5), der.integer(300)
    expected = der.tlv(der.SET, b"".join(sorted([a, b, c])))
    assert der.set_of(c, a, b) == expected
    assert der.set_of(b, c, a) == expected
    assert der.set_of(c, a, b)[2:] == a + b + c  # 020101 < 020105 < 0202012c


def test_set_of_orders_a_prefix_before_its_extension() -> None:
    short, longer = der.tlv(0x04, b"\x01"), der.tlv(0x04, b"\x01\x00")
    assert short < longer
    assert der.set_of(longer, short) == der.tlv(der.SET, short + longer)


def test_sequence_keeps_member_order() -> None:
    assert der.sequence(der.integer(5), der.integer(1)).hex() == "3006020105020101"


def test_bit_string_has_zero_unused_bits_octet() -> None:
    assert der.bit_string(b"\xde\xad").hex() == "030300dead"


def test_context_tags_are_constructed_by_default_and_primitive_on_request() -> None:
    assert der.context(0, b"\x05\x00").hex() == "a0020500"
    assert der.context(2, b"\x01", constructed=False).hex() == "820101"
