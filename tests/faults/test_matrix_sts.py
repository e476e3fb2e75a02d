"""RELIABILITY.md §7 rows 33-50: the STS (TLS, OAuth errors, throttling, untrusted token answers) and the
resource (mTLS + cnf, claims challenge, plain http and redirects).

Retry timing and throttle windows run on the fake clock (``clock.sleeps`` are the back-offs, and
``clock.advance`` moves the monotonic windows); the slowloris and black-hole rows run on the real clock
and measure how far the deadline was overshot.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from msiv2_async import (
    BindingMismatchError,
    FakeClock,
    MalformedResponseError,
    MsiV2Client,
    MsiV2Error,
    MsiV2TimeoutError,
    MtlsPopToken,
    StsThrottledError,
    TokenRequestError,
    UntrustedEndpointError,
    create_mtls_client,
)
from msiv2_async.emulator import Emulator, Fault

from ._figures import record
from .conftest import Decoy, record_error

pytestmark = pytest.mark.anyio
SCOPE = "https://graph.microsoft.com/.default"
REMOVE = Fault.DELETE


@contextlib.contextmanager
def typed_only(seen: list[BaseException]) -> Iterator[None]:
    """Count any non-MsiV2Error escaping the block as an untyped escape (the test then fails on it)."""
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, MsiV2Error | AssertionError):
            record_error(seen, exc)
        raise


@pytest.fixture(autouse=True)
def sts_defaults(emulator: Emulator) -> Iterator[None]:
    """Whatever a test changed on the shared emulator's TLS listeners is put back afterwards."""
    yield
    emulator.reject_client_certificates(0)
    emulator.sts_tls = "normal"
    emulator.resource_tls = "normal"


async def failure(
    client_kwargs: dict[str, Any], seen: list[BaseException], **overrides: Any
) -> BaseException:
    """Run one acquisition that must fail; return (and record) its exception."""
    async with MsiV2Client(**{**client_kwargs, **overrides}) as client:
        try:
            await client.acquire_token(SCOPE)
        except BaseException as exc:
            return record_error(seen, exc)
    raise AssertionError("the acquisition succeeded although the fault should have made it fail")


async def expect_error(client: MsiV2Client, seen: list[BaseException], kind: type[BaseException]) -> Any:
    """One ``acquire_token`` on an open client that must raise ``kind``; the error, recorded."""
    with typed_only(seen), pytest.raises(kind) as caught:
        await client.acquire_token(SCOPE)
    record_error(seen, caught.value)
    return caught.value


def oauth_body(error: str, codes: list[int], description: str) -> str:
    return json.dumps(
        {
            "error": error,
            "error_description": description,
            "error_codes": codes,
            "correlation_id": "8c1f0b0e-0000-4000-8000-000000000000",
        }
    )


def counts(emulator: Emulator) -> tuple[int, int, int]:
    stats = emulator.stats
    return stats["getplatformmetadata"], stats["issuecredential"], stats["token"]


def issued_der(emulator: Emulator, index: int) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return emulator.issued_certificates[index].public_bytes(Encoding.DER)


# --- TLS to the STS ---------------------------------------------------------------------------------------


async def _server_certificate_failure(
    emulator: Emulator, client_kwargs: dict[str, Any], clock: FakeClock, seen: list[BaseException], mode: str
) -> None:
    emulator.sts_tls = mode
    async with MsiV2Client(**client_kwargs) as client:
        error = await expect_error(client, seen, TokenRequestError)
        stats = client.cache_stats
    assert error.error != "client_certificate_rejected"
    assert stats["remints_on_rejection"] == 0
    assert counts(emulator) == (1, 1, 0)  # no re-mint, and the token handler never saw a request body
    assert clock.sleeps == []  # not retried either


@pytest.mark.fault_row(33)
async def test_row33_sts_certificate_from_unknown_ca_fails_closed_without_remint(
    emulator: Emulator, client_kwargs: dict[str, Any], clock: FakeClock, seen: list[BaseException]
) -> None:
    await _server_certificate_failure(emulator, client_kwargs, clock, seen, "unknown_ca")
    assert "did not verify" in str(seen[0])


@pytest.mark.fault_row(34)
async def test_row34_sts_certificate_for_another_hostname_fails_closed(
    emulator: Emulator, client_kwargs: dict[str, Any], clock: FakeClock, seen: list[BaseException]
) -> None:
    await _server_certificate_failure(emulator, client_kwargs, clock, seen, "wrong_hostname")


