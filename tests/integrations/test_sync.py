"""The blocking facade: one async client on a private thread, shared by many threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import pytest
from integration_kit import ResourceLog, assert_all_bound, claims_challenge_fault

import msiv2_async
from msiv2_async import FakeClock, MsiV2Error, MsiV2SyncClient, MtlsPopToken
from msiv2_async.emulator import Emulator
from msiv2_async.sync import acquire_token_sync, close_default_sync_clients

SCOPE = "https://graph.microsoft.com/.default"


@pytest.fixture
def sync_client(client_kwargs: dict[str, Any]) -> Iterator[MsiV2SyncClient]:
    with MsiV2SyncClient(**client_kwargs) as client:
        yield client


def test_32_threads_asking_at_once_cause_one_flight(emulator: Emulator, sync_client: MsiV2SyncClient) -> None:
    barrier = threading.Barrier(32)

    def ask(_: int) -> MtlsPopToken:
        barrier.wait()
        return sync_client.acquire_token(SCOPE)

    with ThreadPoolExecutor(32) as pool:
        tokens = list(pool.map(ask, range(32)))
    assert len({token.access_token for token in tokens}) == 1
    assert emulator.stats["token"] == 1
    assert emulator.stats["issuecredential"] == 1
    assert emulator.stats["getplatformmetadata"] == 1


def test_the_http_client_calls_the_resource_over_mtls(
    emulator: Emulator, sync_client: MsiV2SyncClient, resource_log: ResourceLog
) -> None:
    with sync_client.http_client(SCOPE) as http:
        response = http.get(emulator.resource_url)
    assert response.status_code == 200
    assert response.json()["x5t#S256"] == sync_client.get_binding_certificate().thumbprint_sha256
    assert_all_bound(resource_log.entries())


def test_the_http_client_answers_one_claims_challenge(
    emulator: Emulator, sync_client: MsiV2SyncClient
) -> None:
    with sync_client.http_client(SCOPE) as http:
        emulator.inject("resource", *[claims_challenge_fault()] * 3)
        first = http.get(emulator.resource_url)
        second = http.get(emulator.resource_url)
    assert first.status_code == 401  # challenged twice: one retry only
    assert second.status_code == 200  # third fault, then a retry with claims
    assert emulator.stats["resource"] == 4
    assert emulator.stats["token"] == 3


def test_threads_keep_calling_the_resource_across_a_certificate_rotation(
    emulator: Emulator,
    client_kwargs: dict[str, Any],
    clock: FakeClock,
    rotate: Callable[[], None],
    resource_log: ResourceLog,
) -> None:
    statuses: list[int] = []
    halfway = threading.Barrier(5)  # four workers and this thread
    with MsiV2SyncClient(**client_kwargs, clock=clock) as client, client.http_client(SCOPE) as http:

        def worker(_: int) -> None:
            for request in range(10):
                if request == 3:
                    halfway.wait(timeout=30)  # hold until the rotation below has completed
                statuses.append(http.get(emulator.resource_url).status_code)

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(worker, i) for i in range(4)]
            old = client.acquire_token(SCOPE).binding_certificate
            rotate()
            deadline = time.monotonic() + 20
            while client.acquire_token(SCOPE).binding_certificate == old and time.monotonic() < deadline:
                threading.Event().wait(0.01)  # the first call after rotate() starts the background renewal
            halfway.wait(timeout=30)
            for future in futures:
                future.result()
    entries = resource_log.entries()
    assert statuses == [200] * 40
    assert_all_bound(entries)
    assert len({e["presented_x5t"] for e in entries}) == 2
    assert emulator.stats["issuecredential"] == 2


def test_close_is_idempotent_and_later_calls_fail_clearly(client_kwargs: dict[str, Any]) -> None:
    client = MsiV2SyncClient(**client_kwargs)
    client.acquire_token(SCOPE)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: client.close(), range(4)))
    client.close()
    assert client.closed
    with pytest.raises(MsiV2Error, match="closed"):
        client.acquire_token(SCOPE)


@pytest.mark.anyio
async def test_calls_from_an_event_loop_thread_are_refused(sync_client: MsiV2SyncClient) -> None:
    with pytest.raises(MsiV2Error, match="async API"):
        sync_client.acquire_token(SCOPE)
    with pytest.raises(MsiV2Error, match="async API"):
        MsiV2SyncClient()
    await anyio.sleep(0)


def test_acquire_token_sync_shares_one_default_client_per_arguments(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    close_default_sync_clients()
    try:
        barrier = threading.Barrier(8)

        def ask(_: int) -> MtlsPopToken:
            barrier.wait()
            return acquire_token_sync(SCOPE, **client_kwargs)

        with ThreadPoolExecutor(8) as pool:
            tokens = list(pool.map(ask, range(8)))
        again = msiv2_async.acquire_token_sync(SCOPE, **client_kwargs)
        assert {token.access_token for token in tokens} == {again.access_token}
        assert again.source == "cache"
        assert emulator.stats["issuecredential"] == 1
    finally:
        close_default_sync_clients()
    fresh = acquire_token_sync(SCOPE, **client_kwargs)
    close_default_sync_clients()
    assert fresh.access_token != again.access_token
    assert emulator.stats["issuecredential"] == 2
