"""A fork server for the kill-during-write test: children loop ``_files.write_private_file`` until killed.

Usage: ``python _writer.py TARGET_PATH PAYLOAD_BYTES``. Protocol on stdin/stdout, one line each:

- prints ``ready`` once ``msiv2_async._files`` is imported (imported once: forking is what keeps
  200 kill cycles fast);
- on ``go CYCLE`` it forks a child that writes payloads ``(CYCLE, 0), (CYCLE, 1), ...`` to TARGET_PATH
  in an endless loop, prints ``pid CHILD_PID``, reaps the child (which the test SIGKILLs) and prints
  ``dead SIGNAL``;
- on ``quit`` (or end of input) it exits.

A payload is self-describing: ``MSIV2-KILL-TEST cycle=C seq=S length=N sha256=H\\n`` followed by N
bytes whose SHA-256 is H. :func:`parse_payload` (imported by the test) returns ``(C, S)`` or raises.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sys

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
