"""AttestationClientLib: where it is looked for, and one serialised call against the stand-in."""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from pathlib import Path

import pytest
from native_support import Controls

from msiv2_async._native import attestation, ncrypt
from msiv2_async._native.errors import AttestationError

DLL = "AttestationClientLib.dll"
ENDPOINT = "https://sharedeus2.eus2.attest.azure.net"


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"MZ")
    return path


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    """One copy of the DLL in every place the locator knows, in its order."""
    home, cwd, nuget = tmp_path / "home", tmp_path / "cwd", tmp_path / "nuget"
    package = nuget / attestation.NUGET_PACKAGE_ID
    return {
        "explicit": touch(tmp_path / "explicit" / DLL),
        "env": touch(tmp_path / "env" / DLL),
        "legacy env": touch(tmp_path / "legacy" / DLL),
        "cwd/native": touch(cwd / "native" / DLL),
        "cwd": touch(cwd / DLL),
        "downloads": touch(home / "Downloads" / DLL),
        "nuget": touch(package / "1.10.0" / "runtimes" / "win-x64" / "native" / DLL),
        "nuget older": touch(package / "1.9.3" / "runtimes" / "win-x64" / "native" / DLL),
        "nuget preview": touch(package / "1.10.0-preview1" / "runtimes" / "win-x64" / "native" / DLL),
    }


ORDER = [
    "explicit",
    "env",
    "legacy env",
    "cwd/native",
    "cwd",
    "downloads",
    "nuget",
    "nuget preview",
    "nuget older",
]


@pytest.mark.parametrize("winner", ORDER)
def test_locator_order(places: dict[str, Path], tmp_path: Path, winner: str) -> None:
    for name in ORDER[: ORDER.index(winner)]:
        if name != "explicit":
            places[name].unlink()
    environ = {
        "USERPROFILE": str(tmp_path / "home"),
        "NUGET_PACKAGES": str(tmp_path / "nuget"),
        attestation.ATTESTATION_LIB_ENV: str(places["env"].parent),
        attestation.LEGACY_ATTESTATION_LIB_ENV: str(places["legacy env"]),
    }
    explicit = str(places["explicit"]) if winner == "explicit" else None
    found = attestation.locate(explicit, environ=environ, cwd=str(tmp_path / "cwd"), file_name=DLL)
    assert found == str(places[winner])


