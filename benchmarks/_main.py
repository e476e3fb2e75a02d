"""``python -m benchmarks``: run the sections, write JSON + Markdown under ``benchmarks/results/``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from msiv2_async.backends import KeyBackend, available_backends, get_backend

from . import _report, _setup, cold, concurrency, csr, handshake, warm
from ._env import environment

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("csr", "handshake", "warm", "cold", "concurrency")
TARGET_SECTIONS = ("csr", "warm", "cold")
DEFAULT_SCOPE = "https://graph.microsoft.com/.default"

# rounds (or batch sizes) per section: (full, quick)
SIZES = {
    "csr_rounds": (300, 60),
    "handshake_rounds": (60, 12),
    "warm_rounds": (21, 7),
    "warm_batch": (2000, 500),
    "cold_rounds": (15, 3),
    "cold_rounds_imds": (10, 3),
    "concurrency_repeats": (3, 1),
}
DEFAULT_CONCURRENCY = "1,100,1000,10000"


def build_parser() -> argparse.ArgumentParser:
    """Options of ``python -m benchmarks`` (and ``msiv2-async bench``)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="CSR signing, mTLS handshake and acquire_token benchmarks, each against a baseline "
        "measured in the same run",
        allow_abbrev=False,
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds (well under 2 minutes)")
    parser.add_argument(
        "--target",
        choices=("emulator", "imds"),
        default="emulator",
        help="emulator: everything on loopback (default); imds: sections 1, 3, 4 against this Azure VM's "
        "real IMDS and STS",
    )
    parser.add_argument("--only", help=f"comma-separated sections to run ({', '.join(SECTIONS)})")
    parser.add_argument("--rounds", type=int, help="override every section's rounds (smoke tests)")
    parser.add_argument(
        "--concurrency", default=DEFAULT_CONCURRENCY, help="caller counts (default %(default)s)"
    )
    parser.add_argument("--wave", type=int, default=100, help="callers started per loop iteration")
    parser.add_argument("--scope", default=DEFAULT_SCOPE, help="scope to request (default %(default)s)")
    parser.add_argument(
        "--backend",
        help="key backend for sections 2-5 (default: software on the emulator, the best viable on a VM); "
        "section 1 runs every viable backend unless this is given",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the emulator in a thread of this process instead of a child process (its work then "
        "competes with the client for the interpreter lock)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for JSON + Markdown")
    return parser


def _size(name: str, options: argparse.Namespace) -> int:
    full, quick = SIZES[name]
    if options.rounds is not None and not name.endswith("_batch"):
        return max(1, options.rounds)
    if options.rounds is not None:
        return max(10, min(quick, options.rounds * 50))
    return quick if options.quick else full


def _backend_factory(options: argparse.Namespace) -> Callable[[], KeyBackend]:
    name = options.backend or ("software" if options.target == "emulator" else None)
    return lambda: get_backend(name)


def _csr_backends(options: argparse.Namespace) -> list[KeyBackend]:
    if options.backend:
        return [get_backend(options.backend)]
    return [get_backend(info.name) for info in available_backends() if info.viable]


async def _require_imds_v2() -> None:
    """Fail fast, with the reason, when this host has no IMDS with Managed Identity v2."""
    from msiv2_async import ManagedIdentitySource, MsiV2Client

    async with MsiV2Client() as client:
        capabilities = await client.get_capabilities(timeout=10)
    if capabilities.source is not ManagedIdentitySource.IMDS_V2:
        raise SystemExit(f"--target imds needs an Azure VM with Managed Identity v2: {capabilities.reason}")


async def _run(options: argparse.Namespace) -> dict[str, Any]:
    wanted = [s.strip() for s in (options.only or "").split(",") if s.strip()] or list(SECTIONS)
    allowed = TARGET_SECTIONS if options.target == "imds" else SECTIONS
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s): {', '.join(unknown)}")
    sections_to_run = [s for s in wanted if s in allowed]
    if options.target == "imds":
        await _require_imds_v2()
    started = time.perf_counter()
    result: dict[str, Any] = {
        "schema": 1,
        "target": options.target,
        "quick": options.quick,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "scope": options.scope,
        "emulator": None
        if options.target == "imds"
        else ("thread of this process" if options.in_process else "child process"),
        "sections": {},
    }
    make_backend = _backend_factory(options)
    sizes = [int(x) for x in options.concurrency.split(",") if x.strip()]
    with _setup.target(options.target, in_process=options.in_process) as target:
        runs: dict[str, Callable[[], Awaitable[Any]]] = {
            "csr": lambda: asyncio.to_thread(csr.run, _csr_backends(options), _size("csr_rounds", options)),
            "handshake": lambda: handshake.run(target, _size("handshake_rounds", options), options.scope),
            "warm": lambda: warm.run(
                target, _size("warm_rounds", options), _size("warm_batch", options), options.scope
            ),
            "cold": lambda: cold.run(
                target,
                make_backend,
                _size("cold_rounds_imds" if options.target == "imds" else "cold_rounds", options),
                options.scope,
            ),
            "concurrency": lambda: concurrency.run(
                target, sizes, options.wave, _size("concurrency_repeats", options), options.scope
            ),
        }
        for number, name in enumerate(sections_to_run, 1):
            print(f"[{number}/{len(sections_to_run)}] {name} ...", file=sys.stderr, flush=True)
            section_started = time.perf_counter()
            try:
                data = await runs[name]()
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                data = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            data["seconds"] = round(time.perf_counter() - section_started, 2)
            result["sections"][name] = data
            print(f"      done in {data['seconds']} s", file=sys.stderr, flush=True)
        if target.emulator is not None:
            result["emulator_stats"] = target.stats()
    result["duration_s"] = round(time.perf_counter() - started, 1)
    result["goals"] = _report.evaluate(result["sections"])
    return result


def write(result: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """``<time>-<target>.json`` and ``.md`` in ``directory``, plus ``latest-<target>.*`` copies."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = result["started"].replace(":", "").replace("-", "").replace("+0000", "Z")
    stem = f"{stamp}-{result['target']}{'-quick' if result['quick'] else ''}"
    text = json.dumps(result, indent=2, sort_keys=False) + "\n"
    md = _report.markdown(result)
    json_path, md_path = directory / f"{stem}.json", directory / f"{stem}.md"
    for path, content in (
        (json_path, text),
        (md_path, md),
        (directory / f"latest-{result['target']}.json", text),
        (directory / f"latest-{result['target']}.md", md),
    ):
        path.write_text(content, encoding="utf-8")
    return json_path, md_path


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print the Markdown report, write the files; exit 1 if a section failed."""
    options = build_parser().parse_args(argv)
    if options.target == "imds":
        for name in ("AZURE_POD_IDENTITY_AUTHORITY_HOST",):
            if name in os.environ:
                print(f"note: {name} is set; IMDS is reached at {os.environ[name]}", file=sys.stderr)
    result = asyncio.run(_run(options))
    json_path, md_path = write(result, options.out)
    print(_report.markdown(result))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    failed = [name for name, data in result["sections"].items() if "error" in data]
    return 1 if failed else 0
