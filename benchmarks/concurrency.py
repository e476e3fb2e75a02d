"""5. Concurrency: C concurrent cold callers on one new client (fresh key), C = 1, 100, 1,000, 10,000.

Callers start in waves of ``wave`` per event-loop iteration (as requests arriving on a busy server
would), and the client's IMDS transport (passed through the public ``imds_transport=`` argument) holds
the first IMDS request until the last caller has started, so that every caller is cold: it finds no
token and joins the one flight. Reported: the network calls the emulator counted, the callers'
latency from that release to their return (p50/p99), the time the arrival took, and the longest
event-loop stall seen by a heartbeat task that sleeps 1 ms in a loop (lateness beyond its 1 ms), split
into the garbage collector's pauses, the CPU time the loop thread itself used, and the rest (the thread
waiting for a CPU on a busy machine).
"""

from __future__ import annotations

import asyncio
import gc
import ssl
import time
from typing import Any

import httpx

from msiv2_async import MsiV2Client
from msiv2_async.backends.software import SoftwareBackend

from ._setup import Target
from ._stats import percentile

HEARTBEAT_SECONDS = 0.001
NETWORK = ("getplatformmetadata", "issuecredential", "token")


class GatedTransport(httpx.AsyncBaseTransport):
    """The library's default IMDS transport, holding requests until ``gate`` is set."""

    def __init__(self, gate: asyncio.Event) -> None:
        self._gate = gate
        self._inner = httpx.AsyncHTTPTransport(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), retries=0)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Wait for the gate, then send."""
        await self._gate.wait()
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()


class Heartbeat:
    """A task that sleeps 1 ms in a loop and records how late it wakes (the loop's stalls).

    Garbage-collector pauses are timed too (``gc.callbacks``), so that each stall can be split into the
    part CPython's cyclic garbage collector took and the rest.
    """

    def __init__(self) -> None:
        # (seconds since start, late ms, GC ms, CPU ms the loop thread itself used in that gap)
        self.beats: list[tuple[float, float, float, float]] = []
        self.gc_pauses: list[float] = []
        self._gc_total = 0.0
        self._gc_started = 0.0
        self.origin = time.perf_counter()
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            pause = (time.perf_counter() - self._gc_started) * 1000
            self._gc_total += pause
            self.gc_pauses.append(pause)

    async def _beat(self) -> None:
        last, cpu_last = time.perf_counter(), time.thread_time()
        gc_last = self._gc_total
        while not self._stop:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            now, cpu = time.perf_counter(), time.thread_time()
            late = (now - last - HEARTBEAT_SECONDS) * 1000
            self.beats.append((last - self.origin, late, self._gc_total - gc_last, (cpu - cpu_last) * 1000))
            last, cpu_last, gc_last = now, cpu, self._gc_total

    def start(self) -> None:
        """Start beating."""
        self.origin = time.perf_counter()
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.ensure_future(self._beat())

    async def stop(self) -> None:
        """Stop and wait for the task."""
        self._stop = True
        if self._task is not None:
            await self._task
        gc.callbacks.remove(self._on_gc)

    def longest(self, since: float = -1.0, until: float = float("inf")) -> dict[str, float]:
        """The longest stall between two moments (seconds since start), with its GC share."""
        beats = [beat for beat in self.beats if since <= beat[0] < until] or [(0.0, 0.0, 0.0, 0.0)]
        at, late, in_gc, cpu = max(beats, key=lambda beat: beat[1])
        return {
            "ms": round(max(late, 0.0), 2),
            "at_ms": round(at * 1000, 1),
            "gc_share_ms": round(in_gc, 2),
            "cpu_ms": round(cpu, 2),
            "without_gc_ms": round(max(max(b[1] - b[2] for b in beats), 0.0), 2),
            "cpu_without_gc_ms": round(max(max(min(b[3], b[1]) - b[2] for b in beats), 0.0), 2),
        }


async def one_size(target: Target, callers: int, wave: int, scope: str) -> dict[str, Any]:
    """C cold callers on one client; numbers for one row of the table."""
    gate = asyncio.Event()
    before = target.stats()
    heartbeat = Heartbeat()
    returned: list[float] = []
    errors: list[str] = []
    async with MsiV2Client(
        **target.client_kwargs, backend=SoftwareBackend(), imds_transport=GatedTransport(gate)
    ) as client:

        async def caller() -> None:
            try:
                await client.acquire_token(scope)
            except Exception as exc:  # counted, not raised: one failure must not hide the others' numbers
                errors.append(type(exc).__name__)
            returned.append(time.perf_counter())

        heartbeat.start()
        await asyncio.sleep(0.02)  # let the heartbeat settle
        started = time.perf_counter()
        tasks: list[asyncio.Task[None]] = []
        for first in range(0, callers, wave):
            tasks += [asyncio.ensure_future(caller()) for _ in range(min(wave, callers - first))]
            await asyncio.sleep(0)
        await asyncio.sleep(0)  # the last wave reaches the flight
        released = time.perf_counter()
        gate.set()
        await asyncio.gather(*tasks)
        finished = time.perf_counter()
        await asyncio.sleep(0.01)
        await heartbeat.stop()
        cache = client.cache_stats
    after = target.stats()
    release = released - heartbeat.origin
    overall, arrival, flight = (
        heartbeat.longest(),
        heartbeat.longest(until=release),
        heartbeat.longest(release),
    )
    latencies = sorted((moment - released) * 1000 for moment in returned)
    return {
        "callers": callers,
        "cold_callers": cache["misses"],
        "errors": len(errors),
        "network_calls": {name: after.get(name, 0) - before.get(name, 0) for name in NETWORK},
        "token_flights": cache["token_flights"],
        "certificate_mints": cache["certificate_mints"],
        "arrival_ms": round((released - started) * 1000, 2),
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "all_done_ms": round((finished - released) * 1000, 2),
        "longest_stall_ms": overall["ms"],
        "longest_stall_at_ms": overall["at_ms"],
        "longest_stall_gc_share_ms": overall["gc_share_ms"],
        "longest_stall_loop_cpu_ms": overall["cpu_ms"],
        "longest_stall_without_gc_ms": overall["without_gc_ms"],
        "longest_loop_busy_without_gc_ms": overall["cpu_without_gc_ms"],
        "longest_stall_during_arrival_ms": arrival["ms"],
        "longest_stall_after_release_ms": flight["ms"],
        "longest_stall_after_release_without_gc_ms": flight["without_gc_ms"],
        "gc_pauses": len(heartbeat.gc_pauses),
        "longest_gc_pause_ms": round(max(heartbeat.gc_pauses, default=0.0), 2),
    }


async def run(target: Target, sizes: list[int], wave: int, repeats: int, scope: str) -> dict[str, Any]:
    """Section 5: one row per size (the repeat with the median stall when ``repeats`` > 1)."""
    rows = []
    for size in sizes:
        runs = [await one_size(target, size, wave, scope) for _ in range(repeats)]
        runs.sort(key=lambda row: row["longest_stall_ms"])
        row = runs[len(runs) // 2]
        row["repeats"] = repeats
        row["longest_stall_ms_all_repeats"] = [r["longest_stall_ms"] for r in runs]
        rows.append(row)
    return {
        "wave": wave,
        "heartbeat_ms": HEARTBEAT_SECONDS * 1000,
        "latency_from": "the release of the held IMDS request, once every caller has started",
        "rows": rows,
    }
