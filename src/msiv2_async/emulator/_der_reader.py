"""A small, strict DER reader: enough ASN.1 to take a PKCS#10 request apart byte by byte.

Only low tag numbers and definite, minimally encoded lengths are accepted; anything else raises
:class:`DerError`. Values are kept as raw bytes so callers can verify signatures over exact encodings.
"""

from __future__ import annotations

from dataclasses import dataclass

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
BIT_STRING = 0x03
NULL = 0x05
OBJECT_IDENTIFIER = 0x06
UTF8_STRING = 0x0C
PRINTABLE_STRING = 0x13
TELETEX_STRING = 0x14
IA5_STRING = 0x16
UNIVERSAL_STRING = 0x1C
BMP_STRING = 0x1E


class DerError(ValueError):
    """The bytes are not the DER structure the caller asked for."""


@dataclass(frozen=True)
class Element:
    """One decoded TLV: its tag byte, its content octets and its complete encoding."""

    tag: int
    content: bytes
    encoded: bytes

    @property
    def constructed(self) -> bool:
        """Whether the constructed bit of the tag is set."""
        return bool(self.tag & 0x20)

    def children(self) -> list[Element]:
        """The TLVs the content of this constructed element consists of."""
        if not self.constructed:
            raise DerError(f"tag 0x{self.tag:02x} is primitive and has no children")
        return read_all(self.content)

    def expect(self, tag: int, what: str) -> Element:
        """Return self when the tag is ``tag``, else raise naming ``what``."""
        if self.tag != tag:
            raise DerError(f"{what}: expected tag 0x{tag:02x}, found 0x{self.tag:02x}")
        return self


def _read(data: bytes, offset: int) -> tuple[Element, int]:
    if offset + 2 > len(data):
        raise DerError("truncated TLV header")
    start = offset
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise DerError("high tag numbers are not supported")
    first = data[offset + 1]
    offset += 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise DerError("indefinite length is not DER")
    else:
        count = first & 0x7F
        if count > 4 or offset + count > len(data):
            raise DerError("length field too long or truncated")
        length_bytes = data[offset : offset + count]
        offset += count
        if length_bytes[0] == 0:
            raise DerError("length has leading zero octets (not DER)")
        length = int.from_bytes(length_bytes, "big")
        if length < 0x80:
            raise DerError("long-form length for a short value (not DER)")
    end = offset + length
    if end > len(data):
        raise DerError("content runs past the end of the data")
    return Element(tag, bytes(data[offset:end]), bytes(data[start:end])), end


def read_single(data: bytes) -> Element:
    """Decode exactly one TLV that spans all of ``data`` (trailing bytes are an error)."""
    element, end = _read(data, 0)
    if end != len(data):
        raise DerError(f"{len(data) - end} trailing bytes after the DER element")
    return element


def read_all(data: bytes) -> list[Element]:
    """Decode a concatenation of TLVs that spans all of ``data``."""
    elements: list[Element] = []
    offset = 0
    while offset < len(data):
        element, offset = _read(data, offset)
        elements.append(element)
    return elements


def decode_oid(element: Element) -> str:
    """The dotted form of an OBJECT IDENTIFIER."""
    content = element.expect(OBJECT_IDENTIFIER, "OBJECT IDENTIFIER").content
    if not content or content[-1] & 0x80:
        raise DerError("malformed OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    fresh = True
    for byte in content:
        if fresh and byte == 0x80:
            raise DerError("OBJECT IDENTIFIER arc has a leading 0x80 octet")
        value = (value << 7) | (byte & 0x7F)
        fresh = not byte & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in (first, arcs[0] - 40 * first, *arcs[1:]))


def decode_integer(element: Element) -> int:
    """The value of an INTEGER (minimal two's-complement encoding required)."""
    content = element.expect(INTEGER, "INTEGER").content
    if not content:
        raise DerError("empty INTEGER")
    if len(content) > 1 and (
        (content[0] == 0 and not content[1] & 0x80) or (content[0] == 0xFF and content[1] & 0x80)
    ):
        raise DerError("INTEGER is not minimally encoded")
    return int.from_bytes(content, "big", signed=True)


def decode_null(element: Element) -> None:
    """Check that the element is a NULL."""
    if element.expect(NULL, "NULL").content:
        raise DerError("NULL with content")


def decode_bit_string(element: Element) -> bytes:
    """The octets of a BIT STRING with zero unused bits."""
    content = element.expect(BIT_STRING, "BIT STRING").content
    if not content or content[0] != 0:
        raise DerError("BIT STRING must have zero unused bits")
    return content[1:]


_PRINTABLE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")


def decode_string(element: Element) -> str:
    """The text of a DirectoryString (Printable/UTF8/Teletex/Universal/BMP) or IA5String."""
    raw = element.content
    try:
        if element.tag == UTF8_STRING:
            return raw.decode("utf-8")
        if element.tag == PRINTABLE_STRING:
            text = raw.decode("ascii")
            if not set(text) <= _PRINTABLE:
                raise DerError("PrintableString holds characters outside its alphabet")
            return text
        if element.tag == IA5_STRING:
            return raw.decode("ascii")
        if element.tag == TELETEX_STRING:
            return raw.decode("latin-1")
        if element.tag == BMP_STRING:
            return raw.decode("utf-16-be")
        if element.tag == UNIVERSAL_STRING:
            return raw.decode("utf-32-be")
    except UnicodeDecodeError as exc:
        raise DerError(f"string of tag 0x{element.tag:02x} is not valid text") from exc
    raise DerError(f"tag 0x{element.tag:02x} is not a DirectoryString or IA5String")
