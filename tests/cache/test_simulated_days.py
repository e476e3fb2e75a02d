"""Thirty simulated days of steady traffic against an in-process IMDS and STS driven by a FakeClock.

Real TLS cannot take part (OpenSSL checks certificate validity against the real clock), so IMDS is an
``httpx.MockTransport`` and the mTLS STS is a ``MockTransport`` per binding certificate, returned by a
backend whose ``mtls_transport`` stands in for the TLS handshake: the STS sees exactly the certificate
the client would present, refuses it outside its validity window (``invalid_client``, as Entra does),
and binds every token it issues to it (``cnf.x5t#S256``).

Every 10 simulated minutes for 30 days the client is asked for two scopes. Each returned token is
checked against the clock at the moment it was returned; the network counts are compared with what the
cache rules of ``_cache.py`` imply (derivations next to each expectation).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from msiv2_async import FakeClock, MsiV2Client, MsiV2Error, MtlsPopToken, SoftwareBackend
from msiv2_async._binding import cnf_thumbprint

pytestmark = pytest.mark.anyio

TENANT_ID = "7d3c1a2b-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
CLIENT_ID = "1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e"
VM_ID = "2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f"
IMDS_URL = "http://169.254.169.254"
STS_URL = "https://sts.example.test"
ALLOWED_TOKEN_HOST = "sts.example.test"
TOKEN_URL = f"{STS_URL}/{TENANT_ID}/oauth2/v2.0/token"
SCOPES = ("https://vault.azure.net", "https://graph.microsoft.com/.default")
NORMALIZED_SCOPES = ("https://vault.azure.net/.default", "https://graph.microsoft.com/.default")

MINUTE = 60
HOUR = 3600
DAY = 86400
STEP = 10 * MINUTE
DAYS = 30
STEPS = DAYS * DAY // STEP  # calls at t = 0, 10 min, ..., 30 d - 10 min
TOKEN_LIFETIME = 24 * HOUR  # expires_in; no refresh_in, so refresh_on = issue + 12 h (half-life)
EXPIRY_MARGIN = 5 * MINUTE  # a token is never served within 5 min of its expiry
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _x5t(certificate_der: bytes) -> str:
    return _b64url(hashlib.sha256(certificate_der).digest())


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)


def _json_response(
    status: int, document: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, json=document, headers=headers)


@dataclass
class FakeAzure:
    """IMDS (getplatformmetadata, issuecredential) and the mTLS STS, on the fake clock, with counters."""

    clock: FakeClock
    certificate_lifetime: float
    token_lifetime: int = TOKEN_LIFETIME
    outage: tuple[float, float] | None = None
    """Seconds after creation during which issuecredential answers 503 (IMDS unavailable)."""
    ca_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    metadata_calls: int = 0
    mints: int = 0
    failed_issuecredential: int = 0
    token_requests: int = 0
    rejected_certificates: int = 0
    problems: list[str] = field(default_factory=list)
    issued: dict[str, x509.Certificate] = field(default_factory=dict)
    bound_to: dict[str, str] = field(default_factory=dict)
    """access token -> x5t#S256 of the certificate it was requested with."""

    _IMDS_HEADERS: ClassVar[dict[str, str]] = {"Server": "IMDS/150.870.65.1854"}

    def __post_init__(self) -> None:
        self.start = self.clock.time()

    def _problem(self, text: str) -> httpx.Response:
        self.problems.append(text)
        return _json_response(400, {"error": "bad_request", "error_description": text}, self._IMDS_HEADERS)

    def imds(self, request: httpx.Request) -> httpx.Response:
        """The IMDS handler."""
        url = urlsplit(str(request.url))
        if f"{url.scheme}://{url.netloc}" != IMDS_URL or request.headers.get("Metadata") != "true":
            return self._problem(f"IMDS request to {request.url} without Metadata: true")
        if parse_qs(url.query).get("cred-api-version") != ["2.0"]:
            return self._problem(f"IMDS request without cred-api-version=2.0: {url.query}")
        if request.method == "GET" and url.path == "/metadata/identity/getplatformmetadata":
            self.metadata_calls += 1
            return _json_response(
                200,
                {
                    "clientId": CLIENT_ID,
                    "tenantId": TENANT_ID,
                    "cuId": {"vmId": VM_ID},
                    "attestationEndpoint": "https://attest.example.test",
                },
                self._IMDS_HEADERS,
            )
        if request.method == "POST" and url.path == "/metadata/identity/issuecredential":
            elapsed = self.clock.time() - self.start
            if self.outage is not None and self.outage[0] <= elapsed < self.outage[1]:
                self.failed_issuecredential += 1
                return _json_response(503, {"error": "service_unavailable"}, self._IMDS_HEADERS)
            return self._issue(request)
        return self._problem(f"unexpected IMDS request {request.method} {url.path}")

    def _issue(self, request: httpx.Request) -> httpx.Response:
        csr = x509.load_der_x509_csr(base64.b64decode(json.loads(request.content)["csr"], validate=True))
        public_key = csr.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey) or public_key.key_size != 2048:
            return self._problem("the CSR does not carry an RSA-2048 key")
        public_key.verify(csr.signature, csr.tbs_certrequest_bytes, PSS, hashes.SHA256())
        now = self.clock.time()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.DOMAIN_COMPONENT, TENANT_ID),
                x509.NameAttribute(NameOID.COMMON_NAME, CLIENT_ID),
            ]
        )
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake managed identity CA")]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now))
            .not_valid_after(_utc(now + self.certificate_lifetime))
            .sign(self.ca_key, hashes.SHA256())
        )
        der = certificate.public_bytes(serialization.Encoding.DER)
        self.mints += 1
        self.issued[_x5t(der)] = certificate
        return _json_response(
            200,
            {
                "client_id": CLIENT_ID,
                "tenant_id": TENANT_ID,
                "certificate": base64.b64encode(der).decode("ascii"),
                "identity_type": "SystemAssigned",
                "mtls_authentication_endpoint": STS_URL,
            },
            self._IMDS_HEADERS,
        )

    def sts_for(self, certificate_der: bytes) -> Any:
        """The STS as reached over an mTLS connection that presents ``certificate_der``."""
        thumbprint = _x5t(certificate_der)
        certificate = x509.load_der_x509_certificate(certificate_der)

        def handler(request: httpx.Request) -> httpx.Response:
            if str(request.url) != TOKEN_URL or request.method != "POST":
                return self._problem(f"unexpected STS request {request.method} {request.url}")
            form = {k: v[0] for k, v in parse_qs(request.content.decode("ascii")).items()}
            expected = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "token_type": "mtls_pop"}
            if {k: form.get(k) for k in expected} != expected or form.get("scope") not in NORMALIZED_SCOPES:
                return self._problem(f"unexpected token request form {sorted(form)}")
            now = self.clock.time()
            self.token_requests += 1
            valid_from = certificate.not_valid_before_utc.timestamp()
            valid_until = certificate.not_valid_after_utc.timestamp()
            if thumbprint not in self.issued or not valid_from <= now < valid_until:
                self.rejected_certificates += 1
                return _json_response(
                    401,
                    {
                        "error": "invalid_client",
                        "error_description": "AADSTS700027: the client certificate is not valid now",
                        "error_codes": [700027],
                    },
                )
            header = {"alg": "RS256", "typ": "JWT", "kid": "fake-sts"}
            claims = {
                "aud": form["scope"].removesuffix("/.default"),
                "iss": f"https://sts.example.test/{TENANT_ID}/v2.0",
                "iat": int(now),
                "nbf": int(now),
                "exp": int(now) + self.token_lifetime,
                "appid": CLIENT_ID,
                "tid": TENANT_ID,
                "jti": str(uuid.uuid4()),
                "cnf": {"x5t#S256": thumbprint},
            }
            access_token = ".".join(
                (
                    _b64url(json.dumps(header).encode()),
                    _b64url(json.dumps(claims).encode()),
                    _b64url(hashlib.sha512(claims["jti"].encode()).digest() * 4),
                )
            )
            self.bound_to[access_token] = thumbprint
            return _json_response(
                200,
                {
                    "token_type": "mtls_pop",
                    "expires_in": self.token_lifetime,
                    "ext_expires_in": self.token_lifetime,
                    "access_token": access_token,
                },
            )

        return handler


