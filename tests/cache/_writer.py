"""A fork server for the kill-during-write test: children loop ``_files.write_private_file`` until killed.

Usage: ``python _writer.py TARGET_PATH PAYLOAD_BYTES``. Protocol on stdin/stdout, one line each:

- prints ``ready`` once ``msiv2_async._files`` is imported (imported once: forking is what keeps
  200 kill cycles fast);
- on ``go CYCLE`` it forks a child that writes payloads ``(CYCLE, 0), (CYCLE, 1), ...`` to TARGET_PATH
  in an endless loop, prints ``pid CHILD_PID``, reaps the child (which the test SIGKILLs) and prints
  ``dead SIGNAL``;
- on ``quit`` (or end of input) it exits.

A payload is self-describing: ``MSIV2-KILL-TEST cycle=C seq=S length=N sha256=H\\n`` followed by N
bytes whose SHA-256 is H. :func:`parse_payload` returns ``(C, S)`` or raises.

:func:`kill_during_writes` is the parent side that the tests (tests/cache and tests/faults row 58) call:
it starts this server, SIGKILLs a writer at a random moment per cycle and inspects the file after each kill.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

_HEADER = re.compile(rb"MSIV2-KILL-TEST cycle=(\d+) seq=(\d+) length=(\d+) sha256=([0-9a-f]{64})\n")


def make_payload(cycle: int, seq: int, length: int) -> bytes:
    """A payload of ``length`` body bytes, distinct for every (cycle, seq)."""
    body = os.urandom(length)
    digest = hashlib.sha256(body).hexdigest()
    return (
        b"MSIV2-KILL-TEST cycle=%d seq=%d length=%d sha256=%s\n" % (cycle, seq, length, digest.encode())
        + body
    )


def parse_payload(data: bytes) -> tuple[int, int]:
    """``(cycle, seq)`` of a complete payload; ``ValueError`` for a partial or altered one."""
    match = _HEADER.match(data)
    if match is None:
        raise ValueError(f"no valid header in {len(data)} bytes")
    length = int(match.group(3))
    body = data[match.end() :]
    if len(body) != length:
        raise ValueError(f"body has {len(body)} bytes, header says {length}")
    if hashlib.sha256(body).hexdigest().encode() != match.group(4):
        raise ValueError("checksum mismatch")
    return int(match.group(1)), int(match.group(2))


@dataclass
class KillReport:
    """What a run of kill cycles saw; ``partial`` and ``regressions`` must stay 0."""

    cycles: int = 0
    partial: int = 0
    regressions: int = 0
    foreign_files: int = 0
    kills_mid_write: int = 0
    temporaries: int = 0
    latest: tuple[int, int] = (-1, -1)
    modes: set[int] = field(default_factory=set)


def kill_during_writes(
    directory: Path, *, max_cycles: int, budget_seconds: float, seed: int, env: dict[str, str]
) -> KillReport:
    """Kill a writer of ``directory/binding-kill-test.json`` mid-loop, up to ``max_cycles`` times."""
    from msiv2_async._files import read_private_file

    target = directory / "binding-kill-test.json"
    report = KillReport()
    rng = random.Random(seed)
    helper = subprocess.Popen(
        [sys.executable, __file__, str(target), str(64 * 1024)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
        env=env,
    )
    assert helper.stdin is not None
    assert helper.stdout is not None
    deadline = time.monotonic() + budget_seconds
    try:
        assert helper.stdout.readline() == "ready\n"
        while report.cycles < max_cycles and time.monotonic() < deadline:
            helper.stdin.write(f"go {report.cycles}\n")
            helper.stdin.flush()
            kind, pid = helper.stdout.readline().split()
            assert kind == "pid"
            time.sleep(rng.uniform(0.0, 0.006))
            os.kill(int(pid), signal.SIGKILL)
            assert helper.stdout.readline() == f"dead {int(signal.SIGKILL)}\n"
            report.cycles += 1
            names = os.listdir(directory)
            leftovers = [name for name in names if name.startswith(".tmp-")]
            report.foreign_files += len(set(names) - set(leftovers) - {target.name})
            report.kills_mid_write += len(leftovers) - report.temporaries
            report.temporaries = len(leftovers)
            data = read_private_file(str(target))  # refuses anything but a regular 0600 file of ours
            if data is None:
                report.regressions += target.exists() or report.latest != (-1, -1)
                continue
            report.modes.add(os.stat(target).st_mode & 0o777)
            try:
                version = parse_payload(data)
            except ValueError:
                report.partial += 1
                continue
            report.regressions += version < report.latest
            report.latest = max(report.latest, version)
        helper.stdin.write("quit\n")
        helper.stdin.flush()
        assert helper.wait(timeout=10) == 0
    finally:
        if helper.poll() is None:
            helper.kill()
            helper.wait()
    return report


def _child(path: str, cycle: int, length: int) -> None:
    from msiv2_async._files import write_private_file

    seq = 0
    while True:
        write_private_file(path, make_payload(cycle, seq, length))
        seq += 1


def main(path: str, length: int) -> None:
    import msiv2_async._files  # noqa: F401 - imported before forking, so children start writing at once

    print("ready", flush=True)
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            return
        cycle = int(command[1])
        pid = os.fork()
        if pid == 0:
            try:
                _child(path, cycle, length)
            finally:
                os._exit(3)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"dead {os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1}", flush=True)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main(sys.argv[1], int(sys.argv[2]))