@pytest.mark.fault_row(35)
async def test_row35_sts_speaking_only_tls11_fails_closed(
    emulator: Emulator, client_kwargs: dict[str, Any], clock: FakeClock, seen: list[BaseException]
) -> None:
    await _server_certificate_failure(emulator, client_kwargs, clock, seen, "tls11_only")


@pytest.mark.fault_row(36)
@pytest.mark.parametrize("rejections", [1, 2])
async def test_row36_client_certificate_rejected_in_handshake_evicts_remints_and_retries_once(
    emulator: Emulator,
    client_kwargs: dict[str, Any],
    seen: list[BaseException],
    rejections: int,
) -> None:
    emulator.reject_client_certificates(rejections)
    with typed_only(seen):
        async with MsiV2Client(**client_kwargs) as client:
            if rejections == 1:
                token = await client.acquire_token(SCOPE)
                assert token.binding_certificate.der == issued_der(emulator, -1)
                assert token.binding_certificate.der != issued_der(emulator, -2)
                assert counts(emulator) == (2, 2, 1)  # a re-mint is metadata + issuecredential
            else:
                error = await expect_error(client, seen, TokenRequestError)
                assert error.error == "client_certificate_rejected"
                assert counts(emulator) == (2, 2, 0)  # re-minted once, then gave up: no loop
            assert client.cache_stats["remints_on_rejection"] == 1
    assert emulator.stats["token_handshake_rejections"] == rejections


# --- OAuth errors from the STS ----------------------------------------------------------------------------


@pytest.mark.fault_row(37)
@pytest.mark.parametrize("codes", [[], [1000610], [1000614]])
async def test_row37_persistent_invalid_client_makes_two_mints_two_requests_then_fails_fast(
    emulator: Emulator,
    client_kwargs: dict[str, Any],
    clock: FakeClock,
    seen: list[BaseException],
    codes: list[int],
) -> None:
    body = oauth_body("invalid_client", codes, "AADSTS1000610: the client certificate was revoked.")
    emulator.inject("token", *[Fault(status=401, body=body)] * 2)
    async with MsiV2Client(**client_kwargs) as client:
        error = await expect_error(client, seen, TokenRequestError)
        assert (error.error, error.error_codes, error.status) == ("invalid_client", tuple(codes), 401)
        assert counts(emulator) == (2, 2, 2)  # RELIABILITY §8.10: exactly 2 + 2 per acquisition
        for _ in range(10):  # inside the failure window: the same error, no network
            assert await expect_error(client, seen, TokenRequestError) is error
        assert counts(emulator) == (2, 2, 2)
        clock.advance(5.0)
        await client.acquire_token(SCOPE)  # the window is over and the STS accepts again
    assert counts(emulator) == (2, 2, 3)
    record("remediation", f"invalid_client {codes or 'no codes'}: issuecredential + token", "2 + 2")


