"""The software backend: an in-memory RSA-2048 key from ``cryptography``, mTLS through Python's ``ssl``.

``ssl`` loads a client key only from a path. On Linux the key goes to an anonymous memory file
(``memfd_create``) that is read through ``/proc/self/fd`` and closed at once: it never touches a
disk. Elsewhere it is written encrypted with a random one-time password to a 0600 file in a 0700
temporary directory and deleted right after loading.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import ssl
import tempfile
import threading

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import load_der_x509_certificate

from .._errors import BackendError, ConfigurationError
from .._files import read_private_file, remove_file, write_private_file
from .._logging import get_logger
from .._models import RsaPublicNumbers
from ._interface import TlsSettings

KEY_SIZE = 2048
KEY_FILE_NAME = "software-key.pem"
_log = get_logger("msiv2_async.backends.software")
PUBLIC_EXPONENT = 65537
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def server_verifying_context(tls: TlsSettings) -> ssl.SSLContext:
    """A client context that verifies servers against the system store plus ``tls.ca_bundle``."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.ca_bundle:
        try:
            context.load_verify_locations(cafile=tls.ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"cannot load CA bundle {tls.ca_bundle!r}: {exc.strerror or exc}"
            ) from None
    return context


def _load_via_memfd(context: ssl.SSLContext, cert_pem: bytes, key: rsa.RSAPrivateKey) -> None:
    chain = bytearray(cert_pem)
    chain += key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.memfd_create("msiv2-async-client-key", os.MFD_CLOEXEC)
    try:
        os.write(fd, chain)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
        chain[:] = bytes(len(chain))


def _load_via_encrypted_tempfile(context: ssl.SSLContext, cert_pem: bytes, key: rsa.RSAPrivateKey) -> None:
    password = secrets.token_bytes(32)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    with tempfile.TemporaryDirectory(prefix="msiv2-async-") as directory:
        path = os.path.join(directory, "client.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, cert_pem + key_pem)
        finally:
            os.close(fd)
        try:
            context.load_cert_chain(path, password=password)
        finally:
            os.unlink(path)


class SoftwareBackend:
    """RSA-2048 generated in memory for the life of the backend; no attestation; strength "software"."""

    name = "software"
    binding_strength = "software"
    supports_attestation = False

    def __init__(self) -> None:
        self._key: rsa.RSAPrivateKey | None = None
        self._key_file: str | None = None
        self._lock = threading.Lock()

    def use_key_directory(self, directory: str) -> None:
        """Keep the key in ``directory/software-key.pem`` (0600, unencrypted) to share it across processes.

        Anyone who can read that file (this user, root) can use the key until the certificate expires;
        see the README's "Persistent cache" section.
        """
        self._key_file = os.path.join(directory, KEY_FILE_NAME)

    def __repr__(self) -> str:
        return f"SoftwareBackend(key={'generated' if self._key else 'none'})"

    @classmethod
    def priority(cls) -> float:
        """Viable everywhere, below any hardware-isolated backend."""
        return 1.0

    def _require_key(self) -> rsa.RSAPrivateKey:
        if self._key is None:
            raise BackendError("the software backend has no key yet: open_key() must come first")
        return self._key

    def open_key(self, key_name: str) -> RsaPublicNumbers:
        """Load or generate the key on first use (``key_name`` is irrelevant: one key per backend)."""
        with self._lock:
            if self._key is None:
                self._key = self._load_persisted_key() or self._new_key()
            numbers = self._key.public_key().public_numbers()
        return RsaPublicNumbers(modulus=numbers.n, exponent=numbers.e)

    def _load_persisted_key(self) -> rsa.RSAPrivateKey | None:
        data = read_private_file(self._key_file) if self._key_file else None
        if data is None:
            return None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            return None
        if not isinstance(key, rsa.RSAPrivateKey) or key.key_size != KEY_SIZE:
            return None
        return key

    def _new_key(self) -> rsa.RSAPrivateKey:
        key = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=KEY_SIZE)
        if self._key_file:
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            try:
                write_private_file(self._key_file, pem)
            except OSError as exc:
                _log.warning("could not persist the software key (%s); it stays in memory only", exc.strerror)
        return key

    def discard_key(self) -> None:
        """Forget the key (and its file): the next :meth:`open_key` generates a new one."""
        with self._lock:
            self._key = None
            if self._key_file:
                with contextlib.suppress(OSError):
                    remove_file(self._key_file)

    def sign(self, data: bytes) -> bytes:
        """RSASSA-PSS / SHA-256 / MGF1-SHA-256 / salt 32."""
        return self._require_key().sign(data, PSS, hashes.SHA256())

    def attest(self, *, endpoint: str, client_id: str) -> str | None:
        """Software keys cannot be attested."""
        return None

    def client_ssl_context(self, certificate_der: bytes, tls: TlsSettings) -> ssl.SSLContext:
        """A verifying client context that presents ``certificate_der`` with our key."""
        key = self._require_key()
        context = server_verifying_context(tls)
        try:
            cert_pem = load_der_x509_certificate(certificate_der).public_bytes(serialization.Encoding.PEM)
        except ValueError:
            raise BackendError("the certificate to present is not valid DER X.509") from None
        try:
            if hasattr(os, "memfd_create"):
                _load_via_memfd(context, cert_pem, key)
            else:
                _load_via_encrypted_tempfile(context, cert_pem, key)
        except ssl.SSLError as exc:
            raise BackendError(f"the issued certificate does not load with our key: {exc.reason}") from None
        return context

    def mtls_transport(self, certificate_der: bytes, tls: TlsSettings) -> httpx.AsyncBaseTransport:
        """An httpx transport presenting the certificate and key in every handshake."""
        return httpx.AsyncHTTPTransport(verify=self.client_ssl_context(certificate_der, tls), proxy=tls.proxy)

    def mtls_sync_transport(self, certificate_der: bytes, tls: TlsSettings) -> httpx.BaseTransport:
        """The sync httpx transport presenting the certificate and key."""
        return httpx.HTTPTransport(verify=self.client_ssl_context(certificate_der, tls), proxy=tls.proxy)

    def close(self) -> None:
        """Drop the key object (OpenSSL clears its memory when it is freed)."""
        self._key = None