class FakeTlsBackend(SoftwareBackend):
    """The software key, with the mTLS handshake replaced by the fake STS for the presented certificate."""

    __test__ = False

    def __init__(self, azure: FakeAzure) -> None:
        super().__init__()
        self._azure = azure

    def mtls_transport(self, certificate_der: bytes, tls: Any) -> httpx.AsyncBaseTransport:
        """The fake STS, as seen through a connection presenting ``certificate_der``."""
        return httpx.MockTransport(self._azure.sts_for(certificate_der))


@dataclass
class Outcome:
    """What one simulation measured."""

    mints: int
    token_requests: int
    metadata_calls: int
    served: int
    distinct_tokens: int
    distinct_certificates_served: int
    violations: dict[str, int]
    stats: dict[str, int]
    """Cache statistics summed over the clients."""
    client_stats: list[dict[str, int]]
    clients: int
    problems: list[str]
    rejected_certificates: int
    errors: int
    """Calls of acquire_token that raised an MsiV2Error."""
    failed_issuecredential: int


async def _settle(client: MsiV2Client) -> None:
    """Wait until every background refresh started so far has ended (they may use worker threads).

    Uses only the public counters: here every stale hit starts one background refresh (the previous
    step's refreshes have ended, and none fails), and every refresh ends by counting itself as done or
    failed.
    """
    for _ in range(20_000):
        stats = client.cache_stats
        if stats["background_refreshes"] + stats["failed_refreshes"] >= stats["stale_hits"]:
            return
        await anyio.sleep(0.0005)
    raise AssertionError(f"background refreshes did not finish within 10 s of real time: {stats}")


