"""Helpers of the tooling tests: running the CLI as a subprocess in a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys

_DROPPED = ("MSIV2_ASYNC_", "AZURE_POD_IDENTITY_AUTHORITY_HOST", "ATTESTATION_CLIENTLIB_PATH")


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without proxies and msiv2_async settings, plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if "proxy" not in name.lower() and not name.startswith(_DROPPED)
    }
    env.update(extra)
    return env


def run_cli(
    *arguments: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m msiv2_async ARGUMENTS`` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "msiv2_async", *arguments],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        env=clean_env() if env is None else env,
        check=False,
    )
