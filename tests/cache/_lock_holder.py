"""Holds a mint lock the way ``FileBindingStore.mint_lock`` takes it, until it is killed.

Usage: ``python _lock_holder.py LOCK_PATH``. Prints ``locked`` once the exclusive ``flock`` is held,
then sleeps. Deliberately imports nothing from msiv2_async: it stands for any process that holds the lock.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time


def main(path: str) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main(sys.argv[1])