@pytest.mark.fault_row(38)
async def test_row38_invalid_client_once_replaces_the_certificate_in_memory_and_on_disk(
    emulator: Emulator, client_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    body = oauth_body("invalid_client", [], "AADSTS700027: the client certificate is not valid.")
    emulator.inject("token", Fault(status=401, body=body))
    async with MsiV2Client(**client_kwargs, cache_dir=str(cache_dir)) as client:
        token = await client.acquire_token(SCOPE)
        old, new = issued_der(emulator, -2), issued_der(emulator, -1)
        assert token.binding_certificate.der == new
        assert counts(emulator) == (2, 2, 2)
        again = await client.acquire_token(SCOPE)  # memory: the new pair, from the cache
        assert again.binding_certificate.der == new
        assert (await client.get_binding_certificate()).der == new
        assert counts(emulator) == (2, 2, 2)
    (binding_file,) = cache_dir.glob("binding-*.json")
    persisted = base64.b64decode(json.loads(binding_file.read_bytes())["certificate"])
    assert persisted == new != old  # disk: the old certificate is gone
    async with MsiV2Client(**client_kwargs, cache_dir=str(cache_dir)) as second:
        loaded = await second.acquire_token(SCOPE)
        assert second.cache_stats["persisted_certificates_loaded"] == 1
    assert loaded.binding_certificate.der == new
    assert counts(emulator) == (2, 2, 3)


@pytest.mark.fault_row(39)
async def test_row39_aadsts392200_is_a_typed_error_without_retry(
    emulator: Emulator, client_kwargs: dict[str, Any], clock: FakeClock, seen: list[BaseException]
) -> None:
    body = oauth_body(
        "invalid_request", [392200], "AADSTS392200: Client certificate is missing from the request."
    )
    emulator.inject("token", Fault(status=400, body=body))
    error = await failure(client_kwargs, seen)
    assert isinstance(error, TokenRequestError)
    assert error.error_codes == (392200,)
    assert "did not reach the STS" in str(error)  # the hint: a TLS-inspecting proxy drops the certificate
    assert counts(emulator) == (1, 1, 1)
    assert clock.sleeps == []
    # In a normal run the STS never sees a request without a certificate (it would answer 392200).
    async with MsiV2Client(**client_kwargs) as client:
        token = await client.acquire_token(SCOPE)
    assert token.token_type == "mtls_pop"
    assert counts(emulator) == (2, 2, 2)


@pytest.mark.fault_row(40)
@pytest.mark.parametrize("persistent", [False, True])
async def test_row40_aadsts1000901_evicts_and_remints_once(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], persistent: bool
) -> None:
    body = oauth_body(
        "invalid_request",
        [1000901],
        "AADSTS1000901: The provided token_not_after extension value should be greater than the current "
        "time.",
    )
    emulator.inject("token", *[Fault(status=400, body=body)] * (2 if persistent else 1))
    async with MsiV2Client(**client_kwargs) as client:
        if persistent:
            error = await expect_error(client, seen, TokenRequestError)
            assert 1000901 in error.error_codes
        else:
            token = await client.acquire_token(SCOPE)
            assert token.binding_certificate.der == issued_der(emulator, -1) != issued_der(emulator, -2)
        assert client.cache_stats["remints_on_rejection"] == 1
    assert counts(emulator) == (2, 2, 2)


@pytest.mark.fault_row(41)
@pytest.mark.parametrize("variant", ["500_then_200", "500_twice"])
async def test_row41_sts_500_is_retried_once_after_1s_then_a_60s_window(
    emulator: Emulator,
    client_kwargs: dict[str, Any],
    clock: FakeClock,
    seen: list[BaseException],
    variant: str,
) -> None:
    failures = 1 if variant == "500_then_200" else 2
    emulator.inject(
        "token", *[Fault(status=500, body=oauth_body("server_error", [], "try later"))] * failures
    )
    async with MsiV2Client(**client_kwargs) as client:
        if failures == 1:
            await client.acquire_token(SCOPE)
        else:
            error = await expect_error(client, seen, TokenRequestError)
            assert (error.status, error.retry_after) == (500, 60.0)
            for _ in range(20):
                clock.advance(59.0 / 20)
                assert await expect_error(client, seen, TokenRequestError) is error
            assert counts(emulator) == (1, 1, 2)  # 0 network calls inside the 60 s window
            clock.advance(1.0)
            await client.acquire_token(SCOPE)
    assert clock.sleeps == [1.0]
    assert emulator.stats["token"] == (2 if failures == 1 else 3)
    record("retry fidelity", "STS 5xx: delays (s)", clock.sleeps)


@pytest.mark.fault_row(42)
@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("retry_after", [30, 7200])
async def test_row42_sts_retry_after_opens_a_capped_window_without_network(
    emulator: Emulator,
    client_kwargs: dict[str, Any],
    clock: FakeClock,
    seen: list[BaseException],
    status: int,
    retry_after: int,
) -> None:
    window = min(retry_after, 3600)
    emulator.inject(
        "token",
        Fault(
            status=status,
            headers={"Retry-After": str(retry_after)},
            body=oauth_body("temporarily_unavailable", [], "busy"),
        ),
    )
    async with MsiV2Client(**client_kwargs) as client:
        opened = clock.monotonic()
        error = await expect_error(client, seen, StsThrottledError)
        assert (error.status, error.retry_after) == (status, float(window))
        assert clock.sleeps == []  # no in-call retry
        tried = 0
        for offset in [window * k / 50 for k in range(50)] + [window - 0.001]:
            clock.advance(opened + offset - clock.monotonic())
            assert await expect_error(client, seen, StsThrottledError) is error
            tried += 1
        assert counts(emulator) == (1, 1, 1)  # nothing reached the network inside the window
        clock.advance(0.002)
        await client.acquire_token(SCOPE)
        measured = clock.monotonic() - opened
    assert counts(emulator) == (1, 1, 2)
    label = f"STS {status} Retry-After {retry_after}"
    record("throttle", f"{label}: window (s), first network call after", f"{window} / {measured:.3f}")
    record("throttle", f"{label}: calls inside the window / network calls among them", f"{tried} / 0")


