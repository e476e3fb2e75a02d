"""The software backend passes the reusable backend conformance suite (msiv2_async.testing)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from msiv2_async.backends import KeyBackend, SoftwareBackend
from msiv2_async.testing import BackendConformance, BackendFactory


class TestSoftwareBackendConformance(BackendConformance):
    @pytest.fixture
    def backend_factory(self) -> BackendFactory:
        return SoftwareBackend


class TestConformanceSuiteCatchesABrokenBackend:
    """The suite's checks fail for a backend that breaks the contract (so they can fail at all)."""

    def test_a_salt_of_the_wrong_length_does_not_verify(self) -> None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        from msiv2_async._models import RsaPublicNumbers
        from msiv2_async.testing import verify_pss_signature

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = key.public_key().public_numbers()
        wrong_salt = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=20)
        signature = key.sign(b"data", wrong_salt, hashes.SHA256())
        with pytest.raises(InvalidSignature):
            verify_pss_signature(RsaPublicNumbers(numbers.n, numbers.e), signature, b"data")

    def test_jwt_shape_check(self) -> None:
        from msiv2_async.testing import is_jwt_shaped

        assert is_jwt_shaped("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
        assert not is_jwt_shaped("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0")
        assert not is_jwt_shaped("a.b.c")
        assert not is_jwt_shaped(None)


def test_software_backend_is_a_key_backend() -> None:
    assert isinstance(SoftwareBackend(), KeyBackend)


BROKEN_BACKENDS = """
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from msiv2_async import MsiV2UnavailableError
from msiv2_async._models import RsaPublicNumbers
from msiv2_async.backends import SoftwareBackend
from msiv2_async.testing import BackendConformance


class ZeroSalt(SoftwareBackend):
    def sign(self, data):
        return self._require_key().sign(data, padding.PSS(padding.MGF1(hashes.SHA256()), 0), hashes.SHA256())


class SmallKey(SoftwareBackend):
    def open_key(self, key_name):
        if self._key is None:
            self._key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        numbers = self._key.public_key().public_numbers()
        return RsaPublicNumbers(numbers.n, numbers.e)


class FreshKeyEachTime(SoftwareBackend):
    def open_key(self, key_name):
        self._key = None
        return super().open_key(key_name)


class NotViable(SoftwareBackend):
    @classmethod
    def priority(cls):
        raise MsiV2UnavailableError("not on this host")


class TestZeroSalt(BackendConformance):
    @pytest.fixture
    def backend_factory(self):
        return ZeroSalt


class TestSmallKey(BackendConformance):
    @pytest.fixture
    def backend_factory(self):
        return SmallKey


class TestFreshKeyEachTime(BackendConformance):
    @pytest.fixture
    def backend_factory(self):
        return FreshKeyEachTime


class TestNotViable(BackendConformance):
    @pytest.fixture
    def backend_factory(self):
        return NotViable
"""


def test_the_suite_fails_backends_that_break_the_contract(tmp_path: Path) -> None:
    """Run the suite on broken backends in a child pytest: each violation fails its rule's test."""
    (tmp_path / "test_broken.py").write_text(BROKEN_BACKENDS)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-v",
            "-p",
            "no:cacheprovider",
            "-k",
            "not emulator",
            "test_broken.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = re.findall(r"^test_broken\.py::(\S+) (PASSED|FAILED|SKIPPED|ERROR)", result.stdout, re.MULTILINE)
    outcomes = dict(found)
    sign = "test_sign_is_rsassa_pss_sha256_with_a_random_32_byte_salt"
    size = "test_open_key_returns_rsa_2048_with_exponent_65537"
    assert outcomes[f"TestZeroSalt::{sign}"] == "FAILED", result.stdout
    assert outcomes[f"TestZeroSalt::{size}"] == "PASSED"
    assert outcomes[f"TestSmallKey::{size}"] == "FAILED"
    assert outcomes["TestFreshKeyEachTime::test_open_key_twice_returns_the_same_key"] == "FAILED"
    assert outcomes["TestFreshKeyEachTime::test_close_is_idempotent"] == "PASSED"
    assert outcomes["TestNotViable::test_priority_is_cheap_and_a_number_or_unavailable"] == "PASSED"
    not_viable = [outcome for name, outcome in outcomes.items() if name.startswith("TestNotViable::")]
    assert not_viable.count("SKIPPED") == len(not_viable) - 1
    assert len(not_viable) >= 5
