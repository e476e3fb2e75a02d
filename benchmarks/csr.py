"""1. CSR signing: our CSR build + sign vs a bare RSA-PSS sign of the same bytes vs cryptography's builder."""

from __future__ import annotations

import gc
import json
import time
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

from msiv2_async import _csr
from msiv2_async._models import CuId, RsaPublicNumbers
from msiv2_async.backends import KeyBackend

from ._stats import add_ratios, summary

CLIENT_ID = "0f1e2d3c-4b5a-4697-8877-665544332211"
TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CU_ID = CuId(vm_id="5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d")
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
_CUID_OID = ObjectIdentifier(_csr.OID_CUID_ATTRIBUTE)


def ours(backend: KeyBackend, key: RsaPublicNumbers) -> bytes:
    """What the flow does: ``request_info`` (DER from public numbers), the backend's sign, ``assemble``."""
    info = _csr.request_info(client_id=CLIENT_ID, tenant_id=TENANT_ID, cu_id=CU_ID, key=key)
    return _csr.assemble(info, backend.sign(info))


def with_cryptography(private_key: rsa.RSAPrivateKey) -> bytes:
    """The equivalent CSR from cryptography's ``CertificateSigningRequestBuilder`` (same subject order,
    attribute, RSASSA-PSS SHA-256 salt 32), as DER."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.DOMAIN_COMPONENT, TENANT_ID),
            x509.NameAttribute(NameOID.COMMON_NAME, CLIENT_ID),
        ]
    )
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_attribute(_CUID_OID, _csr.cuid_json(CU_ID).encode("utf-8"))
    )
    request = builder.sign(private_key, hashes.SHA256(), rsa_padding=_PSS)
    return request.public_bytes(serialization.Encoding.DER)


def _check(der: bytes, public_key: RsaPublicNumbers) -> dict[str, Any]:
    """Proof that a CSR is what IMDS wants: its signature verifies and the emulator's strict check passes."""
    request = x509.load_der_x509_csr(der)
    numbers = request.public_key().public_numbers()  # type: ignore[union-attr]
    result: dict[str, Any] = {
        "bytes": len(der),
        "signature_valid": request.is_signature_valid,
        "our_key": (numbers.n, numbers.e) == (public_key.modulus, public_key.exponent),
    }
    try:
        from msiv2_async.emulator._csr_check import check_csr

        check_csr(der, client_id=CLIENT_ID, tenant_id=TENANT_ID, cu_id=json.loads(_csr.cuid_json(CU_ID)))
        result["imds_accepts"] = True
    except ImportError:
        result["imds_accepts"] = None
    except ValueError as exc:
        result["imds_accepts"] = False
        result["imds_rejects_because"] = str(exc)
    return result


def run_backend(backend: KeyBackend, rounds: int) -> dict[str, Any]:
    """Interleave the contenders ``rounds`` times (order rotated each round); times in microseconds."""
    key = backend.open_key("MsiV2AsyncBench_csr")
    info = _csr.request_info(client_id=CLIENT_ID, tenant_id=TENANT_ID, cu_id=CU_ID, key=key)
    private_key = getattr(backend, "_key", None)  # only the software backend holds a cryptography key
    contenders: dict[str, Any] = {
        "bare_sign": lambda: backend.sign(info),
        "ours": lambda: ours(backend, key),
    }
    if isinstance(private_key, rsa.RSAPrivateKey):
        contenders["cryptography_builder"] = lambda: with_cryptography(private_key)
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for name in names:  # warm-up
        contenders[name]()
    gc.collect()
    gc.disable()
    try:
        for index in range(rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                work = contenders[name]
                started = time.perf_counter_ns()
                work()
                samples[name].append((time.perf_counter_ns() - started) / 1000)
    finally:
        gc.enable()
    results = {name: summary(values, "us") for name, values in samples.items()}
    add_ratios(results, "bare_sign")
    checks = {"ours": _check(ours(backend, key), key)}
    if "cryptography_builder" in contenders:
        checks["cryptography_builder"] = _check(contenders["cryptography_builder"](), key)
    return {
        "baseline": "bare_sign",
        "contenders": results,
        "checks": checks,
        "note": "bare_sign = the backend's RSASSA-PSS sign of the request info bytes alone; ours = "
        "request_info + sign + assemble; cryptography_builder = CertificateSigningRequestBuilder with "
        "the same subject, attribute and PSS parameters, to DER (software key only)",
    }


def run(backends: list[KeyBackend], rounds: int) -> dict[str, Any]:
    """Section 1 for every backend given."""
    out: dict[str, Any] = {}
    for backend in backends:
        try:
            out[backend.name] = run_backend(backend, rounds)
        finally:
            backend.close()
    return {"rounds": rounds, "backends": out}