# --- untrusted token answers ------------------------------------------------------------------------------


@pytest.mark.fault_row(43)
@pytest.mark.parametrize("variant", ["bearer", "missing_token_type"])
async def test_row43_wrong_or_missing_token_type_is_typed_and_not_cached(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], variant: str
) -> None:
    emulator.inject("token", Fault(token=variant))
    async with MsiV2Client(**client_kwargs, failure_cache_seconds=0) as client:
        await expect_error(client, seen, MalformedResponseError)
        token = await client.acquire_token(SCOPE)  # nothing was cached: the STS is asked again
    assert token.token_type == "mtls_pop"
    assert counts(emulator) == (1, 1, 2)


@pytest.mark.fault_row(44)
@pytest.mark.parametrize("variant", ["wrong_cnf", "no_cnf"])
async def test_row44_token_bound_to_another_certificate_is_typed_and_not_cached(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], variant: str
) -> None:
    emulator.inject("token", Fault(token=variant))
    async with MsiV2Client(**client_kwargs, failure_cache_seconds=0) as client:
        await expect_error(client, seen, BindingMismatchError)
        token = await client.acquire_token(SCOPE)
    assert counts(emulator) == (1, 1, 2)
    assert token.binding_certificate.der == issued_der(emulator, -1)


@pytest.mark.fault_row(45)
@pytest.mark.parametrize(
    "fields",
    [
        {"access_token": REMOVE},
        {"access_token": ""},
        {"expires_in": 0},
        {"expires_in": -5},
        {"expires_in": "abc"},
        {"expires_in": 10**12},
        {"expires_in": 1e400},
        {"refresh_in": -1},
    ],
    ids=[
        "no_access_token",
        "empty_access_token",
        "expires_in_0",
        "-5",
        "abc",
        "10**12",
        "1e400",
        "refresh_in_-1",
    ],
)
async def test_row45_missing_token_or_absurd_lifetimes_are_typed_errors(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], fields: dict[str, Any]
) -> None:
    emulator.inject("token", Fault(response_fields=fields))
    error = await failure(client_kwargs, seen)
    assert isinstance(error, MalformedResponseError)
    assert counts(emulator) == (1, 1, 1)


