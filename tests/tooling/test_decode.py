"""``msiv2-async decode``: header and claims of an emulator token, its cnf checked against certificates."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tooling_support import run_cli

from msiv2_async import MsiV2Client
from msiv2_async._models import x5t_s256
from msiv2_async.emulator import Emulator


@dataclass(frozen=True)
class Issued:
    token: str
    bearer: str
    thumbprint: str
    pem: Path
    der: Path
    foreign: Path


@pytest.fixture(scope="module")
def issued(running_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Issued:
    emulator = running_emulator

    async def acquire() -> tuple[str, str, bytes]:
        async with MsiV2Client(
            imds_endpoint=emulator.imds_url,
            ca_bundle=emulator.ca_bundle_path,
            allowed_token_hosts=[emulator.allowed_token_host],
        ) as client:
            token = await client.acquire_token()
            bearer = await client.acquire_token(token_type="bearer")
        return token.access_token, bearer.access_token, token.binding_certificate.der

    token, bearer, der = anyio.run(acquire)
    directory = tmp_path_factory.mktemp("decode")
    pem_path, der_path, foreign = directory / "cert.pem", directory / "cert.der", directory / "ca.pem"
    certificate = x509.load_der_x509_certificate(der)
    pem_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    der_path.write_bytes(der)
    foreign.write_bytes(emulator.ca_pem)
    return Issued(token, bearer, x5t_s256(der), pem_path, der_path, foreign)


def _signature(token: str) -> str:
    return token.split(".")[2]


def test_decode_prints_header_and_claims_and_says_the_signature_is_not_verified(issued: Issued) -> None:
    result = run_cli("decode", issued.token)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["signature_verified"] is False
    assert "signature NOT verified" in document["warning"]
    assert "signature NOT verified" in result.stderr
    assert document["header"]["alg"] == "RS256"
    assert document["claims"]["cnf"]["x5t#S256"] == issued.thumbprint
    assert document["cnf_x5t#S256"] == issued.thumbprint
    assert document["times_utc"]["exp"].endswith("Z")
    assert set(document["times_utc"]) >= {"exp", "iat"}
    assert document["expired"] is False
    assert "binding" not in document
    assert _signature(issued.token) not in result.stdout + result.stderr


def test_decode_with_the_matching_pem_certificate_exits_0(issued: Issued) -> None:
    result = run_cli("decode", issued.token, "--certificate", str(issued.pem))
    assert result.returncode == 0, result.stderr
    binding = json.loads(result.stdout)["binding"]
    assert binding == {
        "certificate": str(issued.pem),
        "certificate_x5t#S256": issued.thumbprint,
        "matches": True,
    }


def test_decode_from_stdin_with_scheme_prefix_and_der_certificate(issued: Issued) -> None:
    result = run_cli("decode", "-", "--certificate", str(issued.der), stdin=f"mtls_pop {issued.token}\n")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["binding"]["matches"] is True
    assert _signature(issued.token) not in result.stdout + result.stderr


def test_decode_with_another_certificate_exits_1_with_a_mismatch(issued: Issued) -> None:
    result = run_cli("decode", issued.token, "--certificate", str(issued.foreign))
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["binding"]["matches"] is False
    assert document["binding"]["certificate_x5t#S256"] != issued.thumbprint
    assert "binding mismatch" in result.stderr
    assert issued.thumbprint in result.stderr


def test_decode_of_an_unbound_bearer_token_against_a_certificate_exits_1(issued: Issued) -> None:
    result = run_cli("decode", issued.bearer, "--certificate", str(issued.pem))
    assert result.returncode == 1
    assert json.loads(result.stdout)["cnf_x5t#S256"] is None
    assert "not bound to any certificate" in result.stderr


@pytest.mark.parametrize("garbage", ["not-a-token", "a.b", "eyJub3QganNvbg.e30.sig"])
def test_decode_rejects_what_is_not_a_jwt(garbage: str) -> None:
    result = run_cli("decode", garbage)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("msiv2-async: error: ")


def test_decode_with_an_unreadable_certificate_exits_1(issued: Issued, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    result = run_cli("decode", issued.token, "--certificate", str(junk))
    assert result.returncode == 1
    assert "no PEM or DER X.509 certificate" in result.stderr
