"""A worker process of the persistent-cache tests: one client, one ``acquire_token``, one JSON line.

Usage: ``python _worker.py CACHE_DIR IMDS_URL CA_BUNDLE ALLOWED_TOKEN_HOST [SCOPE]``.

Prints ``{"thumbprint", "cnf", "mints", "persisted_loaded", "token_sha256"}`` on stdout and exits 0,
or prints ``{"error": "<type>: <message>"}`` and exits 1. The token itself is never printed.

``$CACHE_TEST_START_AT`` (Unix time), when set, makes the worker wait until then after its imports, so
that workers started one after the other call ``acquire_token`` at the same moment.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import anyio

from msiv2_async import MsiV2Client, MsiV2Error
from msiv2_async._binding import cnf_thumbprint


async def _main(
    cache_dir: str, imds_url: str, ca_bundle: str, allowed_host: str, scope: str
) -> dict[str, object]:
    async with MsiV2Client(
        cache_dir=cache_dir,
        imds_endpoint=imds_url,
        ca_bundle=ca_bundle,
        allowed_token_hosts=[allowed_host],
        timeout=60,
    ) as client:
        token = await client.acquire_token(scope)
        stats = client.cache_stats
    return {
        "thumbprint": token.binding_certificate.thumbprint_sha256,
        "cnf": cnf_thumbprint(token.access_token),
        "mints": stats["certificate_mints"],
        "persisted_loaded": stats["persisted_certificates_loaded"],
        "token_sha256": hashlib.sha256(token.access_token.encode()).hexdigest(),
    }


def main(argv: list[str]) -> int:
    cache_dir, imds_url, ca_bundle, allowed_host = argv[:4]
    scope = argv[4] if len(argv) > 4 else "https://vault.azure.net"
    start_at = float(os.environ.get("CACHE_TEST_START_AT", "0"))
    time.sleep(max(0.0, start_at - time.time()))
    try:
        result = anyio.run(_main, cache_dir, imds_url, ca_bundle, allowed_host, scope)
    except MsiV2Error as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
