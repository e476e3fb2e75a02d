"""What the numbers were measured on: machine, Python, OpenSSL and library versions."""

from __future__ import annotations

import os
import platform
import ssl
import sys
from importlib import metadata
from typing import Any

LIBRARIES = (
    "msiv2-async",
    "cryptography",
    "httpx",
    "httpcore",
    "anyio",
    "aiohttp",
    "azure-identity",
    "azure-core",
    "msal",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """A JSON-ready description of this machine and software."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "machine": platform.node(),
        "platform": platform.platform(),
        "architecture": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average": load,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "openssl": ssl.OPENSSL_VERSION,
        "libraries": {name: _version(name) for name in LIBRARIES},
    }
