"""Build the Linux stand-ins of ncrypt.dll, crypt32.dll, winhttp.dll and AttestationClientLib.dll.

    python tests/native/standins/build.py DIR     # then: export MSIV2_ASYNC_NATIVE_STANDINS=DIR

Needs gcc and the OpenSSL headers (Debian: ``gcc libssl-dev``). The libraries find each other through
``$ORIGIN`` (crypt32 -> ncrypt; winhttp -> crypt32, ncrypt; AttestationClientLib -> ncrypt), so the
process loads exactly one copy of each, as Windows does with the real DLLs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (output file, source, stand-ins it links against, system libraries)
LIBRARIES = (
    ("libncrypt.so", "ncrypt.c", (), ("crypto", "pthread")),
    ("libcrypt32.so", "crypt32.c", ("ncrypt",), ("crypto", "pthread")),
    ("libwinhttp.so", "winhttp.c", ("crypt32", "ncrypt"), ("ssl", "crypto", "pthread")),
    ("libAttestationClientLib.so", "attestation.c", ("ncrypt",), ("crypto", "pthread")),
)
CFLAGS = ("-shared", "-fPIC", "-O1", "-g0", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden")


def sources_digest() -> str:
    """A hash of every stand-in source (used to reuse an up-to-date build)."""
    digest = hashlib.sha256()
    for path in sorted(HERE.glob("*.[ch]")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def build(directory: str | os.PathLike[str], compiler: str = "gcc") -> dict[str, Path]:
    """Compile the four libraries into ``directory`` (reused when the sources did not change)."""
    out = Path(directory).resolve()
    out.mkdir(parents=True, exist_ok=True)
    stamp = out / ".sources-sha256"
    built = {name: out / name for name, *_ in LIBRARIES}
    digest = sources_digest()
    if stamp.exists() and stamp.read_text() == digest and all(path.exists() for path in built.values()):
        return built
    if shutil.which(compiler) is None:
        raise RuntimeError(
            f"{compiler} is needed to build the native stand-ins (apt-get install gcc libssl-dev)"
        )
    for name, source, links, system in LIBRARIES:
        command = [compiler, *CFLAGS, "-o", str(out / name), str(HERE / source)]
        if name != "libAttestationClientLib.so":
            command.append(f"-Wl,-soname,{name}")
        command += [f"-L{out}", *(f"-l{link}" for link in links), "-Wl,-rpath,$ORIGIN"]
        command += [f"-l{lib}" for lib in system]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"building {name} failed:\n{' '.join(command)}\n{result.stderr}")
    stamp.write_text(digest)
    return built


def main(argv: list[str]) -> int:
    """Build into ``argv[0]`` and print the line that switches the bindings to the stand-ins."""
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    libraries = build(argv[0])
    directory = libraries["libncrypt.so"].parent
    print(f"built {len(libraries)} stand-ins in {directory}", file=sys.stderr)
    print(f"export MSIV2_ASYNC_NATIVE_STANDINS={directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