@pytest.mark.fault_row(46)
async def test_row46_truncated_json_with_the_token_is_typed_and_the_token_never_shows(
    emulator: Emulator,
    client_kwargs: dict[str, Any],
    seen: list[BaseException],
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator.inject("token", Fault(token="truncated"))
    error = await failure(client_kwargs, seen)
    assert isinstance(error, MalformedResponseError)
    secrets = emulator.sentinels()
    assert secrets  # the truncated prefix of the token is among them
    for secret in secrets:
        assert secret not in str(error)
        assert secret not in repr(error)
        assert secret not in caplog.text
    assert counts(emulator) == (1, 1, 1)


@pytest.mark.fault_row(47)
@pytest.mark.parametrize("variant", ["redirect_302", "slowloris", "black_hole"])
async def test_row47_sts_redirect_is_not_followed_and_slow_sts_is_cut_by_the_deadline(
    emulator: Emulator,
    client_kwargs: dict[str, Any],
    seen: list[BaseException],
    decoy: Decoy,
    variant: str,
) -> None:
    if variant == "redirect_302":
        emulator.inject("token", Fault(status=302, headers={"Location": f"{decoy.https_url}/token"}))
        error = await failure(client_kwargs, seen)
        assert isinstance(error, TokenRequestError)
        assert error.status == 302
        assert decoy.connections == 0
        assert counts(emulator) == (1, 1, 1)
        return
    if variant == "slowloris":
        emulator.inject("token", Fault(action="slowloris", interval=0.3))
    else:
        emulator.inject("token", Fault(action="hang"))
    deadline = 1.5
    started = time.monotonic()
    error = await failure(client_kwargs, seen, timeout=deadline)
    overshoot = time.monotonic() - started - deadline
    assert isinstance(error, MsiV2TimeoutError)
    assert -0.05 < overshoot < 1.0
    assert counts(emulator) == (1, 1, 1)
    record(
        "retry fidelity",
        f"real-clock deadline overshoot, STS {variant.replace('_', ' ')} (s)",
        round(overshoot, 3),
    )


# --- the resource -----------------------------------------------------------------------------------------


def _new_resource_entries(emulator: Emulator, before: int) -> list[dict[str, Any]]:
    return list(emulator.resource_log[before:])


@pytest.mark.fault_row(48)
@pytest.mark.parametrize("helper", ["create_mtls_client", "resource_client"])
async def test_row48_every_resource_request_carries_the_matching_certificate_and_cnf(
    emulator: Emulator, client_kwargs: dict[str, Any], helper: str
) -> None:
    before = len(emulator.resource_log)
    async with MsiV2Client(**client_kwargs) as client:
        if helper == "create_mtls_client":
            async with create_mtls_client(client, SCOPE) as http:
                responses = [await http.get(emulator.resource_url) for _ in range(20)]
            token = await client.acquire_token(SCOPE)
        else:
            token = await client.acquire_token(SCOPE)
            async with await client.resource_client(token) as http:
                responses = [await http.get(emulator.resource_url) for _ in range(20)]
    assert [response.status_code for response in responses] == [200] * 20
    entries = _new_resource_entries(emulator, before)
    assert len(entries) == 20
    thumbprint = token.binding_certificate.thumbprint_sha256
    matching = sum(
        entry["presented_x5t"] == entry["cnf_x5t"] == thumbprint and entry["scheme"] == "mtls_pop"
        for entry in entries
    )
    assert matching == 20
    assert counts(emulator) == (1, 1, 1)
    record("binding", f"resource requests with presented x5t#S256 = cnf ({helper})", f"{matching}/20 (100 %)")


def _claims_challenge(claims: str) -> Fault:
    encoded = base64.urlsafe_b64encode(claims.encode()).decode().rstrip("=")
    return Fault(
        status=401,
        headers={"WWW-Authenticate": f'mtls_pop error="insufficient_claims", claims="{encoded}"'},
        body='{"error":"insufficient_claims"}',
    )


@pytest.mark.fault_row(49)
@pytest.mark.parametrize("challenges", [1, 2])
async def test_row49_claims_challenge_gets_one_claims_token_and_one_retry_no_loop(
    emulator: Emulator, client_kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch, challenges: int
) -> None:
    claims = '{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}'
    emulator.inject("resource", *[_claims_challenge(claims)] * challenges)
    asked: list[str | None] = []
    before = len(emulator.resource_log)
    async with MsiV2Client(**client_kwargs) as client:
        acquire = client.acquire_token

        async def spy(scope: str = SCOPE, **kwargs: Any) -> MtlsPopToken:
            asked.append(kwargs.get("claims"))
            token: MtlsPopToken = await acquire(scope, **kwargs)
            return token

        monkeypatch.setattr(client, "acquire_token", spy)
        async with create_mtls_client(client, SCOPE) as http:
            response = await http.get(emulator.resource_url)
    assert response.status_code == (200 if challenges == 1 else 401)
    assert asked == [None, claims]  # one token with the claims, and no second round
    assert counts(emulator) == (1, 1, 2)  # the claims token reuses the certificate
    entries = _new_resource_entries(emulator, before)
    assert len(entries) == 2  # exactly one retry
    assert all(entry["presented_x5t"] == entry["cnf_x5t"] for entry in entries)


@pytest.mark.fault_row(50)
@pytest.mark.parametrize("helper", ["create_mtls_client", "resource_client"])
@pytest.mark.parametrize("variant", ["plain_http", "redirect_to_other_host"])
async def test_row50_the_token_never_travels_over_http_or_to_a_redirect_target(
    emulator: Emulator,
    client_kwargs: dict[str, Any],
    seen: list[BaseException],
    decoy: Decoy,
    helper: str,
    variant: str,
) -> None:
    if variant == "redirect_to_other_host":
        emulator.inject("resource", Fault(status=302, headers={"Location": f"{decoy.https_url}/steal"}))
    url = f"{decoy.url}/v1.0/applications" if variant == "plain_http" else emulator.resource_url
    async with MsiV2Client(**client_kwargs) as client:
        token = await client.acquire_token(SCOPE)
        if helper == "create_mtls_client":
            http: httpx.AsyncClient = create_mtls_client(client, SCOPE)
        else:
            http = await client.resource_client(token)
        async with http:
            if variant == "plain_http":
                with pytest.raises(UntrustedEndpointError) as caught:
                    await http.get(url)
                record_error(seen, caught.value)
            else:
                response = await http.get(url)
                assert response.status_code == 302
                assert response.next_request is not None  # httpx saw the redirect and did not follow it
    assert decoy.connections == 0
    assert emulator.stats["resource"] == (0 if variant == "plain_http" else 1)
