"""Compile-only check of the cdefs against the real Windows headers of mingw-w64 (NATIVE.md Appendix A).

One C translation unit holds a ``_Static_assert`` for every scalar typedef (size and signedness),
every struct (size) and field (offset) of :data:`STRUCTS`, and every integer constant of the cdefs
and error tables, each with the value cffi computes on Linux from the very same cdefs; the WINAPI
prototypes of the cdefs are re-declared after the headers, so a parameter of the wrong type is a
"conflicting types" error. ``x86_64-w64-mingw32-gcc -c`` must accept it. Constants the mingw headers
lack must be exactly :data:`NOT_IN_MINGW` (checked against Microsoft's win32metadata instead,
NATIVE.md §7), so a misspelled name cannot slip through as "absent".

    python tests/native/static_check.py [OUT.c]    # generate, compile, print the counts
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from msiv2_async._native import _cdefs
from msiv2_async._native._ffi_abi import ffi

COMPILER = "x86_64-w64-mingw32-gcc"
HEADERS = ("windows.h", "stddef.h", "bcrypt.h", "ncrypt.h", "wincrypt.h", "winhttp.h")
ATTESTATION_TYPEDEF = (
    "typedef struct AttestationLogInfo { void (*Log)(void*, const char*, int, const char*, int, const char*);"
    " void *Ctx; } AttestationLogInfo;"
)
FIELD_ALIASES = {("CERT_KEY_CONTEXT", "hCryptProvOrNCryptKey"): "hCryptProv"}
NOT_IN_MINGW = frozenset(
    {
        "NCRYPT_PREFER_VIRTUAL_ISOLATION_FLAG",
        "NCRYPT_USE_VIRTUAL_ISOLATION_FLAG",
        "NCRYPT_USE_PER_BOOT_KEY_FLAG",
        "NCRYPT_IMPL_VIRTUAL_ISOLATION_FLAG",
        "WINHTTP_OPTION_ENABLE_HTTP2_PLUS_CLIENT_CERT",
    }
)
_PROTOTYPE = re.compile(r"^(?:typedef [^;(]*\(WINAPI[^;]*|[A-Za-z_][\w ]*\bWINAPI\b[^;]*);", re.M | re.S)


@dataclass
class Counts:
    """What one generated translation unit checks."""

    typedefs: int = 0
    structs: int = 0
    fields: int = 0
    constants: int = 0
    wide_strings: int = 0
    prototypes: int = 0

    @property
    def asserts(self) -> int:
        """Number of ``_Static_assert`` lines."""
        return 2 * self.typedefs + self.structs + self.fields + self.constants + self.wide_strings


def all_constants() -> dict[str, int]:
    """Every integer constant the bindings rely on: cdef ``#define``s and the error tables."""
    constants = _cdefs.int_constants()
    for table in (_cdefs.HRESULTS, _cdefs.CRYPT_HRESULTS, _cdefs.WIN32_ERRORS):
        constants.update(table)
    return constants


def header_macros(compiler: str = COMPILER) -> set[str]:
    """Names of the macros the mingw headers define (``-E -dM``)."""
    source = "#define WIN32_LEAN_AND_MEAN\n" + "".join(f"#include <{h}>\n" for h in HEADERS)
    result = subprocess.run(
        [compiler, "-E", "-dM", "-x", "c", "-"], input=source, capture_output=True, text=True, check=True
    )
    return {
        line.split()[1].split("(")[0] for line in result.stdout.splitlines() if line.startswith("#define ")
    }


def prototypes() -> list[str]:
    """The WINAPI declarations of the cdefs (functions and the status-callback typedef)."""
    text = "\n".join(_cdefs.ALL_CDEFS.values())
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return [" ".join(m.group(0).split()) for m in _PROTOTYPE.finditer(text)]


def generate(defined: set[str], overrides: dict[str, int] | None = None) -> tuple[str, Counts]:
    """The C source and its counts; ``overrides`` replaces values (negative controls)."""
    counts = Counts()
    lines = ["#define WIN32_LEAN_AND_MEAN", *(f"#include <{h}>" for h in HEADERS), ATTESTATION_TYPEDEF]
    for name in _cdefs.SCALAR_TYPEDEFS:
        signed = int(ffi.cast(name, -1)) < 0
        lines.append(f'_Static_assert(sizeof({name}) == {ffi.sizeof(name)}, "sizeof {name}");')
        lines.append(f'_Static_assert((({name})-1 < 0) == {int(signed)}, "signedness of {name}");')
        counts.typedefs += 1
    for struct, fields in _cdefs.STRUCTS.items():
        lines.append(f'_Static_assert(sizeof({struct}) == {ffi.sizeof(struct)}, "sizeof {struct}");')
        counts.structs += 1
        for field in fields:
            member = FIELD_ALIASES.get((struct, field), field)
            offset = ffi.offsetof(struct, field)
            lines.append(
                f'_Static_assert(offsetof({struct}, {member}) == {offset}, "offsetof {struct}.{field}");'
            )
            counts.fields += 1
    for name, value in sorted({**all_constants(), **(overrides or {})}.items()):
        if name in defined:
            lines.append(
                f"_Static_assert((unsigned long long)(unsigned long)(ULONG_PTR)({name}) == {value}ULL, "
                f'"{name}");'
            )
            counts.constants += 1
    for name, text in _cdefs.WSTR.items():
        if name in defined:
            lines.append(f'_Static_assert(sizeof({name}) == {2 * (len(text) + 1)}, "length of {name}");')
            counts.wide_strings += 1
    for declaration in prototypes():
        lines.append(declaration)
        counts.prototypes += 1
    return "\n".join(lines) + "\n", counts


def compile_source(source: str, compiler: str = COMPILER) -> subprocess.CompletedProcess[str]:
    """``compiler -c`` of ``source`` with warnings as errors (no output file kept)."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "static_check.c"
        path.write_text(source)
        return subprocess.run(
            [
                compiler,
                "-std=c11",
                "-Wall",
                "-Werror",
                "-Wno-attributes",
                "-c",
                str(path),
                "-o",
                str(path) + ".o",
            ],
            capture_output=True,
            text=True,
            check=False,
        )


def main(argv: list[str]) -> int:
    """Generate, compile and report; exit status 1 on any mismatch."""
    if shutil.which(COMPILER) is None:
        print(
            f"{COMPILER} is missing: apt-get install gcc-mingw-w64-x86-64 mingw-w64-x86-64-dev",
            file=sys.stderr,
        )
        return 1
    defined = header_macros()
    source, counts = generate(defined)
    if argv:
        Path(argv[0]).write_text(source)
    missing = {name for name in all_constants() if name not in defined}
    result = compile_source(source)
    print(
        f"{counts.asserts} static asserts ({counts.typedefs} typedefs x2, {counts.structs} structs, "
        f"{counts.fields} fields, {counts.constants} constants, {counts.wide_strings} wide strings), "
        f"{counts.prototypes} prototypes; not in mingw: {sorted(missing)}"
    )
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
    return 0 if result.returncode == 0 and missing == NOT_IN_MINGW else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
