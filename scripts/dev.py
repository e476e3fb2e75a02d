#!/usr/bin/env python3
"""Set-up and the two project commands, on a fresh Linux machine with only python3.

    python3 scripts/dev.py demo   # the MSI v2 flow against the built-in emulator
    python3 scripts/dev.py test   # ruff, ruff format --check, mypy --strict, pytest (asyncio + trio)

Creates ``.venv`` beside this repository on first use (installing Debian's python3-venv first when
``venv`` is missing and we may use apt) and reinstalls the project when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".msiv2-async-installed"
KEYGUARD_PLUGIN = ROOT / "backends" / "keyguard"


def run(*command: str | Path, check: bool = True) -> int:
    """Run a command from the repository root, echoing it."""
    print("+", " ".join(str(c) for c in command), flush=True)
    return subprocess.run([str(c) for c in command], cwd=ROOT, check=check).returncode


def apt_install(*packages: str) -> None:
    """Install Debian packages when we are root on a Debian-like system."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        sys.exit(f"please install {' '.join(packages)} (apt-get is not usable here)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env)


def create_venv() -> None:
    """``python3 -m venv .venv``; on Debian without ensurepip, install python3-venv first."""
    if PYTHON.exists():
        return
    if subprocess.run([sys.executable, "-m", "venv", str(VENV)], cwd=ROOT).returncode != 0:
        shutil.rmtree(VENV, ignore_errors=True)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        apt_install(f"python{version}-venv")
        run(sys.executable, "-m", "venv", VENV)


def ensure_installed(extras: str) -> None:
    """Install the project (editable) with ``extras`` unless the same pyproject is already installed."""
    create_venv()
    plugin_pyproject = (KEYGUARD_PLUGIN / "pyproject.toml").read_bytes()
    digest = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + extras.encode() + plugin_pyproject
    ).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    run(PYTHON, "-m", "pip", "install", "-q", "--upgrade", "pip")
    run(PYTHON, "-m", "pip", "install", "-q", "-e", f".[{extras}]")
    run(PYTHON, "-m", "pip", "install", "-q", "-e", KEYGUARD_PLUGIN)  # the KeyGuard backend plugin
    STAMP.write_text(digest)


def ensure_native_toolchain() -> None:
    """What the native checks compile with: gcc + OpenSSL headers (stand-ins), mingw-w64 (static check)."""
    if not sys.platform.startswith("linux"):
        return
    missing = []
    if shutil.which("gcc") is None:
        missing.append("gcc")
    if not Path("/usr/include/openssl/ssl.h").exists():
        missing.append("libssl-dev")
    if shutil.which("x86_64-w64-mingw32-gcc") is None:
        missing.append("gcc-mingw-w64-x86-64")
    if not Path("/usr/share/mingw-w64/include/windows.h").exists():
        missing.append("mingw-w64-x86-64-dev")
    if missing:
        apt_install("--no-install-recommends", *missing)


def demo(arguments: list[str]) -> int:
    """The main job: run the whole flow against the in-process emulator."""
    ensure_installed("emulator")
    return run(BIN / "msiv2-async", "demo", *arguments, check=False)


def test(arguments: list[str]) -> int:
    """Every quality gate, in order; stops at the first failure."""
    ensure_installed("dev")
    ensure_native_toolchain()
    gates = [
        [BIN / "ruff", "check", "src", "tests", "scripts", "backends"],
        [BIN / "ruff", "format", "--check", "src", "tests", "scripts", "backends"],
        [BIN / "mypy", "--strict", "src"],
        [BIN / "mypy", "--strict", "backends/keyguard/src"],
        [BIN / "pytest", *arguments],
    ]
    for gate in gates:
        status = run(*gate, check=False)
        if status != 0:
            return status
    return 0


def main() -> int:
    """Dispatch ``demo`` or ``test``; extra arguments go to the demo or to pytest."""
    commands = {"demo": demo, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
