"""A conformance suite for key backends, to run against any backend (in the spirit of ``keyring.testing``).

Every backend distribution subclasses :class:`BackendConformance` in its own tests and overrides the
``backend_factory`` fixture: a zero-argument callable (usually the class) that makes a fresh backend::

    # tests/test_conformance.py of a backend distribution (needs pytest and msiv2-async[emulator])
    import pytest
    from msiv2_async.testing import BackendConformance
    from msiv2_async_tpm import TpmBackend

    class TestTpmBackendConformance(BackendConformance):
        @pytest.fixture
        def backend_factory(self):
            return TpmBackend

The software backend runs it in ``tests/tooling/test_software_conformance.py``. The KeyGuard backend runs
it the same way from ``backends/keyguard/tests``: ``backend_factory`` returns ``KeyGuardBackend``; on Linux
the suite then runs against the C stand-ins when ``MSIV2_ASYNC_NATIVE_STANDINS`` points at their build
(else ``priority()`` raises :class:`MsiV2UnavailableError` and every test that needs a key is skipped with
that reason), and on a Windows VM with VBS against real KeyGuard keys. Its attestation is checked with
``attest(endpoint=attestation_endpoint, client_id=attestation_client_id)``: override those class
attributes to point at a reachable MAA instance (or at what the stand-in expects).

What is checked, one test per rule:

- ``name``, ``binding_strength`` and ``supports_attestation`` are declared; the instance satisfies
  :class:`KeyBackend`;
- ``priority()`` is cheap (under :attr:`BackendConformance.priority_time_limit` seconds a call) and
  either returns the same finite number every time or raises :class:`MsiV2UnavailableError`;
- ``open_key`` returns RSA-2048 public numbers with e = 65537, and the same key when opened again;
- ``sign`` gives an RSASSA-PSS / SHA-256 / MGF1-SHA-256 / salt-32 signature that verifies with those
  public numbers (and only for the signed data), with a fresh salt each time;
- a CSR built by :mod:`msiv2_async._csr` and signed by the backend is accepted by the emulator's IMDS
  (``issuecredential`` answers 200 with a certificate for the backend's key);
- the backend's mTLS transport presents that certificate: the emulator's STS issues a token over it and
  the emulator's resource, called over it, logs the certificate as presented (on asyncio and trio);
  the sync transport likewise when the backend offers ``mtls_sync_transport``;
- an :class:`~msiv2_async.MsiV2Client` using the backend gets a bound token and calls the resource;
- ``attest`` returns a JWT-shaped string when ``supports_attestation``, else ``None``;
- ``close()`` may be called twice.

Only test code imports this module: it needs pytest (and the emulator needs the ``emulator`` extra);
the core package never imports it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

try:
    import pytest
except ImportError as exc:  # pragma: no cover - only without pytest
    raise ImportError("msiv2_async.testing is a pytest suite: install pytest to use it") from exc

import anyio
import anyio.to_thread
import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from . import _binding, _csr, _imds, _sts
from ._effects import HttpRequest, HttpResponse
from ._errors import MsiV2UnavailableError
from ._flow import KEY_NAME_PREFIX
from ._models import BINDING_STRENGTHS, Binding, ManagedIdentity, RsaPublicNumbers
from ._redact import excerpt
from .backends import KeyBackend, TlsSettings
from .client import DEFAULT_SCOPE, MsiV2Client

if TYPE_CHECKING:
    from .emulator import Emulator

__all__ = [
    "BackendConformance",
    "BackendFactory",
    "is_jwt_shaped",
    "issue_certificate",
    "verify_pss_signature",
]

BackendFactory = Callable[[], KeyBackend]
PSS_SALT_LENGTH = 32
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH)


def verify_pss_signature(key: RsaPublicNumbers, signature: bytes, data: bytes) -> None:
    """Raise ``InvalidSignature`` unless ``signature`` is RSASSA-PSS/SHA-256/salt 32 of ``data``."""
    public_key = rsa.RSAPublicNumbers(key.exponent, key.modulus).public_key()
    public_key.verify(signature, data, _PSS, hashes.SHA256())


def _b64url_json(segment: str) -> object:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def is_jwt_shaped(value: object) -> bool:
    """Three non-empty base64url segments whose first two decode to JSON objects."""
    if not isinstance(value, str):
        return False
    parts = value.split(".")
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    if len(parts) != 3 or not all(parts) or not all(set(part) <= alphabet for part in parts):
        return False
    try:
        return isinstance(_b64url_json(parts[0]), dict) and isinstance(_b64url_json(parts[1]), dict)
    except (ValueError, binascii.Error):
        return False


def _send(http: httpx.Client, request: HttpRequest) -> HttpResponse:
    response = http.request(request.method, request.url, headers=dict(request.headers), content=request.body)
    headers = {name.lower(): value for name, value in response.headers.items()}
    return HttpResponse(response.status_code, headers, response.content)


def issue_certificate(backend: KeyBackend, emulator: Emulator, *, key_name: str) -> Binding:
    """Run metadata → key → CSR (signed by ``backend``) → ``issuecredential`` against ``emulator``.

    Returns the binding (certificate checked to carry the backend's key, token endpoint allowed);
    fails the test with IMDS's (redacted) answer when the CSR is refused.
    """
    correlation_id = str(uuid.uuid4())
    identity = ManagedIdentity.system_assigned()
    with httpx.Client(trust_env=False, follow_redirects=False, timeout=30.0) as http:
        answer = _send(http, _imds.metadata_request(emulator.imds_url, identity, correlation_id))
        _imds.check_response(answer, endpoint=_imds.METADATA, correlation_id=correlation_id)
        metadata = _imds.parse_metadata(answer)
        key = backend.open_key(key_name)
        info = _csr.request_info(
            client_id=metadata.client_id, tenant_id=metadata.tenant_id, cu_id=metadata.cu_id, key=key
        )
        csr = _csr.wire_form(_csr.assemble(info, backend.sign(info)))
        request = _imds.issue_credential_request(emulator.imds_url, identity, correlation_id, csr, None)
        response = _send(http, request)
    if response.status != 200:
        pytest.fail(f"IMDS refused the backend's CSR: HTTP {response.status}: {excerpt(response.body)}")
    issued = _imds.parse_issued_credential(response)
    certificate = _binding.certificate_for_key(
        issued.certificate_der, key, backend=backend.name, now=datetime.now(timezone.utc)
    )
    endpoint = _sts.token_endpoint(
        issued.mtls_authentication_endpoint, issued.tenant_id, (emulator.allowed_token_host,)
    )
    return Binding(certificate, issued.client_id, issued.tenant_id, endpoint, attested=False)


async def _token_then_resource(
    http: httpx.AsyncClient, binding: Binding, resource_url: str
) -> tuple[int, str, int]:
    """Token over mTLS, then the resource over the same client: (token status, token, resource status)."""
    request = _sts.token_request(binding, DEFAULT_SCOPE, str(uuid.uuid4()))
    answer = await http.request(
        request.method, request.url, headers=dict(request.headers), content=request.body
    )
    if answer.status_code != 200:
        return answer.status_code, "", 0
    token = _sts.parse_token_response(HttpResponse(200, {}, answer.content)).access_token
    resource = await http.get(resource_url, headers={"Authorization": f"mtls_pop {token}"})
    return 200, token, resource.status_code


class BackendConformance:
    """Subclass as ``Test<Name>Conformance`` and override the ``backend_factory`` fixture.

    Class attributes a backend may override: :attr:`key_name`, :attr:`priority_time_limit`,
    :attr:`attestation_endpoint`, :attr:`attestation_client_id`.
    """

    key_name = KEY_NAME_PREFIX + "conformance-suite"
    """The name every test opens; a persisting backend keeps (and reuses) this key."""

    priority_time_limit = 0.5
    """Seconds one ``priority()`` call may take."""

    attestation_endpoint = "https://sharedeus2.eus2.attest.azure.net"
    attestation_client_id = "0f1e2d3c-4b5a-4697-8877-665544332211"

    # -- fixtures a backend distribution may override ------------------------------------------------

    @pytest.fixture
    def backend_factory(self) -> BackendFactory:
        """Override: return a zero-argument callable (usually the class) that makes a fresh backend."""
        pytest.fail(f"{type(self).__name__} must override the backend_factory fixture")

    @pytest.fixture
    def backend_class(self, backend_factory: BackendFactory) -> type[Any]:
        """The class whose ``priority()`` is checked: the factory itself when it is a class."""
        if isinstance(backend_factory, type):
            return backend_factory
        instance = backend_factory()
        instance.close()
        return type(instance)

    @pytest.fixture
    def viable(self, backend_class: type[Any]) -> float:
        """The backend's priority; skips the test when the backend is not viable on this host."""
        try:
            return float(backend_class.priority())
        except MsiV2UnavailableError as exc:
            pytest.skip(f"backend not viable here: {exc}")

    @pytest.fixture
    def backend(self, viable: float, backend_factory: BackendFactory) -> Iterator[KeyBackend]:
        """A fresh backend for one test, closed afterwards."""
        instance = backend_factory()
        try:
            yield instance
        finally:
            instance.close()

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_emulator(cls) -> Iterator[Emulator]:
        """The emulator (IMDS + STS + resource on loopback, real TLS), one per test class."""
        try:
            from .emulator import Emulator
        except ImportError as exc:
            pytest.fail(
                f"the conformance suite needs the emulator: pip install 'msiv2-async[emulator]' ({exc})"
            )
        with Emulator() as emulator:
            yield emulator

    @pytest.fixture(params=["asyncio", "trio"])
    def event_loop_name(self, request: pytest.FixtureRequest) -> str:
        """The anyio backend the async checks run on (trio only when it is installed)."""
        name = str(request.param)
        if name == "trio" and find_spec("trio") is None:
            pytest.skip("trio is not installed")
        return name

    # -- declarations and priority -------------------------------------------------------------------

    def test_declares_name_strength_and_attestation_flag(self, backend: KeyBackend) -> None:
        assert isinstance(backend, KeyBackend)
        assert isinstance(backend.name, str)
        assert backend.name
        assert backend.name.strip() == backend.name
        assert backend.binding_strength in BINDING_STRENGTHS
        assert backend.binding_strength != "none", "a backend that binds nothing must not exist"
        assert isinstance(backend.supports_attestation, bool)

    def test_priority_is_cheap_and_a_number_or_unavailable(self, backend_class: type[Any]) -> None:
        outcomes: list[object] = []
        reason = ""
        for _ in range(3):
            started = time.perf_counter()
            try:
                value: object = backend_class.priority()
            except MsiV2UnavailableError as exc:
                value = MsiV2UnavailableError
                reason = str(exc)
            elapsed = time.perf_counter() - started
            assert elapsed < self.priority_time_limit, f"priority() took {elapsed:.3f} s"
            outcomes.append(value)
        first = outcomes[0]
        if first is not MsiV2UnavailableError:
            assert isinstance(first, int | float), f"priority() -> {first!r}"
            assert not isinstance(first, bool), f"priority() -> {first!r}"
            assert math.isfinite(first)
        else:
            assert reason, "MsiV2UnavailableError from priority() must say why"
        assert outcomes == [first] * 3, "priority() must give the same answer every time"

    # -- key and signature ---------------------------------------------------------------------------

    def test_open_key_returns_rsa_2048_with_exponent_65537(self, backend: KeyBackend) -> None:
        key = backend.open_key(self.key_name)
        assert isinstance(key, RsaPublicNumbers)
        assert key.modulus.bit_length() == 2048
        assert key.exponent == 65537

    def test_open_key_twice_returns_the_same_key(self, backend: KeyBackend) -> None:
        assert backend.open_key(self.key_name) == backend.open_key(self.key_name)

    def test_sign_is_rsassa_pss_sha256_with_a_random_32_byte_salt(self, backend: KeyBackend) -> None:
        key = backend.open_key(self.key_name)
        data = b"certificationRequestInfo bytes " + uuid.uuid4().bytes
        first, second = backend.sign(data), backend.sign(data)
        assert len(first) == 256
        verify_pss_signature(key, first, data)
        verify_pss_signature(key, second, data)
        assert first != second, "PSS signatures must use a fresh random salt"
        with pytest.raises(InvalidSignature):
            verify_pss_signature(key, first, data + b"!")

    # -- against the emulator ------------------------------------------------------------------------

    def test_csr_signed_by_the_backend_is_accepted_by_imds(
        self, backend: KeyBackend, conformance_emulator: Emulator
    ) -> None:
        issued_before = len(conformance_emulator.issued_certificates)
        binding = issue_certificate(backend, conformance_emulator, key_name=self.key_name)
        assert len(conformance_emulator.issued_certificates) == issued_before + 1
        assert binding.certificate.backend == backend.name
        assert binding.client_id == conformance_emulator.system_identity.client_id

    def test_mtls_transport_presents_the_issued_certificate(
        self, backend: KeyBackend, conformance_emulator: Emulator, event_loop_name: str
    ) -> None:
        emulator = conformance_emulator
        binding = issue_certificate(backend, emulator, key_name=self.key_name)
        tls = TlsSettings(ca_bundle=emulator.ca_bundle_path)

        async def exchange() -> tuple[int, str, int]:
            transport = await anyio.to_thread.run_sync(backend.mtls_transport, binding.certificate.der, tls)
            async with httpx.AsyncClient(transport=transport, trust_env=False, timeout=30.0) as http:
                return await _token_then_resource(http, binding, emulator.resource_url)

        token_status, token, resource_status = anyio.run(exchange, backend=event_loop_name)
        assert token_status == 200, "the STS refused the token request over the backend's transport"
        bound_to = _binding.cnf_thumbprint(token)  # outside the assert: a failure must not print the token
        assert bound_to == binding.certificate.thumbprint_sha256
        assert resource_status == 200
        entry = emulator.resource_log[-1]
        assert entry["presented_x5t"] == binding.certificate.thumbprint_sha256
        assert entry["cnf_x5t"] == binding.certificate.thumbprint_sha256

    def test_sync_mtls_transport_presents_the_issued_certificate(
        self, backend: KeyBackend, conformance_emulator: Emulator
    ) -> None:
        factory = getattr(backend, "mtls_sync_transport", None)
        if not callable(factory):
            pytest.skip(f"backend {backend.name!r} offers no mtls_sync_transport")
        emulator = conformance_emulator
        binding = issue_certificate(backend, emulator, key_name=self.key_name)
        transport = factory(binding.certificate.der, TlsSettings(ca_bundle=emulator.ca_bundle_path))
        request = _sts.token_request(binding, DEFAULT_SCOPE, str(uuid.uuid4()))
        with httpx.Client(transport=transport, trust_env=False, timeout=30.0) as http:
            answer = _send(http, request)
            assert answer.status == 200, "the STS refused the token request over the sync transport"
            token = _sts.parse_token_response(answer).access_token
            response = http.get(emulator.resource_url, headers={"Authorization": f"mtls_pop {token}"})
        assert response.status_code == 200
        assert emulator.resource_log[-1]["presented_x5t"] == binding.certificate.thumbprint_sha256

    def test_msiv2_client_gets_a_bound_token_with_this_backend(
        self, backend: KeyBackend, conformance_emulator: Emulator, event_loop_name: str
    ) -> None:
        emulator = conformance_emulator

        async def run() -> tuple[str, str, int]:
            async with MsiV2Client(
                backend=backend,
                imds_endpoint=emulator.imds_url,
                ca_bundle=emulator.ca_bundle_path,
                allowed_token_hosts=[emulator.allowed_token_host],
                attestation=False,
                timeout=60,
            ) as client:
                token = await client.acquire_token()
                async with await client.resource_client(token) as http:
                    response = await http.get(emulator.resource_url)
            return token.binding_certificate.thumbprint_sha256, token.access_token, response.status_code

        thumbprint, token, status = anyio.run(run, backend=event_loop_name)
        bound_to = _binding.cnf_thumbprint(token)
        assert bound_to == thumbprint
        assert status == 200
        assert emulator.resource_log[-1]["presented_x5t"] == thumbprint

    # -- attestation and lifecycle -------------------------------------------------------------------

    def test_attest_returns_a_jwt_only_when_supported(self, backend: KeyBackend) -> None:
        backend.open_key(self.key_name)
        result = backend.attest(endpoint=self.attestation_endpoint, client_id=self.attestation_client_id)
        if backend.supports_attestation:
            assert is_jwt_shaped(result), "attest() must return a JWT when supports_attestation is True"
        else:
            assert result is None

    def test_close_is_idempotent(self, backend_factory: BackendFactory, viable: float) -> None:
        instance = backend_factory()
        instance.open_key(self.key_name)
        instance.close()
        instance.close()
        fresh = backend_factory()
        try:
            assert fresh.open_key(self.key_name).modulus.bit_length() == 2048
        finally:
            fresh.close()
