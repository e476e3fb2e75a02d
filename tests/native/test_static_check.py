"""The cdefs parse and agree with the real Windows headers (mingw-w64), checked at compile time."""

from __future__ import annotations

import shutil

import cffi
import pytest
import static_check

from msiv2_async._native import _build, _cdefs
from msiv2_async._native._ffi_abi import ffi

# NATIVE.md §1.3 / §2.1 / §3.2 / §4.2: x64 sizes and offsets from the real headers.
EXPECTED_LAYOUT = {
    "BCRYPT_PSS_PADDING_INFO": (16, [0, 8]),
    "BCRYPT_RSAKEY_BLOB": (24, [0, 4, 8, 12, 16, 20]),
    "NCryptKeyName": (24, [0, 8, 16, 20]),
    "CERT_CONTEXT": (40, [0, 8, 16, 24, 32]),
    "CRYPT_KEY_PROV_INFO": (48, [0, 8, 16, 20, 24, 32, 40]),
    "CERT_KEY_CONTEXT": (24, [0, 8, 16]),
    "WINHTTP_ASYNC_RESULT": (16, [0, 8]),
    "AttestationLogInfo": (16, [0, 8]),
}
# The constants mingw-w64 lacks, as Microsoft's win32metadata defines them (NATIVE.md §1.2, §3.2).
WIN32METADATA = {
    "NCRYPT_PREFER_VIRTUAL_ISOLATION_FLAG": 0x00010000,
    "NCRYPT_USE_VIRTUAL_ISOLATION_FLAG": 0x00020000,
    "NCRYPT_USE_PER_BOOT_KEY_FLAG": 0x00040000,
    "NCRYPT_IMPL_VIRTUAL_ISOLATION_FLAG": 0x20,
    "WINHTTP_OPTION_ENABLE_HTTP2_PLUS_CLIENT_CERT": 161,
}


@pytest.fixture(scope="module")
def defined_macros() -> set[str]:
    if shutil.which(static_check.COMPILER) is None:
        pytest.fail(
            f"{static_check.COMPILER} is missing: scripts/dev.py test installs gcc-mingw-w64-x86-64 and "
            "mingw-w64-x86-64-dev"
        )
    return static_check.header_macros()


@pytest.mark.parametrize("part", sorted(_cdefs.ALL_CDEFS))
def test_each_cdef_block_parses_on_its_own(part: str) -> None:
    builder = cffi.FFI()
    builder.cdef(_cdefs.cdef_text(part))


def test_generated_abi_module_is_up_to_date() -> None:
    assert _build.main(["--check"]) == 0, "run: python -m msiv2_async._native._build"


@pytest.mark.parametrize(("struct", "layout"), sorted(EXPECTED_LAYOUT.items()))
def test_struct_layout_is_the_x64_one(struct: str, layout: tuple[int, list[int]]) -> None:
    size, offsets = layout
    assert ffi.sizeof(struct) == size
    assert [ffi.offsetof(struct, field) for field in _cdefs.STRUCTS[struct]] == offsets


def test_fixed_width_typedefs() -> None:
    assert ffi.sizeof("DWORD") == 4
    assert ffi.sizeof("LONG") == 4
    assert ffi.sizeof("NCRYPT_KEY_HANDLE") == 8
    assert ffi.sizeof("INTERNET_PORT") == 2
    assert int(ffi.cast("SECURITY_STATUS", 0x80090016)) < 0


def test_constants_missing_from_mingw_match_win32metadata() -> None:
    constants = _cdefs.int_constants()
    assert {name: constants[name] for name in WIN32METADATA} == WIN32METADATA


def test_static_asserts_compile_against_the_mingw_headers(defined_macros: set[str]) -> None:
    source, counts = static_check.generate(defined_macros)
    result = static_check.compile_source(source)
    assert result.returncode == 0, result.stderr
    missing = {name for name in static_check.all_constants() if name not in defined_macros}
    assert missing == static_check.NOT_IN_MINGW
    assert (counts.structs, counts.fields) == (12, 40)
    assert counts.constants >= 170
    assert counts.prototypes == 39
    print(
        f"\nstatic check: {counts.asserts} asserts ({counts.typedefs} typedefs, {counts.structs} structs, "
        f"{counts.fields} fields, {counts.constants} constants, {counts.wide_strings} wide strings), "
        f"{counts.prototypes} prototypes"
    )


def test_a_wrong_constant_fails_the_static_check(defined_macros: set[str]) -> None:
    source, _ = static_check.generate(
        defined_macros, overrides={"WINHTTP_CALLBACK_FLAG_ALL_COMPLETIONS": 0x007E0000}
    )
    result = static_check.compile_source(source)
    assert result.returncode != 0
    assert "WINHTTP_CALLBACK_FLAG_ALL_COMPLETIONS" in result.stderr


def test_a_wrong_prototype_fails_the_static_check(defined_macros: set[str]) -> None:
    source, _ = static_check.generate(defined_macros)
    wrong = source.replace(
        "BOOL WINAPI WinHttpReadData(HINTERNET hRequest, LPVOID lpBuffer, DWORD dwNumberOfBytesToRead,",
        "BOOL WINAPI WinHttpReadData(HINTERNET hRequest, LPVOID lpBuffer, WORD dwNumberOfBytesToRead,",
    )
    assert wrong != source
    result = static_check.compile_source(wrong)
    assert result.returncode != 0
    assert "conflicting types" in result.stderr