def _check(token: MtlsPopToken, now: float, azure: FakeAzure, violations: dict[str, int]) -> None:
    certificate = token.binding_certificate
    not_after = certificate.not_after.timestamp()
    checks = {
        "served_past_certificate_not_after": now >= not_after,
        "served_within_5min_of_certificate_not_after": now >= not_after - EXPIRY_MARGIN,
        "served_before_certificate_not_before": now < certificate.not_before.timestamp() - EXPIRY_MARGIN,
        "served_within_5min_of_token_expiry": now >= token.expires_on - EXPIRY_MARGIN,
        "cnf_does_not_name_binding_certificate": cnf_thumbprint(token.access_token)
        != certificate.thumbprint_sha256,
        "thumbprint_is_not_x5t_of_der": _x5t(certificate.der) != certificate.thumbprint_sha256,
        "token_was_issued_for_another_certificate": azure.bound_to.get(token.access_token)
        != certificate.thumbprint_sha256,
        "certificate_not_issued_by_imds": certificate.thumbprint_sha256 not in azure.issued,
    }
    for name, violated in checks.items():
        violations[name] += int(violated)


async def _simulate(
    *,
    certificate_lifetime: float,
    renewal_fraction: float,
    token_lifetime: int = TOKEN_LIFETIME,
    background: bool = True,
    clients: int = 1,
    cache_dir: str | None = None,
    outage: tuple[float, float] | None = None,
) -> Outcome:
    """Two scopes every 10 minutes for 30 days.

    ``background=False`` skips ``async with`` (a due token is refreshed inline by its caller).
    ``clients`` > 1 with a shared ``cache_dir`` stands for processes sharing the persistent cache; each
    client asks for both scopes at every step, one client after the other.
    ``outage`` (seconds from the start) makes issuecredential answer 503 meanwhile.
    """
    clock = FakeClock()
    azure = FakeAzure(clock, certificate_lifetime, token_lifetime, outage)
    errors = 0
    violations = dict.fromkeys(
        (
            "served_past_certificate_not_after",
            "served_within_5min_of_certificate_not_after",
            "served_before_certificate_not_before",
            "served_within_5min_of_token_expiry",
            "cnf_does_not_name_binding_certificate",
            "thumbprint_is_not_x5t_of_der",
            "token_was_issued_for_another_certificate",
            "certificate_not_issued_by_imds",
        ),
        0,
    )
    served: list[MtlsPopToken] = []
    group = [
        MsiV2Client(
            backend=FakeTlsBackend(azure),
            imds_endpoint=IMDS_URL,
            imds_transport=httpx.MockTransport(azure.imds),
            allowed_token_hosts=[ALLOWED_TOKEN_HOST],
            renewal_fraction=renewal_fraction,
            clock=clock,
            cache_dir=cache_dir,
            environ={},
        )
        for _ in range(clients)
    ]
    async with contextlib.AsyncExitStack() as stack:
        for client in group:
            stack.push_async_callback(client.aclose)  # closed in reverse order: task groups nest
            if background:
                await client.__aenter__()
        for _ in range(STEPS):
            for client in group:
                stale_before = client.cache_stats["stale_hits"]
                for scope in SCOPES:
                    try:
                        token = await client.acquire_token(scope)
                    except MsiV2Error:
                        errors += 1
                        continue
                    _check(token, clock.time(), azure, violations)
                    served.append(token)
                if background and client.cache_stats["stale_hits"] != stale_before:
                    await _settle(client)
            clock.advance(STEP)
        client_stats = [client.cache_stats for client in group]
    return Outcome(
        mints=azure.mints,
        token_requests=azure.token_requests,
        metadata_calls=azure.metadata_calls,
        served=len(served),
        distinct_tokens=len({token.access_token for token in served}),
        distinct_certificates_served=len({token.binding_certificate.thumbprint_sha256 for token in served}),
        violations=violations,
        stats={name: sum(stats[name] for stats in client_stats) for name in client_stats[0]},
        client_stats=client_stats,
        clients=clients,
        problems=azure.problems,
        rejected_certificates=azure.rejected_certificates,
        errors=errors,
        failed_issuecredential=azure.failed_issuecredential,
    )


