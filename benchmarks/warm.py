"""3. Warm acquire_token (cache hit) vs azure-identity's and MSAL Python's cached managed-identity tokens.

azure-identity's async ``ManagedIdentityCredential.get_token`` is the baseline; MSAL Python's
``ManagedIdentityClient.acquire_token_for_client`` is reported too. Both get their one real token from the
MSI v1 endpoint (the emulator's, through ``AZURE_POD_IDENTITY_AUTHORITY_HOST``, or the VM's IMDS) and are
then served from their caches. Each round times a batch of calls per contender; rounds interleave.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

from msiv2_async import MsiV2Client

from ._setup import Target
from ._stats import summary


def _resource(scope: str) -> str:
    return scope.removesuffix("/.default")


Batch = Callable[[int], Awaitable[None]]


async def _peers(target: Target, scope: str) -> tuple[dict[str, Batch], dict[str, str], list[Any]]:
    """azure-identity and MSAL contenders (each primed with one real token), or why they are missing."""
    contenders: dict[str, Batch] = {}
    missing: dict[str, str] = {}
    closers: list[Any] = []
    try:
        from azure.identity.aio import ManagedIdentityCredential

        credential = ManagedIdentityCredential()
        closers.append(credential)
        await credential.get_token(scope)

        async def azure_identity(calls: int) -> None:
            get_token = credential.get_token
            for _ in range(calls):
                await get_token(scope)

        contenders["azure_identity"] = azure_identity
    except Exception as exc:  # a missing package or no MSI v1 endpoint: report, do not fail the run
        missing["azure_identity"] = f"{type(exc).__name__}: {exc}"
    try:
        import msal
        import requests

        client = msal.ManagedIdentityClient(
            msal.SystemAssignedManagedIdentity(), http_client=requests.Session()
        )
        resource = _resource(scope)
        result = await asyncio.to_thread(client.acquire_token_for_client, resource=resource)
        if "access_token" not in result:
            raise RuntimeError(str(result.get("error_description") or result)[:200])

        async def msal_python(calls: int) -> None:
            acquire = client.acquire_token_for_client  # synchronous; a cache hit does no I/O
            for _ in range(calls):
                acquire(resource=resource)

        contenders["msal"] = msal_python
    except Exception as exc:
        missing["msal"] = f"{type(exc).__name__}: {exc}"
    return contenders, missing, closers


def _ours(client: MsiV2Client, scope: str, token_type: str) -> Batch:
    async def batch(calls: int) -> None:
        acquire = client.acquire_token
        if token_type == "bearer":
            for _ in range(calls):
                await acquire(scope, token_type="bearer")
        else:
            for _ in range(calls):
                await acquire(scope)

    return batch


async def _time_batch(batch: Batch, calls: int) -> float:
    """Nanoseconds per call over ``calls`` calls (every contender's loop has the same shape)."""
    started = time.perf_counter_ns()
    await batch(calls)
    return (time.perf_counter_ns() - started) / calls


async def run(target: Target, rounds: int, batch: int, scope: str) -> dict[str, Any]:
    """Section 3: ns per cached call and calls per second; ratio and speed-up vs azure-identity."""
    async with MsiV2Client(**target.client_kwargs) as client:
        with target.peer_environment():
            peers, missing, closers = await _peers(target, scope)
        try:
            await client.acquire_token(scope)
            await client.acquire_token(scope, token_type="bearer")
            before = target.stats()
            contenders: dict[str, Batch] = {
                "ours_mtls_pop": _ours(client, scope, "mtls_pop"),
                "ours_bearer": _ours(client, scope, "bearer"),
                **peers,
            }
            names = list(contenders)
            for name in names:  # warm-up
                await _time_batch(contenders[name], max(1, batch // 10))
            samples: dict[str, list[float]] = {name: [] for name in names}
            gc.collect()
            gc.disable()
            try:
                for index in range(rounds):
                    shift = index % len(names)
                    for name in names[shift:] + names[:shift]:
                        samples[name].append(await _time_batch(contenders[name], batch))
            finally:
                gc.enable()
            after = target.stats()
            cache = client.cache_stats
        finally:
            for closer in closers:
                await closer.close()
    baseline = "azure_identity" if "azure_identity" in samples else "ours_mtls_pop"
    results: dict[str, dict[str, Any]] = {}
    base = summary(samples[baseline], "ns")["median"]
    for name, values in samples.items():
        stats = summary(values, "ns")
        stats["calls_per_second"] = round(1e9 / stats["median"]) if stats["median"] else None
        stats["ratio"] = round(stats["median"] / base, 4) if base else None
        stats["speedup_vs_baseline"] = round(base / stats["median"], 2) if stats["median"] else None
        results[name] = stats
    network = {k: after.get(k, 0) - before.get(k, 0) for k in after if isinstance(after.get(k), int)}
    return {
        "rounds": rounds,
        "batch": batch,
        "calls_per_contender": rounds * batch,
        "baseline": baseline,
        "contenders": results,
        "missing": missing,
        "network_calls_during_timing": {k: v for k, v in network.items() if v} if after else None,
        "our_cache_stats": cache,
    }
