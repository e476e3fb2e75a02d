"""The software key backend: RSA-2048 key (§3.1), PSS signing (§3.5), client TLS context, no key on disk."""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from msiv2_async._errors import BackendError, ConfigurationError
from msiv2_async.backends import TlsSettings
from msiv2_async.backends import software as software_module
from msiv2_async.backends.software import SoftwareBackend

IssueCertificate = Callable[..., bytes]
PSS_32 = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


@pytest.fixture
def fresh_backend() -> SoftwareBackend:
    return SoftwareBackend()


def test_open_key_creates_an_rsa_2048_key_with_exponent_65537(fresh_backend: SoftwareBackend) -> None:
    numbers = fresh_backend.open_key("MsiV2AsyncKey_x")
    assert numbers.modulus.bit_length() == 2048
    assert numbers.exponent == 65537


def test_open_key_returns_the_same_key_on_every_call(fresh_backend: SoftwareBackend) -> None:
    first = fresh_backend.open_key("MsiV2AsyncKey_a")
    assert fresh_backend.open_key("MsiV2AsyncKey_a") == first
    assert fresh_backend.open_key("MsiV2AsyncKey_b") == first


def test_sign_before_open_key_is_a_backend_error(fresh_backend: SoftwareBackend) -> None:
    with pytest.raises(BackendError):
        fresh_backend.sign(b"data")


def test_sign_is_rsassa_pss_sha256_salt_32(
    software_backend: SoftwareBackend, backend_public_key: rsa.RSAPublicKey
) -> None:
    signature = software_backend.sign(b"certification request info")
    assert len(signature) == 256
    backend_public_key.verify(signature, b"certification request info", PSS_32, hashes.SHA256())
    with pytest.raises(InvalidSignature):
        backend_public_key.verify(signature, b"other data", PSS_32, hashes.SHA256())


def test_sign_uses_a_random_salt(software_backend: SoftwareBackend) -> None:
    assert software_backend.sign(b"same") != software_backend.sign(b"same")


def test_software_keys_cannot_be_attested(software_backend: SoftwareBackend) -> None:
    assert software_backend.supports_attestation is False
    assert software_backend.attest(endpoint="https://sharedeus2.eus2.attest.azure.net", client_id="c") is None


def test_close_drops_the_key(fresh_backend: SoftwareBackend) -> None:
    fresh_backend.open_key("k")
    fresh_backend.close()
    with pytest.raises(BackendError):
        fresh_backend.sign(b"data")


def test_repr_does_not_show_key_material(fresh_backend: SoftwareBackend) -> None:
    numbers = fresh_backend.open_key("k")
    assert str(numbers.modulus)[:20] not in repr(fresh_backend)
    assert hex(numbers.modulus)[2:22] not in repr(fresh_backend)


def test_client_ssl_context_loads_a_matching_issued_certificate(
    software_backend: SoftwareBackend, backend_certificate: bytes
) -> None:
    context = software_backend.client_ssl_context(backend_certificate, TlsSettings())
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_client_ssl_context_rejects_a_certificate_for_another_key(
    software_backend: SoftwareBackend,
    issue_certificate: IssueCertificate,
    other_private_key: rsa.RSAPrivateKey,
) -> None:
    foreign = issue_certificate(other_private_key.public_key())
    with pytest.raises(BackendError):
        software_backend.client_ssl_context(foreign, TlsSettings())


def test_client_ssl_context_without_a_key_is_a_backend_error(
    fresh_backend: SoftwareBackend, backend_certificate: bytes
) -> None:
    with pytest.raises(BackendError):
        fresh_backend.client_ssl_context(backend_certificate, TlsSettings())


@pytest.fixture
def temp_dir_spy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Point tempfile at ``tmp_path`` and record every temporary directory the backend creates."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    created: list[str] = []
    real = tempfile.TemporaryDirectory

    def spying(*args: Any, **kwargs: Any) -> tempfile.TemporaryDirectory[str]:
        directory = real(*args, **kwargs)
        created.append(directory.name)
        return directory

    monkeypatch.setattr(software_module.tempfile, "TemporaryDirectory", spying)
    return created


def test_client_ssl_context_leaves_no_file_behind_with_memfd(
    software_backend: SoftwareBackend, backend_certificate: bytes, tmp_path: Path, temp_dir_spy: list[str]
) -> None:
    if not hasattr(os, "memfd_create"):
        pytest.skip("memfd_create is Linux-only")
    software_backend.client_ssl_context(backend_certificate, TlsSettings())
    assert temp_dir_spy == []
    assert list(tmp_path.iterdir()) == []


def test_client_ssl_context_leaves_no_file_behind_with_the_encrypted_tempfile(
    software_backend: SoftwareBackend,
    backend_certificate: bytes,
    tmp_path: Path,
    temp_dir_spy: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(os, "memfd_create", raising=False)
    context = software_backend.client_ssl_context(backend_certificate, TlsSettings())
    assert isinstance(context, ssl.SSLContext)
    assert len(temp_dir_spy) == 1
    assert Path(temp_dir_spy[0]).parent == tmp_path
    assert list(tmp_path.iterdir()) == []


def test_client_ssl_context_leaves_no_file_behind_when_the_certificate_is_rejected(
    software_backend: SoftwareBackend,
    issue_certificate: IssueCertificate,
    other_private_key: rsa.RSAPrivateKey,
    tmp_path: Path,
    temp_dir_spy: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(os, "memfd_create", raising=False)
    with pytest.raises(BackendError):
        software_backend.client_ssl_context(issue_certificate(other_private_key.public_key()), TlsSettings())
    assert len(temp_dir_spy) == 1
    assert list(tmp_path.iterdir()) == []


def test_extra_ca_bundle_that_cannot_be_loaded_is_a_configuration_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigurationError):
        software_module.server_verifying_context(TlsSettings(ca_bundle=str(missing)))