def test_missing_explicit_path_is_an_error_even_if_others_exist(
    places: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(attestation.AttestationLibraryNotFoundError, match="does not exist"):
        attestation.locate(str(tmp_path / "nope.dll"), environ={}, cwd=str(tmp_path / "cwd"), file_name=DLL)


def test_not_found_lists_every_place_looked_in(tmp_path: Path) -> None:
    environ = {"USERPROFILE": str(tmp_path / "home"), attestation.ATTESTATION_LIB_ENV: str(tmp_path / "env")}
    with pytest.raises(attestation.AttestationLibraryNotFoundError) as caught:
        attestation.locate(environ=environ, cwd=str(tmp_path / "cwd"), file_name=DLL)
    searched = caught.value.searched
    assert searched[0] == str(tmp_path / "env")
    assert searched[1:4] == (
        str(tmp_path / "cwd" / "native" / DLL),
        str(tmp_path / "cwd" / DLL),
        str(tmp_path / "home" / "Downloads" / DLL),
    )
    assert attestation.NUGET_PACKAGE_ID in searched[4]
    assert all(path in str(caught.value) for path in searched)
    assert "NuGet package Microsoft.Azure.Security.KeyGuardAttestation" in str(caught.value)


def test_vc_runtime_check_names_what_is_missing(tmp_path: Path) -> None:
    library = touch(tmp_path / "lib" / DLL)
    touch(tmp_path / "lib" / "VCRUNTIME140.dll")
    touch(tmp_path / "python" / "VCRUNTIME140_1.dll")
    missing = attestation.missing_vc_runtime(
        str(library), search_dirs=(str(library.parent), str(tmp_path / "python"), str(tmp_path / "system32"))
    )
    assert missing == ["MSVCP140.dll"]


def keyguard_key(provider: ncrypt.Provider, *, isolated: bool = True) -> ncrypt.Key:
    flags = ncrypt.USE_VIRTUAL_ISOLATION_FLAG | ncrypt.USE_PER_BOOT_KEY_FLAG if isolated else 0
    key = provider.create_key("attested", flags=flags)
    key.finalize()
    return key


def claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    result: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return result


def test_attest_returns_the_jwt_and_routes_logs_from_any_thread(
    native: Controls, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="msiv2_async.native.attestation")
    library = attestation.AttestationLibrary.find()
    assert library.path == os.path.join(native.directory, "libAttestationClientLib.so")
    with ncrypt.Provider() as provider, keyguard_key(provider) as key:
        token = library.attest_keyguard_key(ENDPOINT, key.handle, "client-1")
    body = claims(token)
    assert body["iss"] == ENDPOINT
    assert body["client_id"] == "client-1"
    assert body["x-ms-keyguard"]["key_name"] == "attested"  # type: ignore[index]
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (
        logging.INFO,
        "AttestatationClientLib AttestKeyGuardImportKey:88 attesting KeyGuard key for client client-1",
    ) in messages
    assert any(level == logging.DEBUG and "worker thread" in text for level, text in messages)
    assert native.attest.StandinAttestForeignThreadLogs() == 1
    assert native.attest.StandinAttestLoggerRegistered() == 0  # always uninitialised afterwards


def test_failure_is_a_typed_error_and_uninitialises(native: Controls) -> None:
    native.attest.StandinAttestSetResult(-6)
    library = attestation.AttestationLibrary.find()
    with (
        ncrypt.Provider() as provider,
        keyguard_key(provider) as key,
        pytest.raises(AttestationError) as caught,
    ):
        library.attest_keyguard_key(ENDPOINT, key.handle, "client-1")
    assert (caught.value.code, caught.value.name) == (-6, "ERRORATTESTATIONFAILED")
    assert native.attest.StandinAttestLoggerRegistered() == 0


def test_a_key_without_vbs_cannot_be_attested(native: Controls) -> None:
    library = attestation.AttestationLibrary.find()
    with (
        ncrypt.Provider() as provider,
        keyguard_key(provider, isolated=False) as key,
        pytest.raises(AttestationError, match="ERRORCREATEKGATTESTATIONREPORT"),
    ):
        library.attest_keyguard_key(ENDPOINT, key.handle, "client-1")


def test_invalid_key_handle_is_invalid_input(native: Controls) -> None:
    library = attestation.AttestationLibrary.find()
    with pytest.raises(AttestationError, match="ERRORINVALIDINPUTPARAMETER"):
        library.attest_keyguard_key(ENDPOINT, 0, "client-1")


def test_calls_are_serialised_process_wide(native: Controls) -> None:
    library = attestation.AttestationLibrary.find()
    errors: list[BaseException] = []
    with ncrypt.Provider() as provider, keyguard_key(provider) as key:

        def attest() -> None:
            try:
                library.attest_keyguard_key(ENDPOINT, key.handle, "client-1")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=attest) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors
    assert native.attest.StandinAttestCalls() == 6
    assert native.attest.StandinAttestMaxConcurrency() == 1


def test_the_stand_in_would_notice_unserialised_calls(native: Controls) -> None:
    library = attestation.AttestationLibrary.find()
    ffi = attestation.ffi
    with ncrypt.Provider() as provider, keyguard_key(provider) as key:

        def raw() -> None:
            out = ffi.new("char **")
            library.lib.AttestKeyGuardImportKey(ENDPOINT.encode(), ffi.NULL, ffi.NULL, key.handle, out, b"c")
            library.lib.FreeAttestationToken(out[0])

        threads = [threading.Thread(target=raw) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert native.attest.StandinAttestMaxConcurrency() > 1


def test_native_log_messages_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="msiv2_async.native.attestation")
    ffi = attestation.ffi
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzZWNyZXQiOnRydWV9.c2lnbmF0dXJl"
    attestation._route_log(ffi.NULL, ffi.NULL, 3, ffi.NULL, 7, ffi.new("char[]", f"token {jwt}".encode()))
    assert jwt not in caplog.text
    assert "AttestationClientLib :7 token <jwt redacted>" in caplog.text
