"""The emulator's certificate authority: the CA, the TLS server certificate and issued client certificates."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
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
    (IP addresses become IP SANs, anything else DNS SANs).
    """

    def __init__(self, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> None:
        now = _now()
        self._key = new_rsa_key()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, ISSUER_NAME),
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
        self.server_key = new_rsa_key()
        self.server_certificate = self._issue_server(hosts, now)

    def _leaf(
        self, subject: x509.Name, public: rsa.RSAPublicKey, start: datetime, end: datetime
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

    def _issue_server(self, hosts: tuple[str, ...], now: datetime) -> x509.Certificate:
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

    def server_chain_pem(self) -> tuple[bytes, bytes]:
        """PEM of the server certificate and of its unencrypted PKCS#8 private key."""
        key_pem = self.server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return self.server_certificate.public_bytes(serialization.Encoding.PEM), key_pem

    def issue_client_certificate(
        self, public_key: rsa.RSAPublicKey, *, client_id: str, tenant_id: str, lifetime: timedelta
    ) -> x509.Certificate:
        """A client certificate ``CN=<client_id>, DC=<tenant_id>`` for ``public_key``.

        notBefore is five minutes ago and notAfter is ``now + lifetime``; a lifetime so short (or
        negative) that notAfter would not follow notBefore yields a certificate valid for one minute
        ending at notAfter, i.e. an already expired one.
        """
        now = _now()
        end = now + lifetime
        start = min(now - timedelta(minutes=5), end - timedelta(minutes=1))
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
