"""Keys and certificates shared by the unit tests (generated once per session: RSA is slow)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from unit_support import CLIENT_ID, NOW, TENANT_ID

from msiv2_async._models import RsaPublicNumbers
from msiv2_async.backends.software import SoftwareBackend

IssueCertificate = Callable[..., bytes]


@pytest.fixture(scope="session")
def software_backend() -> Iterator[SoftwareBackend]:
    """A software backend whose key has been opened (one RSA-2048 key for the session)."""
    backend = SoftwareBackend()
    backend.open_key("MsiV2AsyncKey_unit-tests")
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def backend_numbers(software_backend: SoftwareBackend) -> RsaPublicNumbers:
    """The public numbers of the session backend's key."""
    return software_backend.open_key("MsiV2AsyncKey_unit-tests")


@pytest.fixture(scope="session")
def backend_public_key(backend_numbers: RsaPublicNumbers) -> rsa.RSAPublicKey:
    """The session backend's public key as a ``cryptography`` object."""
    return rsa.RSAPublicNumbers(backend_numbers.exponent, backend_numbers.modulus).public_key()


@pytest.fixture(scope="session")
def other_private_key() -> rsa.RSAPrivateKey:
    """An RSA key that is not the backend's."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_private_key() -> ec.EllipticCurvePrivateKey:
    """A P-256 key, for certificates IMDS must never issue to us."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def ca_key() -> rsa.RSAPrivateKey:
    """The test issuing CA's key (stands in for managedidentitysnissuer)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def issue_certificate(ca_key: rsa.RSAPrivateKey) -> IssueCertificate:
    """Build a DER client certificate for a public key, signed by the test CA (§4.4 profile)."""
    issuer = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "managedidentitysnissuer.login.microsoft.com")]
    )

    def issue(
        public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        client_id: str = CLIENT_ID,
        tenant_id: str = TENANT_ID,
    ) -> bytes:
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.DOMAIN_COMPONENT, tenant_id),
                x509.NameAttribute(NameOID.COMMON_NAME, client_id),
            ]
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW - timedelta(hours=1))
            .not_valid_after(not_after or NOW + timedelta(days=7))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        return builder.sign(ca_key, hashes.SHA256()).public_bytes(Encoding.DER)

    return issue


@pytest.fixture(scope="session")
def backend_certificate(issue_certificate: IssueCertificate, backend_public_key: rsa.RSAPublicKey) -> bytes:
    """A certificate issued for the session backend's key, valid at ``NOW``."""
    return issue_certificate(backend_public_key)