def _assert_no_bad_token_served(outcome: Outcome) -> None:
    """No protocol problem, no certificate the STS had to refuse, no token that broke a serving rule."""
    assert outcome.problems == []
    assert outcome.rejected_certificates == 0
    assert outcome.violations == dict.fromkeys(outcome.violations, 0)
    assert outcome.stats["remints_on_rejection"] == 0


def _assert_safe(outcome: Outcome) -> None:
    """No protocol problem, no rejected certificate, no bad token served, every call answered; every
    mint attempt succeeded and every token request produced a token that was served."""
    _assert_no_bad_token_served(outcome)
    assert outcome.errors == 0
    assert outcome.served == 2 * STEPS * outcome.clients
    assert outcome.stats["failed_refreshes"] == 0
    assert outcome.stats["certificate_mints"] == outcome.mints
    assert outcome.metadata_calls == outcome.mints
    assert outcome.distinct_tokens == outcome.token_requests
    assert outcome.distinct_certificates_served == outcome.mints


def _assert_served_from_cache(outcome: Outcome, misses: int = 2) -> None:
    """Only ``misses`` calls waited for the network (by default the first call per scope and client);
    every other call was answered from the cache, a due token while one refresh ran in the background."""
    assert outcome.stats["misses"] == misses
    assert outcome.stats["hits"] + outcome.stats["stale_hits"] == 2 * STEPS * outcome.clients - misses


