"""Helpers for the emulator tests: a DER writer of our own, a CSR builder for both client layouts,
TLS contexts and one-call IMDS/STS/resource flows over real loopback HTTP(S)."""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from msiv2_async.emulator import COUNTERS, ENDPOINTS, Emulator


def counts(**nonzero: int) -> dict[str, int]:
    """The whole :attr:`Emulator.stats` dict: every counter zero except those given."""
    return {**dict.fromkeys((*ENDPOINTS, *COUNTERS), 0), **nonzero}


# -- DER writing ---------------------------------------------------------------------------------------

UTF8 = 0x0C
PRINTABLE = 0x13
IA5 = 0x16


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def set_of(*items: bytes) -> bytes:
    return tlv(0x31, b"".join(items))


def integer(value: int) -> bytes:
    return tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def null() -> bytes:
    return b"\x05\x00"


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return tlv(0x06, bytes(body))


def explicit(number: int, inner: bytes) -> bytes:
    return tlv(0xA0 | number, inner)


def bit_string(data: bytes) -> bytes:
    return tlv(0x03, b"\x00" + data)


RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
RSASSA_PSS = "1.2.840.113549.1.1.10"
MGF1 = "1.2.840.113549.1.1.8"
SHA256 = "2.16.840.1.101.3.4.2.1"
CN = "2.5.4.3"
DC = "0.9.2342.19200300.100.1.25"
CUID = "1.3.6.1.4.1.311.90.2.10"

# The two AlgorithmIdentifier encodings of PROTOCOL.md §3.5, byte for byte.
PSS_NET = bytes.fromhex(
    "303d06092a864886f70d01010a3030a00d300b0609608648016503040201a11a301806092a864886f70d010108"
    "300b0609608648016503040201a203020120"
)
PSS_PY = bytes.fromhex(
    "304606092a864886f70d01010a3039a00f300d06096086480165030402010500a11c301a06092a864886f70d010108"
    "300d06096086480165030402010500a203020120a303020101"
)


def pss_algorithm(*, salt: int = 32, nulls: bool = False, trailer: bool = False) -> bytes:
    def sha256() -> bytes:
        return seq(oid(SHA256), null()) if nulls else seq(oid(SHA256))

    params = [explicit(0, sha256()), explicit(1, seq(oid(MGF1), sha256())), explicit(2, integer(salt))]
    if trailer:
        params.append(explicit(3, integer(1)))
    return seq(oid(RSASSA_PSS), seq(*params))


def rdn(attribute: str, tag: int, value: str) -> bytes:
    return set_of(seq(oid(attribute), tlv(tag, value.encode())))


def cuid_attribute(cuid_json: str) -> bytes:
    return explicit(0, seq(oid(CUID), set_of(tlv(UTF8, cuid_json.encode()))))


def build_csr(
    key: rsa.RSAPrivateKey,
    *,
    client_id: str,
    tenant_id: str,
    cuid: dict[str, Any] | str,
    layout: str = "net",
    cn_tag: int | None = None,
    dc_tag: int | None = None,
    attributes: bytes | None = None,
    algorithm: bytes | None = None,
    salt_length: int = 32,
    corrupt_signature: bool = False,
    trailing: bytes = b"",
) -> bytes:
    """A DER PKCS#10 request. ``layout`` "net": DC then CN, PrintableStrings, 63-byte PSS identifier;
    "py": CN then DC, UTF8String CN, IA5String DC, 72-byte PSS identifier with NULLs and trailer."""
    net = layout == "net"
    cn = rdn(CN, cn_tag or (PRINTABLE if net else UTF8), client_id)
    dc = rdn(DC, dc_tag or (PRINTABLE if net else IA5), tenant_id)
    subject = seq(dc, cn) if net else seq(cn, dc)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cuid_json = cuid if isinstance(cuid, str) else json.dumps(cuid, separators=(",", ":"))
    info = seq(integer(0), subject, spki, attributes if attributes is not None else cuid_attribute(cuid_json))
    signature = key.sign(
        info, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt_length), hashes.SHA256()
    )
    if corrupt_signature:
        signature = signature[:-1] + bytes([signature[-1] ^ 0x01])
    if algorithm is None:
        algorithm = PSS_NET if net else PSS_PY
    return seq(info, algorithm, bit_string(signature)) + trailing


