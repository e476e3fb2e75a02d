"""The emulator's certificate authority: the CA, the TLS server certificate and issued client certificates."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ISSUER_NAME = "managedidentitysnissuer.login.microsoft.com"
"""Real MSI v2 certificates carry this string in their issuer DN; clients look for it."""


def new_rsa_key() -> rsa.RSAPrivateKey:
    """A fresh RSA-2048 key with public exponent 65537."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def x5t_s256(certificate_der: bytes) -> str:
    """``base64url(SHA-256(DER))`` without padding: the RFC 8705 ``x5t#S256`` thumbprint."""
    digest = hashlib.sha256(certificate_der).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _host_names(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


class Authority:
    """The emulator CA. It signs the STS/resource server certificate and every issued client certificate.

    Construction generates two RSA-2048 keys (CA and server) and the server certificate for ``hosts``
    (IP addresses become IP SANs, anything else DNS SANs). ``ca_key``, ``server_key`` and ``common_name``
    make another CA (the emulator's "foreign" CA uses an EC key and shares the server key).
    """

    def __init__(
        self,
        hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
        *,
        ca_key: CertificateIssuerPrivateKeyTypes | None = None,
        server_key: rsa.RSAPrivateKey | None = None,
        common_name: str = ISSUER_NAME,
    ) -> None:
        now = _now()
        self._key: CertificateIssuerPrivateKeyTypes = ca_key if ca_key is not None else new_rsa_key()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "msiv2_async emulator CA"),
            ]
        )
        self._name = name
        public = self._key.public_key()
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_pem = self.certificate.public_bytes(serialization.Encoding.PEM)
        self.server_key = server_key if server_key is not None else new_rsa_key()
        self.server_certificate = self.issue_server_certificate(hosts)

    def _leaf(
        self, subject: x509.Name, public: CertificatePublicKeyTypes, start: datetime, end: datetime
    ) -> x509.CertificateBuilder:
        ca_public = self._key.public_key()
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False)
        )

    def issue_server_certificate(self, hosts: tuple[str, ...]) -> x509.Certificate:
        """A TLS server certificate for :attr:`server_key` naming ``hosts`` (valid for 30 days)."""
        now = _now()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "msiv2_async emulator server")])
        builder = (
            self._leaf(
                subject, self.server_key.public_key(), now - timedelta(hours=1), now + timedelta(days=30)
            )
            .add_extension(x509.SubjectAlternativeName(_host_names(hosts)), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(_key_usage(key_encipherment=True), critical=True)
        )
        return builder.sign(self._key, hashes.SHA256())

    def server_chain_pem(self, certificate: x509.Certificate | None = None) -> tuple[bytes, bytes]:
        """PEM of the server certificate (or ``certificate``) and of its unencrypted PKCS#8 private key."""
        key_pem = self.server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        chosen = self.server_certificate if certificate is None else certificate
        return chosen.public_bytes(serialization.Encoding.PEM), key_pem

    def issue_client_certificate(
        self,
        public_key: CertificatePublicKeyTypes,
        *,
        client_id: str,
        tenant_id: str,
        lifetime: timedelta,
        not_before: datetime | None = None,
    ) -> x509.Certificate:
        """A client certificate ``CN=<client_id>, DC=<tenant_id>`` for ``public_key``.

        notBefore is five minutes ago and notAfter is ``now + lifetime``; a lifetime so short (or
        negative) that notAfter would not follow notBefore yields a certificate valid for one minute
        ending at notAfter, i.e. an already expired one. An explicit ``not_before`` makes the certificate
        valid from then for ``lifetime``.
        """
        now = _now()
        if not_before is None:
            end = now + lifetime
            start = min(now - timedelta(minutes=5), end - timedelta(minutes=1))
        else:
            start, end = not_before, not_before + lifetime
        # Encoded DC first, CN second (the [NET] layout), which renders as "CN=<client>,DC=<tenant>".
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.DOMAIN_COMPONENT, tenant_id),
                x509.NameAttribute(NameOID.COMMON_NAME, client_id),
            ]
        )
        builder = (
            self._leaf(subject, public_key, start, end)
            .add_extension(_key_usage(key_encipherment=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        return builder.sign(self._key, hashes.SHA256())


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 key."""
    return ec.generate_private_key(ec.SECP256R1())


def _key_usage(*, key_encipherment: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
