"""2. mTLS handshake latency: our token request on a fresh connection vs a bare ssl handshake + request.

For TLS 1.3 and TLS 1.2 (the client's maximum version capped; RSA-2048 client certificate), against the
emulator STS on loopback. Three contenders, interleaved:

- ``bare``: a blocking socket, ``ssl`` handshake with the very context the library builds, the same
  token request bytes, the whole answer read (the limit);
- ``ours_fresh``: ``acquire_token(force_refresh=True)`` after the client's pooled STS connections were
  closed, so it opens a new connection (handshake + request + validation);
- ``ours_pooled``: the same call on the pooled connection: the STS must see 0 new handshakes.
"""

from __future__ import annotations

import ssl
import time
from typing import Any

from msiv2_async import MsiV2Client, _sts

from . import _raw
from ._setup import PinnedSoftwareBackend, Target, handshake_counter
from ._stats import add_ratios, summary

VERSIONS = (("tls1.3", ssl.TLSVersion.TLSv1_3), ("tls1.2", ssl.TLSVersion.TLSv1_2))


def _pools(client: MsiV2Client) -> list[Any]:
    """The httpcore pools behind the client's STS connections (internals; benchmarks only)."""
    return [http._transport._pool for http in client._runner._sts_clients.values()]


async def drop_sts_connections(client: MsiV2Client) -> None:
    """Close every pooled STS connection so that the next token request opens a new one."""
    for pool in _pools(client):
        for connection in list(pool.connections):
            await connection.aclose()


def pooled_connections(client: MsiV2Client) -> int:
    """How many STS connections the client holds open."""
    return sum(len(pool.connections) for pool in _pools(client))


async def _one_version(
    target: Target, counter: Any, version: ssl.TLSVersion, rounds: int, scope: str
) -> dict[str, Any]:
    backend = PinnedSoftwareBackend(version)
    async with MsiV2Client(**target.client_kwargs, backend=backend) as client:
        await client.acquire_token(scope)
        binding = client._binding
        assert binding is not None
        context = backend.client_ssl_context(binding.certificate.der, target.tls)
        request = _sts.token_request(binding, scope, "00000000-0000-4000-8000-00000000b0b0")
        counter.versions()

        def bare() -> None:
            response, _timing = _raw.exchange(request, context)
            if response.status != 200:
                raise RuntimeError(f"bare token request failed: HTTP {response.status}")

        samples: dict[str, list[float]] = {"bare": [], "ours_fresh": [], "ours_pooled": []}
        handshakes = {"bare": 0, "ours_fresh": 0, "ours_pooled": 0}
        names = list(samples)
        bare()
        for index in range(rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                if name == "ours_fresh":
                    await drop_sts_connections(client)
                elif name == "ours_pooled" and pooled_connections(client) == 0:
                    await client.acquire_token(scope, force_refresh=True)
                before = counter.count
                started = time.perf_counter()
                if name == "bare":
                    bare()
                else:
                    await client.acquire_token(scope, force_refresh=True)
                samples[name].append((time.perf_counter() - started) * 1000)
                handshakes[name] += counter.count - before
        negotiated = counter.versions()
    results = {name: summary(values, "ms") for name, values in samples.items()}
    add_ratios(results, "bare")
    for name, stats in results.items():
        stats["server_handshakes"] = handshakes[name]
        stats["server_handshakes_per_request"] = round(handshakes[name] / max(1, stats["n"]), 3)
    return {"baseline": "bare", "negotiated": negotiated, "contenders": results}


async def run(target: Target, rounds: int, scope: str) -> dict[str, Any]:
    """Section 2 (emulator only: the real STS cannot count handshakes)."""
    counter = handshake_counter(target)
    try:
        out: dict[str, Any] = {"rounds": rounds, "handshakes_counted": "server side (STS listener)"}
        for label, version in VERSIONS:
            out[label] = await _one_version(target, counter, version, rounds, scope)
        return out
    finally:
        counter.close()
