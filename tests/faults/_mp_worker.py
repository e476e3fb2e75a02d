"""A worker process of fault row 56: one client with ``cache_dir``, N concurrent ``acquire_token`` calls.

Usage: ``python _mp_worker.py CACHE_DIR IMDS_URL CA_BUNDLE ALLOWED_TOKEN_HOST TASKS LOCK``, LOCK ``1`` to use
the store's cross-process mint lock, ``0`` to replace it by a no-op (to report the no-lock figure).
``$FAULT_TEST_START_AT`` (Unix time) makes the worker wait until then after its imports, so that all
workers call ``acquire_token`` at the same moment.

Prints one JSON line: ``{"mints", "persisted_loaded", "thumbprints", "bound", "tasks", "seconds"}`` and
exits 0, or ``{"error": "<type>: <message>"}`` and exits 1. No token is ever printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator

import anyio

from msiv2_async import FileBindingStore, MsiV2Client, MsiV2Error
from msiv2_async._binding import cnf_thumbprint


@contextlib.asynccontextmanager
async def _no_lock(self: FileBindingStore, slot: str) -> AsyncIterator[None]:
    yield


async def _main(cache_dir: str, imds_url: str, ca_bundle: str, host: str, tasks: int) -> dict[str, object]:
    async with MsiV2Client(
        cache_dir=cache_dir,
        imds_endpoint=imds_url,
        ca_bundle=ca_bundle,
        allowed_token_hosts=[host],
        timeout=60,
    ) as client:
        tokens = []

        async def one() -> None:
            tokens.append(await client.acquire_token("https://vault.azure.net"))

        started = time.monotonic()
        async with anyio.create_task_group() as group:
            for _ in range(tasks):
                group.start_soon(one)
        seconds = time.monotonic() - started
        stats = client.cache_stats
    return {
        "mints": stats["certificate_mints"],
        "persisted_loaded": stats["persisted_certificates_loaded"],
        "thumbprints": sorted({token.binding_certificate.thumbprint_sha256 for token in tokens}),
        "bound": all(
            cnf_thumbprint(t.access_token) == t.binding_certificate.thumbprint_sha256 for t in tokens
        ),
        "tasks": len(tokens),
        "seconds": round(seconds, 3),
    }


def main(argv: list[str]) -> int:
    cache_dir, imds_url, ca_bundle, host, tasks, lock = argv[:6]
    if lock == "0":
        FileBindingStore.mint_lock = _no_lock  # type: ignore[method-assign]
    start_at = float(os.environ.get("FAULT_TEST_START_AT", "0"))
    time.sleep(max(0.0, start_at - time.time()))
    try:
        result = anyio.run(_main, cache_dir, imds_url, ca_bundle, host, int(tasks))
    except MsiV2Error as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
