"""A minimal DER encoder: exactly the ASN.1 types a PKCS#10 request needs, nothing more."""

from __future__ import annotations

import functools

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
BIT_STRING = 0x03
NULL = 0x05
OBJECT_IDENTIFIER = 0x06
UTF8_STRING = 0x0C
PRINTABLE_STRING = 0x13
IA5_STRING = 0x16


def tlv(tag: int, content: bytes) -> bytes:
    """Tag, definite length, content."""
    length = len(content)
    if length < 0x80:
        return bytes((tag, length)) + content
    length_bytes = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length_bytes))) + length_bytes + content


def sequence(*items: bytes) -> bytes:
    """SEQUENCE of already-encoded items."""
    return tlv(SEQUENCE, b"".join(items))


def set_of(*items: bytes) -> bytes:
    """SET OF already-encoded items, sorted by their encodings as DER requires."""
    return tlv(SET, b"".join(sorted(items)))


def integer(value: int) -> bytes:
    """INTEGER in the minimal two's-complement form."""
    size = (value if value >= 0 else ~value).bit_length() // 8 + 1
    return tlv(INTEGER, value.to_bytes(size, "big", signed=True))


def bit_string(data: bytes) -> bytes:
    """BIT STRING with zero unused bits."""
    return tlv(BIT_STRING, b"\x00" + data)


@functools.lru_cache(maxsize=128)
def oid(dotted: str) -> bytes:
    """OBJECT IDENTIFIER from its dotted form (memoized: a CSR uses the same few OIDs every time)."""
    arcs = [int(part) for part in dotted.split(".")]
    body = bytearray()
    for arc in (40 * arcs[0] + arcs[1], *arcs[2:]):
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(OBJECT_IDENTIFIER, bytes(body))


def context(number: int, content: bytes, *, constructed: bool = True) -> bytes:
    """Context-specific tag ``[number]`` around already-encoded content."""
    return tlv(0x80 | (0x20 if constructed else 0) | number, content)