def csr_for(emu: Emulator, key: rsa.RSAPrivateKey, client_id: str | None = None, **options: Any) -> bytes:
    """A correct CSR for the emulator's system identity (or ``client_id``)."""
    return build_csr(
        key,
        client_id=client_id or emu.system_identity.client_id,
        tenant_id=emu.tenant_id,
        cuid={"vmId": emu.vm_id},
        **options,
    )


# -- IMDS ----------------------------------------------------------------------------------------------


def http_client(**options: Any) -> httpx.Client:
    """A client for the plain-HTTP IMDS listener. No CA bundle is loaded: with the default ``verify`` each
    new httpx client spends ~0.1 s building an SSL context that plain HTTP never uses."""
    return httpx.Client(verify=False, trust_env=False, **options)


def http(method: str, url: str, *, timeout: float = 5.0, **options: Any) -> httpx.Response:
    """One plain-HTTP request (like ``httpx.request``) through :func:`http_client`."""
    with http_client(timeout=timeout) as client:
        return client.request(method, url, **options)


METADATA = {"Metadata": "true"}
V2 = {"cred-api-version": "2.0"}


def get_metadata(
    emu: Emulator, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    return http(
        "GET",
        f"{emu.imds_url}/metadata/identity/getplatformmetadata",
        params=V2 if params is None else params,
        headers=METADATA if headers is None else headers,
    )


def post_csr(
    emu: Emulator,
    csr: bytes | str,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    attestation_token: str | None = None,
) -> httpx.Response:
    body: dict[str, str] = {"csr": csr if isinstance(csr, str) else base64.b64encode(csr).decode()}
    if attestation_token is not None:
        body["attestation_token"] = attestation_token
    return http(
        "POST",
        f"{emu.imds_url}/metadata/identity/issuecredential",
        params=V2 if params is None else params,
        headers=METADATA if headers is None else headers,
        json=body,
    )


def issue_certificate(
    emu: Emulator,
    key: rsa.RSAPrivateKey,
    *,
    client_id: str | None = None,
    params: dict[str, str] | None = None,
) -> x509.Certificate:
    response = post_csr(emu, csr_for(emu, key, client_id), params=params)
    assert response.status_code == 200, response.text
    return x509.load_der_x509_certificate(base64.b64decode(response.json()["certificate"]))


# -- TLS, STS, resource --------------------------------------------------------------------------------


def tls_context(
    emu: Emulator,
    directory: Path | None = None,
    certificate: x509.Certificate | None = None,
    key: rsa.RSAPrivateKey | None = None,
) -> ssl.SSLContext:
    """Trusts only the emulator CA; presents ``certificate`` (written to ``directory``) when given."""
    context = ssl.create_default_context(cadata=emu.ca_pem.decode())
    if certificate is not None and key is not None and directory is not None:
        serial = format(certificate.serial_number, "x")
        cert_path = directory / f"client-{serial}.pem"
        key_path = directory / f"client-{serial}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context.load_cert_chain(cert_path, key_path)
    return context


def request_token(
    emu: Emulator,
    context: ssl.SSLContext,
    *,
    client_id: str,
    scope: str = "https://vault.azure.net/.default",
    token_type: str | None = "mtls_pop",
    tenant: str | None = None,
    grant_type: str = "client_credentials",
) -> httpx.Response:
    form = {"client_id": client_id, "scope": scope, "grant_type": grant_type}
    if token_type is not None:
        form["token_type"] = token_type
    with httpx.Client(verify=context) as client:
        return client.post(f"{emu.sts_url}/{tenant or emu.tenant_id}/oauth2/v2.0/token", data=form)


def call_resource(
    emu: Emulator, context: ssl.SSLContext, authorization: str | None, *, method: str = "GET"
) -> httpx.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    with httpx.Client(verify=context) as client:
        return client.request(method, emu.resource_url, headers=headers)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Header, claims, signing input and signature of a compact JWT (decoded by hand)."""
    head, body, signature = token.split(".")

    def decode(segment: str) -> bytes:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))

    return json.loads(decode(head)), json.loads(decode(body)), f"{head}.{body}".encode(), decode(signature)


def x5t_s256(certificate: x509.Certificate) -> str:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(certificate.public_bytes(serialization.Encoding.DER))
    return b64url(digest.finalize())