@pytest.mark.parametrize("background", [True, False], ids=["async-with", "no-task-group"])
async def test_thirty_days_of_traffic_renew_certificates_at_half_life(background: bool) -> None:
    outcome = await _simulate(certificate_lifetime=7 * DAY, renewal_fraction=0.5, background=background)
    _assert_safe(outcome)
    # Without a task group the first caller that sees a due token refreshes inline; when that refresh
    # rotates the certificate, the other scope's token (bound to the old certificate) is dropped with it
    # (PROTOCOL.md §8.1: tokens are cached per certificate), so that scope misses once per rotation.
    _assert_served_from_cache(outcome, misses=2 if background else 2 + (outcome.mints - 1))
    # 7-day certificates renewed at half-life: mints at 0, 3.5 d, 7 d, ..., 28 d -> 9 in [0, 30 d).
    assert 8 <= outcome.mints <= 10
    assert outcome.mints == 9
    # Tokens refresh at half-life (12 h of 24 h): 60 per scope in [0, 30 d) = 120. A rotation may cost
    # one extra request per scope; here every rotation falls on a 12 h boundary (84 h = 7 x 12 h).
    assert 2 * (DAYS * DAY // (12 * HOUR)) <= outcome.token_requests <= 2 * (60 + outcome.mints)
    assert outcome.token_requests == 120


async def test_renewal_at_ninety_percent_mints_fewer_certificates() -> None:
    outcome = await _simulate(certificate_lifetime=7 * DAY, renewal_fraction=0.9)
    _assert_safe(outcome)
    _assert_served_from_cache(outcome)
    # Renewal at 0.9 x 7 d = 151.2 h; the first step at or after it is 151 h 20 min: mints at 0,
    # 151.3 h, 302.7 h, 454 h, 605.3 h -> 5 (fewer than the 9 at half-life).
    assert outcome.mints == 5
    # Per certificate period of 151 h 20 min, ceil(151.33 / 12) = 13 tokens per scope; the last period
    # (605.3 h .. 720 h) holds ceil(114.67 / 12) = 10: 4 x 13 + 10 = 62 per scope. Rotations fall off
    # the 12 h grid here, which costs 2 requests per scope over the 60 of the half-life schedule.
    assert outcome.token_requests == 2 * 62


async def test_certificates_shorter_lived_than_tokens_are_rotated_before_tokens_outlive_them() -> None:
    outcome = await _simulate(certificate_lifetime=20 * HOUR, renewal_fraction=0.5)
    _assert_safe(outcome)
    _assert_served_from_cache(outcome)
    # 20 h certificates renewed at 10 h: mints at 0, 10 h, ..., 710 h -> 72. A rotation refreshes both
    # tokens before their own 12 h refresh time, so every token comes from a rotation: 2 x 72.
    assert outcome.mints == DAYS * 24 // 10
    assert outcome.token_requests == 2 * outcome.mints


async def test_tokens_are_not_served_near_the_notafter_of_a_certificate_renewed_only_at_its_end() -> None:
    # renewal_fraction=1: a certificate is replaced only when it stops being usable (NotAfter - 5 min),
    # which is also when its tokens (valid 24 h) stop being servable. NotAfter = mint + 20 h 3 min, so
    # the step at 20 h lies within 5 min of NotAfter: it must not serve the old token but wait for a new
    # certificate.
    outcome = await _simulate(certificate_lifetime=20 * HOUR + 3 * MINUTE, renewal_fraction=1.0)
    _assert_safe(outcome)
    # Mints at 0, 20 h, ..., 700 h -> 36. Per certificate and scope: one token in the foreground at the
    # mint (a miss), one background refresh at 12 h -> 2 x 2 x 36 = 144 requests, 2 x 36 misses.
    assert outcome.mints == DAYS * 24 // 20
    assert outcome.token_requests == 2 * 2 * outcome.mints
    assert outcome.stats["misses"] == 2 * outcome.mints


async def test_short_lived_tokens_are_never_served_within_five_minutes_of_their_expiry() -> None:
    # expires_in = 63 min (< 2 h, so refresh_on = expiry - 5 min = 58 min): at the step at 60 min the
    # token has 3 min left and must not be served; a new one is fetched in the foreground.
    outcome = await _simulate(certificate_lifetime=7 * DAY, renewal_fraction=0.5, token_lifetime=63 * MINUTE)
    _assert_safe(outcome)
    assert outcome.mints == 9
    # One token per scope per hour: 2 x 720, every one of them a miss (no stale window is left).
    assert outcome.token_requests == 2 * DAYS * 24
    assert outcome.stats["misses"] == outcome.token_requests


async def test_two_processes_sharing_a_cache_directory_mint_once_per_renewal(tmp_path: Path) -> None:
    # Two clients with their own backends but one cache directory stand for two processes: the
    # certificate (and the key) come from the directory, and a renewal by one is picked up by the other.
    outcome = await _simulate(
        certificate_lifetime=7 * DAY, renewal_fraction=0.5, clients=2, cache_dir=str(tmp_path / "cache")
    )
    _assert_safe(outcome)
    _assert_served_from_cache(outcome, misses=4)
    first, second = outcome.client_stats
    # The first client asks first at every step, so it mints all 9 certificates (as a lone client
    # would); the second loads each of them from the directory instead of minting.
    assert outcome.mints == 9
    assert (first["certificate_mints"], first["persisted_certificates_loaded"]) == (9, 0)
    assert (second["certificate_mints"], second["persisted_certificates_loaded"]) == (0, 9)
    # Tokens are never shared between processes: each client requests its own 120.
    assert outcome.token_requests == 2 * 120


async def test_failing_certificate_renewal_does_not_turn_into_token_requests() -> None:
    # issuecredential answers 503 from day 3 to day 5: the renewal due at 3.5 d fails until 5 d, while
    # the certificate (valid 7 d) stays usable, so every call is still answered from the cache.
    outcome = await _simulate(certificate_lifetime=7 * DAY, renewal_fraction=0.5, outage=(3 * DAY, 5 * DAY))
    _assert_no_bad_token_served(outcome)
    assert outcome.errors == 0
    assert outcome.served == 2 * STEPS
    assert outcome.failed_issuecredential > 0  # the renewal was attempted during the outage
    # The tokens cached with the old certificate are valid until it expires; they need refreshing only
    # at their own refresh time: 60 per scope, plus one per rotation (9 certificates here: 0 d, then
    # 5 d once IMDS is back, 8.5 d, ..., 29.5 d), plus one for slack.
    assert outcome.mints == 9
    assert outcome.token_requests <= 2 * (DAYS * 2 + outcome.mints + 1)
