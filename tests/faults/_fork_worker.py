"""Fault row 63 after ``fork``: a client used in the parent, then by a forked child in a new event loop.

Usage: ``python _fork_worker.py IMDS_URL CA_BUNDLE ALLOWED_TOKEN_HOST MODE``; MODE ``cached`` (the child
asks for the token the parent already holds) or ``refresh`` (``force_refresh=True``: network I/O).

The parent acquires a token on an asyncio loop, forks, and the child runs one ``acquire_token`` on a new
loop under a 5 s deadline and a 20 s alarm. The child prints one JSON line ``{"result": "token" | "typed" |
"untyped", "error": ...}``; the parent prints ``{"child_exit": N}``. A hang shows as a missing line.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import anyio

from msiv2_async import MsiV2Client, MsiV2Error


def main(imds_url: str, ca_bundle: str, host: str, mode: str) -> None:
    client = MsiV2Client(imds_endpoint=imds_url, ca_bundle=ca_bundle, allowed_token_hosts=[host], environ={})

    async def first() -> str:
        return (await client.acquire_token()).access_token

    parent_token = anyio.run(first)
    pid = os.fork()
    if pid == 0:
        signal.alarm(20)
        outcome: dict[str, object] = {}

        async def child() -> None:
            try:
                token = await client.acquire_token(force_refresh=mode == "refresh", timeout=5)
                outcome.update(result="token", same=token.access_token == parent_token)
            except MsiV2Error as exc:
                outcome.update(result="typed", error=type(exc).__name__)
            except Exception as exc:
                outcome.update(result="untyped", error=f"{type(exc).__name__}: {exc}")
            try:
                await client.aclose()
            except Exception as exc:
                outcome.update(close_error=f"{type(exc).__name__}: {exc}")

        try:
            anyio.run(child)
        except Exception as exc:
            outcome.update(result="untyped", error=f"{type(exc).__name__}: {exc}")
        print(json.dumps(outcome), flush=True)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"child_exit": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
