"""The emulator in a child process, so that its TLS and HTTP work does not share the benchmarked client's
interpreter lock (a real IMDS and STS are other machines).

Protocol on stdin/stdout, one JSON line each: after start-up the child prints its addresses; then each
command line gets one answer line: ``stats`` -> the emulator's counters plus ``handshakes`` (TLS
handshakes its STS listener accepted, counted server side) and ``versions`` (protocol versions those
handshakes negotiated since the last ``stats``); ``quit`` (or end of input) stops it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any


def _serve() -> None:
    from msiv2_async.emulator import Emulator

    from ._setup import HandshakeCounter

    with Emulator(host="127.0.0.1") as emulator:
        counter = HandshakeCounter(emulator)
        print(
            json.dumps(
                {
                    "imds_url": emulator.imds_url,
                    "sts_url": emulator.sts_url,
                    "ca_bundle_path": emulator.ca_bundle_path,
                    "allowed_token_host": emulator.allowed_token_host,
                }
            ),
            flush=True,
        )
        for line in sys.stdin:
            command = line.strip()
            if command == "stats":
                answer = {**emulator.stats, "handshakes": counter.count, "versions": counter.versions()}
                print(json.dumps(answer), flush=True)
            elif command == "quit":
                break
            else:
                print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)


class ChildEmulator:
    """The parent's handle: the addresses, ``stats`` and a server-side handshake counter."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._emulator_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=_repository_root(),
        )
        self._lock = threading.Lock()
        assert self._process.stdout is not None
        first = self._process.stdout.readline()
        if not first:
            self._process.wait(10)
            raise RuntimeError("the emulator child process did not start")
        info = json.loads(first)
        self.imds_url: str = info["imds_url"]
        self.sts_url: str = info["sts_url"]
        self.ca_bundle_path: str = info["ca_bundle_path"]
        self.allowed_token_host: str = info["allowed_token_host"]

    def _ask(self, command: str) -> dict[str, Any]:
        with self._lock:
            assert self._process.stdin is not None
            assert self._process.stdout is not None
            self._process.stdin.write(command + "\n")
            self._process.stdin.flush()
            answer: dict[str, Any] = json.loads(self._process.stdout.readline())
            return answer

    @property
    def stats(self) -> dict[str, int]:
        """The emulator's request counters and the STS handshake count."""
        answer = self._ask("stats")
        answer.pop("versions", None)
        return answer

    def handshake_counter(self) -> ChildHandshakes:
        """A counter with the interface of :class:`benchmarks._setup.HandshakeCounter`."""
        return ChildHandshakes(self)

    def stop(self) -> None:
        """Ask the child to stop; kill it if it does not."""
        try:
            assert self._process.stdin is not None
            self._process.stdin.write("quit\n")
            self._process.stdin.close()
            self._process.wait(15)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self._process.kill()
            self._process.wait(5)


class ChildHandshakes:
    """Server-side handshake count of the child's STS listener."""

    def __init__(self, child: ChildEmulator) -> None:
        self._child = child
        self._versions: list[str] = []

    @property
    def count(self) -> int:
        """Handshakes so far."""
        answer = self._child._ask("stats")
        self._versions += answer.get("versions", [])
        return int(answer["handshakes"])

    def versions(self) -> list[str]:
        """Versions negotiated since the last call."""
        _ = self.count
        versions, self._versions = sorted(set(self._versions)), []
        return versions

    def close(self) -> None:
        """Nothing to undo in the parent."""


def _repository_root() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parent.parent)


if __name__ == "__main__":
    _serve()
