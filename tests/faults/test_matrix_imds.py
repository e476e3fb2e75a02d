"""RELIABILITY.md §7 rows 1-32: IMDS faults, untrusted IMDS answers, token-endpoint rules.

Retry timing runs on a fake clock (no real waiting); the black-hole and slowloris rows run on the real
clock and measure the deadline overshoot.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import anyio
import pytest

from msiv2_async import (
    CertificateIssuanceError,
    FakeClock,
    ImdsError,
    ImdsThrottledError,
    ImdsUnreachableError,
    ImdsV2NotSupportedError,
    MalformedResponseError,
    MsiV2Client,
    MsiV2Error,
    MsiV2TimeoutError,
    UntrustedEndpointError,
)
from msiv2_async.emulator import Emulator, Fault

from .conftest import Decoy, record_error

pytestmark = pytest.mark.anyio
SENTINEL_BODY = '{"error":"x","access_token":"eyJhbGciOiJSUzI1NiJ9.eyJTRU5USU5FTCI6MX0.U0VOVElORUwtSU1EUw"}'
REMOVE = Fault.DELETE


async def failure(
    client_kwargs: dict[str, Any], seen: list[BaseException], **overrides: Any
) -> BaseException:
    """Run one acquisition that must fail; return (and record) its exception."""
    async with MsiV2Client(**{**client_kwargs, **overrides}) as client:
        try:
            await client.acquire_token()
        except BaseException as exc:
            return record_error(seen, exc)
    raise AssertionError("the acquisition succeeded although the fault should have made it fail")


def counts(emulator: Emulator) -> tuple[int, int, int]:
    stats = emulator.stats
    return stats["getplatformmetadata"], stats["issuecredential"], stats["token"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- transport faults -------------------------------------------------------------------------------------


@pytest.mark.fault_row(1)
async def test_row01_closed_port_is_retried_1_2_4_then_unreachable_and_not_cached(
    client_kwargs: dict[str, Any], clock: FakeClock, seen: list[BaseException]
) -> None:
    client_kwargs["imds_endpoint"] = f"http://127.0.0.1:{closed_port()}"
    async with MsiV2Client(**client_kwargs, failure_cache_seconds=0) as client:
        for _ in range(2):
            with pytest.raises(ImdsUnreachableError) as caught:
                await client.acquire_token()
            record_error(seen, caught.value)
    assert clock.sleeps == [1.0, 2.0, 4.0] * 2


@pytest.mark.fault_row(2)
async def test_row02_black_hole_ends_by_the_deadline(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException]
) -> None:
    emulator.inject("getplatformmetadata", Fault(action="hang"))
    started = time.monotonic()
    error = await failure(client_kwargs, seen, timeout=1.0)
    overshoot = time.monotonic() - started - 1.0
    assert isinstance(error, MsiV2TimeoutError)
    assert overshoot < 1.0


@pytest.mark.fault_row(3)
async def test_row03_slowloris_is_stopped_by_the_outer_deadline(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException]
) -> None:
    emulator.inject(
        "getplatformmetadata", Fault(action="slowloris", status=200, body=b" " * 64, interval=0.3)
    )
    started = time.monotonic()
    error = await failure(client_kwargs, seen, timeout=1.5)
    overshoot = time.monotonic() - started - 1.5
    assert isinstance(error, MsiV2TimeoutError)
    assert overshoot < 1.0


@pytest.mark.fault_row(4)
async def test_row04_reset_mid_body_is_a_transport_error_and_retried(
    emulator: Emulator, client_kwargs: dict[str, Any], clock: FakeClock
) -> None:
    emulator.inject("getplatformmetadata", Fault(action="reset"))
    async with MsiV2Client(**client_kwargs) as client:
        token = await client.acquire_token()
    assert token.token_type == "mtls_pop"
    assert emulator.stats["getplatformmetadata"] == 2
    assert clock.sleeps == [1.0]


# --- status handling --------------------------------------------------------------------------------------


@pytest.mark.fault_row(5)
async def test_row05_metadata_404_four_times_is_imds_v2_not_supported(
    emulator: Emulator, client_kwargs: dict[str, Any], clock: FakeClock, seen: list[BaseException]
) -> None:
    emulator.inject("getplatformmetadata", *[Fault(status=404)] * 4)
    error = await failure(client_kwargs, seen)
    assert isinstance(error, ImdsV2NotSupportedError)
    assert emulator.stats["getplatformmetadata"] == 4
    assert clock.sleeps == [1.0, 2.0, 4.0]


@pytest.mark.fault_row(6)
async def test_row06_404_404_200_succeeds_after_exactly_three_requests(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    emulator.inject("getplatformmetadata", Fault(status=404), Fault(status=404))
    async with MsiV2Client(**client_kwargs) as client:
        await client.acquire_token()
    assert emulator.stats["getplatformmetadata"] == 3


@pytest.mark.fault_row(7)
async def test_row07_410_eight_times_makes_eight_requests_ten_seconds_apart(
    emulator: Emulator, client_kwargs: dict[str, Any], clock: FakeClock, seen: list[BaseException]
) -> None:
    emulator.inject("getplatformmetadata", *[Fault(status=410)] * 8)
    error = await failure(client_kwargs, seen)
    assert isinstance(error, ImdsError)
    assert error.status == 410
    assert emulator.stats["getplatformmetadata"] == 8
    assert clock.sleeps == [10.0] * 7


@pytest.mark.fault_row(8)
async def test_row08_429_with_retry_after_2_waits_2_seconds_then_retries(
    emulator: Emulator, client_kwargs: dict[str, Any], clock: FakeClock
) -> None:
    emulator.inject("getplatformmetadata", Fault(status=429, headers={"Retry-After": "2"}))
    async with MsiV2Client(**client_kwargs) as client:
        await client.acquire_token()
    assert clock.sleeps == [2.0]
    assert emulator.stats["getplatformmetadata"] == 2


@pytest.mark.fault_row(9)
@pytest.mark.parametrize("retry_after", ["999999", "Fri, 01 Jan 2100 00:00:00 GMT"])
async def test_row09_huge_retry_after_is_a_throttle_error_and_later_calls_fail_fast(
    emulator: Emulator,
    client_kwargs: dict[str, Any],
    clock: FakeClock,
    seen: list[BaseException],
    retry_after: str,
) -> None:
    emulator.inject("getplatformmetadata", Fault(status=429, headers={"Retry-After": retry_after}))
    async with MsiV2Client(**client_kwargs) as client:
        with pytest.raises(ImdsThrottledError) as caught:
            await client.acquire_token()
        record_error(seen, caught.value)
        for _ in range(5):
            with pytest.raises(ImdsThrottledError):
                await client.acquire_token()
    assert caught.value.retry_after == 3600.0
    assert clock.sleeps == []
    assert emulator.stats["getplatformmetadata"] == 1


@pytest.mark.fault_row(10)
@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_row10_server_errors_make_four_requests_then_a_typed_error(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], status: int
) -> None:
    emulator.inject("getplatformmetadata", *[Fault(status=status)] * 4)
    error = await failure(client_kwargs, seen)
    assert isinstance(error, ImdsError)
    assert error.status == status
    assert emulator.stats["getplatformmetadata"] == 4


@pytest.mark.fault_row(11)
@pytest.mark.parametrize("status", [400, 401, 403])
async def test_row11_client_errors_make_one_request_with_a_sanitized_excerpt(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], status: int
) -> None:
    emulator.inject("issuecredential", Fault(status=status, body=SENTINEL_BODY))
    error = await failure(client_kwargs, seen)
    assert isinstance(error, ImdsError)
    assert error.status == status
    assert emulator.stats["issuecredential"] == 1
    assert "U0VOVElORUwtSU1EUw" not in str(error)
    assert "eyJTRU5USU5FTCI6MX0" not in str(error)


@pytest.mark.fault_row(12)
async def test_row12_redirect_of_issuecredential_is_not_followed(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], decoy: Decoy
) -> None:
    emulator.inject("issuecredential", Fault(status=307, headers={"Location": f"{decoy.url}/steal"}))
    error = await failure(client_kwargs, seen)
    assert isinstance(error, ImdsError)
    assert decoy.connections == 0
    assert emulator.stats["issuecredential"] == 1


@pytest.mark.fault_row(13)
@pytest.mark.parametrize("server", [None, "nginx/1.25", "I_MDS/1.0"])
async def test_row13_answers_without_imds_server_header_are_refused_without_retry(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], server: str | None
) -> None:
    emulator.inject("getplatformmetadata", Fault(status=503, server_header=server))
    error = await failure(client_kwargs, seen)
    assert isinstance(error, ImdsError)
    assert "did not come from IMDS" in str(error)
    assert emulator.stats["getplatformmetadata"] == 1


@pytest.mark.fault_row(14)
async def test_row14_every_imds_request_carries_metadata_and_no_forwarded_for(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    async with MsiV2Client(**client_kwargs) as client:
        await client.acquire_token()
        await client.acquire_token(token_type="bearer")
    assert emulator.stats["rejected_requests"] == 0
    assert emulator.stats["metadata_header_missing"] == 0
    assert emulator.stats["forwarded_for"] == 0


@pytest.mark.fault_row(15)
async def test_row15_proxy_variables_never_carry_imds_traffic(
    emulator: Emulator, client_kwargs: dict[str, Any], decoy: Decoy, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, decoy.url)
        monkeypatch.setenv(name.lower(), decoy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with MsiV2Client(**client_kwargs) as client:
        token = await client.acquire_token()
        async with await client.resource_client(token) as http:
            assert (await http.get(emulator.resource_url)).status_code == 200
    assert decoy.connections == 0


# --- untrusted IMDS answers -------------------------------------------------------------------------------


@pytest.mark.fault_row(16)
@pytest.mark.parametrize("body", [b"<html><body>SENTINEL-HTML gateway</body></html>", b""])
async def test_row16_html_or_empty_200_is_malformed_and_not_echoed(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], body: bytes
) -> None:
    emulator.inject(
        "getplatformmetadata", Fault(status=200, body=body, headers={"Content-Type": "text/html"})
    )
    error = await failure(client_kwargs, seen)
    assert isinstance(error, MalformedResponseError)
    assert "SENTINEL-HTML" not in str(error)


@pytest.mark.fault_row(17)
@pytest.mark.parametrize("field", ["clientId", "tenantId", "cuId"])
async def test_row17_metadata_missing_a_field_names_the_field(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], field: str
) -> None:
    emulator.inject("getplatformmetadata", Fault(response_fields={field: REMOVE}))
    error = await failure(client_kwargs, seen)
    assert isinstance(error, MalformedResponseError)
    assert field in str(error)
    assert emulator.stats["issuecredential"] == 0


@pytest.mark.fault_row(18)
@pytest.mark.parametrize(
    ("endpoint", "fields"),
    [
        ("getplatformmetadata", {"clientId": 123}),
        ("getplatformmetadata", {"cuId": "x"}),
        ("getplatformmetadata", {"tenantId": None}),
        ("token", {"expires_in": True}),
    ],
)
async def test_row18_wrong_types_are_not_coerced(
    emulator: Emulator,
    client_kwargs: dict[str, Any],
    seen: list[BaseException],
    endpoint: str,
    fields: dict[str, Any],
) -> None:
    emulator.inject(endpoint, Fault(response_fields=fields))
    error = await failure(client_kwargs, seen)
    assert isinstance(error, MalformedResponseError)


@pytest.mark.fault_row(19)
@pytest.mark.parametrize("body", [b"[1,2]", b'"text"', b"null", b"42"])
async def test_row19_top_level_non_objects_are_typed_errors(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], body: bytes
) -> None:
    emulator.inject("getplatformmetadata", Fault(status=200, body=body))
    assert isinstance(await failure(client_kwargs, seen), MalformedResponseError)


@pytest.mark.fault_row(20)
async def test_row20_deep_nesting_is_a_typed_error_not_a_recursion_error(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException]
) -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    emulator.inject(
        "getplatformmetadata", Fault(status=200, body=deep, headers={"Content-Type": "application/json"})
    )
    assert isinstance(await failure(client_kwargs, seen), MalformedResponseError)


@pytest.mark.fault_row(21)
@pytest.mark.parametrize(
    "body",
    [
        b'{"clientId": NaN}',
        b'{"clientId": Infinity}',
        b'{"clientId": 1e400}',
        b'{"clientId": "a", "clientId": "b"}',
    ],
)
async def test_row21_non_standard_json_is_rejected(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], body: bytes
) -> None:
    emulator.inject("getplatformmetadata", Fault(status=200, body=body))
    assert isinstance(await failure(client_kwargs, seen), MalformedResponseError)


@pytest.mark.fault_row(22)
@pytest.mark.parametrize("fault", [Fault(status=200, body_size=8 * 1024 * 1024), Fault(action="endless")])
async def test_row22_huge_or_endless_bodies_stop_at_one_mebibyte(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], fault: Fault
) -> None:
    emulator.inject("getplatformmetadata", fault)
    error = await failure(client_kwargs, seen, timeout=30)
    assert isinstance(error, MalformedResponseError)
    assert "exceeds 1048576 bytes" in str(error)


@pytest.mark.fault_row(23)
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("clientId", "0f1e2d3c-4b5a-4697-8877-665544332211, O=evil"),
        ("clientId", "0f1e2d3c-4b5a-4697-8877-665544332211\n"),
        ("tenantId", "5c4b6f1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b\x00"),
        ("tenantId", "not-a-guid"),
    ],
)
async def test_row23_hostile_ids_are_rejected_before_any_csr(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], field: str, value: str
) -> None:
    emulator.inject("getplatformmetadata", Fault(response_fields={field: value}))
    error = await failure(client_kwargs, seen)
    assert isinstance(error, MalformedResponseError)
    assert emulator.stats["issuecredential"] == 0


@pytest.mark.fault_row(24, 25)
@pytest.mark.parametrize("variant", ["garbage", "empty", "null", "pem", "two_certs", "ec_key"])
async def test_row24_25_unusable_certificates_are_typed_errors_and_reach_no_sts(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], variant: str
) -> None:
    emulator.inject("issuecredential", Fault(certificate=variant))
    error = await failure(client_kwargs, seen)
    assert isinstance(error, MalformedResponseError | CertificateIssuanceError)
    assert emulator.stats["token"] == 0


@pytest.mark.fault_row(26)
async def test_row26_certificate_for_another_key_is_refused_and_not_cached(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException]
) -> None:
    emulator.inject("issuecredential", Fault(certificate="foreign_key"))
    async with MsiV2Client(**client_kwargs, failure_cache_seconds=0) as client:
        with pytest.raises(CertificateIssuanceError, match="different public key") as caught:
            await client.acquire_token()
        record_error(seen, caught.value)
        assert emulator.stats["token"] == 0
        await client.acquire_token()
    assert emulator.stats["issuecredential"] == 2


@pytest.mark.fault_row(27)
@pytest.mark.parametrize("variant", ["expired", "not_yet_valid"])
async def test_row27_expired_or_future_certificates_are_refused_before_the_sts(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], variant: str
) -> None:
    emulator.inject("issuecredential", Fault(certificate=variant))
    error = await failure(client_kwargs, seen)
    assert isinstance(error, CertificateIssuanceError)
    assert emulator.stats["token"] == 0


@pytest.mark.fault_row(28)
async def test_row28_short_lived_certificate_caps_the_token_and_mints_per_lifetime(
    emulator: Emulator, client_kwargs: dict[str, Any], clock: FakeClock
) -> None:
    emulator.inject("issuecredential", Fault(certificate="short_lived", certificate_seconds=600))
    async with MsiV2Client(**client_kwargs) as client:
        token = await client.acquire_token()
        not_after = token.binding_certificate.not_after.timestamp()
        for _ in range(100):
            await client.acquire_token()
        assert emulator.stats["issuecredential"] == 1
        clock.advance(not_after - 300 - clock.time())
        emulator.inject("issuecredential", Fault(certificate="short_lived", certificate_seconds=600))
        renewed = await client.acquire_token()
        await anyio.sleep(0.05)
    assert renewed.binding_certificate != token.binding_certificate
    assert emulator.stats["issuecredential"] == 2


# --- token endpoint rules ---------------------------------------------------------------------------------


@pytest.mark.fault_row(29, 30)
@pytest.mark.parametrize(
    "endpoint",
    [
        "http://{host}",
        "https://evil.example.com",
        "https://user:pw@{host}",
        "https://{host}?x=1",
        "https://{host}#frag",
        "https://{decoy}",
    ],
)
async def test_row29_30_untrusted_token_endpoints_receive_nothing(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], decoy: Decoy, endpoint: str
) -> None:
    url = endpoint.format(host=emulator.allowed_token_host, decoy=decoy.https_url.removeprefix("https://"))
    emulator.inject("issuecredential", Fault(response_fields={"mtls_authentication_endpoint": url}))
    error = await failure(client_kwargs, seen)
    assert isinstance(error, UntrustedEndpointError)
    assert emulator.stats["token"] == 0
    assert decoy.connections == 0


@pytest.mark.fault_row(31)
@pytest.mark.parametrize(("field", "value"), [("tenant_id", "../x?y"), ("client_id", "not-a-guid")])
async def test_row31_bad_canonical_ids_are_typed_errors(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], field: str, value: str
) -> None:
    emulator.inject("issuecredential", Fault(response_fields={field: value}))
    error = await failure(client_kwargs, seen)
    assert isinstance(error, MsiV2Error)
    assert emulator.stats["token"] == 0


@pytest.mark.fault_row(32)
async def test_row32_a_token_endpoint_field_from_imds_is_ignored(
    emulator: Emulator, client_kwargs: dict[str, Any], decoy: Decoy
) -> None:
    emulator.inject("issuecredential", Fault(response_fields={"token_endpoint": f"{decoy.https_url}/token"}))
    async with MsiV2Client(**client_kwargs) as client:
        await client.acquire_token()
    assert decoy.connections == 0
    assert emulator.stats["token"] == 1


def test_row_bodies_are_valid_json_where_they_claim_to_be() -> None:
    assert json.loads(SENTINEL_BODY)["error"] == "x"
