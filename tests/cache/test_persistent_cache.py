"""The opt-in persistent cache (``cache_dir=``) across processes, against a real emulator on loopback.

Worker processes run ``_worker.py`` (one client, one ``acquire_token``, one JSON line). The kill tests
use ``_lock_holder.py`` (a process holding the slot's mint lock) and ``_writer.py`` (a fork server whose
children loop ``_files.write_private_file`` until SIGKILLed).

What a kill during a write may leave behind: the target file is replaced by ``os.replace`` only after
the new content is complete and fsynced, so the target is always absent or complete. A writer killed
between ``mkstemp`` and ``os.replace`` leaves its ``.tmp-*`` file (possibly partial) in the directory;
nothing in the library removes such leftovers later, so they accumulate, at most one per killed writer.
The readers never look at them.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from msiv2_async import (
    ConfigurationError,
    FileBindingStore,
    MsiV2Client,
    MsiV2Error,
    MsiV2TimeoutError,
    MtlsPopToken,
    _store,
)
from msiv2_async._binding import cnf_thumbprint
from msiv2_async.emulator import Emulator

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_worker.py"
LOCK_HOLDER = HERE / "_lock_holder.py"
WRITER = HERE / "_writer.py"
SCOPE = "https://vault.azure.net"
KEY_FILE = "software-key.pem"
PROCESS_TIMEOUT = 60.0


def _load_writer_module() -> Any:
    spec = importlib.util.spec_from_file_location("msiv2_cache_tests_writer", WRITER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


writer_protocol = _load_writer_module()


# -- fixtures and helpers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_emulator() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def emulator(module_emulator: Emulator) -> Emulator:
    module_emulator.reset_stats()
    return module_emulator


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Every process a test starts; whatever still runs at teardown is killed and reaped."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=10)


def _child_env(**extra: str) -> dict[str, str]:
    """This environment without anything that configures msiv2_async behind the test's back."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("MSIV2_ASYNC_") and name != "AZURE_POD_IDENTITY_AUTHORITY_HOST"
    }
    env.update(extra)
    return env


def _client_kwargs(emulator: Emulator, cache_dir: Path) -> dict[str, Any]:
    return {
        "cache_dir": str(cache_dir),
        "imds_endpoint": emulator.imds_url,
        "ca_bundle": emulator.ca_bundle_path,
        "allowed_token_hosts": [emulator.allowed_token_host],
        "environ": {},
    }


def _start_worker(
    processes: list[subprocess.Popen[str]], emulator: Emulator, cache_dir: Path, **env: str
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            str(WORKER),
            str(cache_dir),
            emulator.imds_url,
            emulator.ca_bundle_path,
            emulator.allowed_token_host,
            SCOPE,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(**env),
    )
    processes.append(process)
    return process


def _worker_result(process: subprocess.Popen[str]) -> dict[str, Any]:
    stdout, stderr = process.communicate(timeout=PROCESS_TIMEOUT)
    assert process.returncode == 0, f"worker failed: {stdout.strip()} {stderr.strip()[-2000:]}"
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def _slot_paths(emulator: Emulator, cache_dir: Path) -> tuple[Path, Path]:
    """The binding file and the lock file of the slot a worker (or ``_client_kwargs``) client uses."""
    slot = MsiV2Client(**_client_kwargs(emulator, cache_dir))._slot
    store = FileBindingStore(str(cache_dir))
    return Path(store._path(slot, ".json")), Path(store._path(slot, ".lock"))


async def _acquire(
    emulator: Emulator, cache_dir: Path, **overrides: Any
) -> tuple[MtlsPopToken, dict[str, int]]:
    """One new client, one token; its cache statistics."""
    async with MsiV2Client(**{**_client_kwargs(emulator, cache_dir), **overrides}) as client:
        token = await client.acquire_token(SCOPE)
        return token, client.cache_stats


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _assert_private_layout(cache_dir: Path, binding_file: Path, lock_file: Path) -> None:
    """Directory 0700 with exactly the key, the binding and the lock: regular 0600 files of this user."""
    assert _mode(cache_dir) == 0o700
    assert cache_dir.lstat().st_uid == os.geteuid()
    assert sorted(os.listdir(cache_dir)) == sorted([KEY_FILE, binding_file.name, lock_file.name])
    for name in os.listdir(cache_dir):
        info = (cache_dir / name).lstat()
        assert stat.S_ISREG(info.st_mode), name
        assert stat.S_IMODE(info.st_mode) == 0o600, (name, oct(info.st_mode))
        assert info.st_uid == os.geteuid()


def _assert_valid_binding_file(binding_file: Path, certificate_der: bytes) -> None:
    """A regular 0600 schema-1 file that names ``certificate_der``."""
    info = binding_file.lstat()
    assert stat.S_ISREG(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    document = json.loads(binding_file.read_bytes())
    assert document["version"] == 1
    assert base64.b64decode(document["certificate"]) == certificate_der


# -- A.1 cold processes ---------------------------------------------------------------------------------


def test_eight_cold_processes_mint_one_certificate_and_request_eight_tokens(
    emulator: Emulator, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    cache_dir = tmp_path / "cache"
    start_at = str(time.time() + 1.5)  # all eight call acquire_token at the same moment
    workers = [_start_worker(processes, emulator, cache_dir, CACHE_TEST_START_AT=start_at) for _ in range(8)]
    results = [_worker_result(worker) for worker in workers]

    stats = emulator.stats
    assert stats["issuecredential"] == 1
    assert stats["token"] == 8
    assert len({result["thumbprint"] for result in results}) == 1
    assert all(result["cnf"] == result["thumbprint"] for result in results)
    assert sorted(result["mints"] for result in results) == [0] * 7 + [1]
    assert sum(result["persisted_loaded"] for result in results) == 7
    binding_file, lock_file = _slot_paths(emulator, cache_dir)
    _assert_private_layout(cache_dir, binding_file, lock_file)


# -- A.2 a lock holder killed --------------------------------------------------------------------------


def _hold_lock(processes: list[subprocess.Popen[str]], lock_file: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, str(LOCK_HOLDER), str(lock_file)],
        stdout=subprocess.PIPE,
        text=True,
        env=_child_env(),
    )
    processes.append(holder)
    assert holder.stdout is not None
    assert holder.stdout.readline() == "locked\n"
    return holder


def _has_open(pid: int, path: Path) -> bool:
    """Process ``pid`` has ``path`` open (seen through ``/proc/PID/fd``)."""
    real = os.path.realpath(path)
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == real:
                    return True
    return False


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see who waits on the lock")
def test_sigkilled_lock_holder_releases_the_mint_lock(
    emulator: Emulator, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    cache_dir = tmp_path / "cache"
    _, lock_file = _slot_paths(emulator, cache_dir)
    holder = _hold_lock(processes, lock_file)

    workers = [_start_worker(processes, emulator, cache_dir) for _ in range(3)]
    deadline = time.monotonic() + 30
    while not all(_has_open(worker.pid, lock_file) for worker in workers):
        assert all(worker.poll() is None for worker in workers), "a worker ended while the lock was held"
        assert time.monotonic() < deadline, "the workers never opened the mint lock"
        time.sleep(0.02)
    time.sleep(1.0)
    # All three are blocked on the lock: none finished, none minted, none asked the STS.
    assert [worker.poll() for worker in workers] == [None, None, None]
    assert emulator.stats["issuecredential"] == 0
    assert emulator.stats["token"] == 0

    holder.send_signal(signal.SIGKILL)
    assert holder.wait(timeout=10) == -signal.SIGKILL
    killed_at = time.monotonic()
    results = [_worker_result(worker) for worker in workers]
    # Released by the kill, long before the 60 s lock timeout after which workers would mint anyway.
    assert time.monotonic() - killed_at < 30
    assert emulator.stats["issuecredential"] == 1
    assert emulator.stats["token"] == 3
    assert len({result["thumbprint"] for result in results}) == 1
    assert sorted(result["mints"] for result in results) == [0, 0, 1]


@pytest.mark.anyio
async def test_waiting_for_a_held_lock_keeps_the_event_loop_running_and_honours_the_deadline(
    emulator: Emulator, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    cache_dir = tmp_path / "cache"
    _, lock_file = _slot_paths(emulator, cache_dir)
    holder = _hold_lock(processes, lock_file)
    safety = threading.Timer(10.0, holder.kill)  # should the wait block the loop, end it after 10 s
    safety.start()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with MsiV2Client(**_client_kwargs(emulator, cache_dir)) as client:
        started = time.monotonic()
        async with anyio.create_task_group() as group:
            group.start_soon(ticker)
            with pytest.raises(MsiV2TimeoutError):
                await client.acquire_token(SCOPE, timeout=0.5)
            group.cancel_scope.cancel()
        elapsed = time.monotonic() - started
        safety.cancel()
        assert 0.5 <= elapsed < 3
        assert ticks >= 10  # the loop kept running while the client waited for the lock
        assert emulator.stats["issuecredential"] == 0

        holder.kill()
        holder.wait(timeout=10)
        token = await client.acquire_token(SCOPE)  # the timed-out wait left no failure behind
    assert emulator.stats["issuecredential"] == 1
    assert cnf_thumbprint(token.access_token) == token.binding_certificate.thumbprint_sha256


@pytest.mark.anyio
async def test_a_lock_that_is_never_released_delays_the_mint_only_by_the_lock_timeout(
    emulator: Emulator,
    tmp_path: Path,
    processes: list[subprocess.Popen[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # RELIABILITY §2.2: bounded wait, then mint anyway (the holder may be stuck, not dead).
    monkeypatch.setattr(_store, "LOCK_TIMEOUT_SECONDS", 0.5)
    cache_dir = tmp_path / "cache"
    binding_file, lock_file = _slot_paths(emulator, cache_dir)
    _hold_lock(processes, lock_file)
    started = time.monotonic()
    token, stats = await _acquire(emulator, cache_dir, timeout=15)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 5
    assert emulator.stats["issuecredential"] == 1
    assert stats["certificate_mints"] == 1
    _assert_valid_binding_file(binding_file, token.binding_certificate.der)


# -- A.3 kill during write ------------------------------------------------------------------------------


def test_two_hundred_kills_during_writes_never_leave_a_partial_file(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    report = writer_protocol.kill_during_writes(
        directory, max_cycles=200, budget_seconds=120.0, seed=8705, env=_child_env()
    )
    assert report.cycles == 200
    assert (report.partial, report.regressions, report.foreign_files) == (0, 0, 0)
    assert report.modes <= {0o600}
    # The test exercised what it claims: writes completed, and kills landed in the middle of writes;
    # each such kill leaves at most the one temporary file its writer had open.
    assert report.latest[0] >= 100
    assert report.kills_mid_write >= 20
    assert report.temporaries == report.kills_mid_write


# -- A.4 file safety -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cache_directory_is_created_0700_and_files_0600_even_with_a_permissive_umask(
    emulator: Emulator, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "new" / "cache"
    old_umask = os.umask(0)
    try:
        token, stats = await _acquire(emulator, cache_dir)
    finally:
        os.umask(old_umask)
    assert stats["certificate_mints"] == 1
    binding_file, lock_file = _slot_paths(emulator, cache_dir)
    _assert_private_layout(cache_dir, binding_file, lock_file)
    _assert_valid_binding_file(binding_file, token.binding_certificate.der)


@pytest.mark.anyio
async def test_second_client_in_the_same_process_loads_the_persisted_certificate(
    emulator: Emulator, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    first, first_stats = await _acquire(emulator, cache_dir)
    assert emulator.stats["issuecredential"] == 1
    assert (first_stats["certificate_mints"], first_stats["persisted_certificates_loaded"]) == (1, 0)

    second, second_stats = await _acquire(emulator, cache_dir)
    assert emulator.stats["issuecredential"] == 1
    assert emulator.stats["token"] == 2
    assert (second_stats["certificate_mints"], second_stats["persisted_certificates_loaded"]) == (0, 1)
    assert second.binding_certificate.thumbprint_sha256 == first.binding_certificate.thumbprint_sha256
    assert cnf_thumbprint(second.access_token) == first.binding_certificate.thumbprint_sha256


def _replace_with_symlink(binding_file: Path, tmp_path: Path) -> Path:
    outside = tmp_path / "outside.json"
    shutil.copyfile(binding_file, outside)
    outside.chmod(0o600)
    binding_file.unlink()
    binding_file.symlink_to(outside)
    return outside


TAMPERINGS = ["symlink", "mode-0644", "corrupt-json", "schema-version-2", "orphan", "due-for-renewal"]


@pytest.mark.anyio
@pytest.mark.parametrize("tampering", TAMPERINGS)
async def test_unusable_binding_file_is_treated_as_absent_and_replaced(
    emulator: Emulator, tmp_path: Path, tampering: str
) -> None:
    cache_dir = tmp_path / "cache"
    first, _ = await _acquire(emulator, cache_dir)
    binding_file, _ = _slot_paths(emulator, cache_dir)
    key_pem = (cache_dir / KEY_FILE).read_bytes()
    outside: Path | None = None
    second_client: dict[str, Any] = {}
    if tampering == "symlink":
        outside = _replace_with_symlink(binding_file, tmp_path)
    elif tampering == "mode-0644":
        binding_file.chmod(0o644)
    elif tampering == "corrupt-json":
        binding_file.write_bytes(binding_file.read_bytes()[:57])
    elif tampering == "schema-version-2":
        document = json.loads(binding_file.read_bytes())
        binding_file.write_bytes(json.dumps({**document, "version": 2}).encode())
    elif tampering == "orphan":
        # A valid file for the same slot, but its certificate is for another cache directory's key.
        other_dir = tmp_path / "other"
        await _acquire(emulator, other_dir)
        other_binding, _ = _slot_paths(emulator, other_dir)
        shutil.copyfile(other_binding, binding_file)
    elif tampering == "due-for-renewal":
        # The emulator's certificates start 5 min in the past: with this fraction, renewal is overdue.
        second_client["renewal_fraction"] = 0.0001
    assert _mode(cache_dir) == 0o700
    before = emulator.stats["issuecredential"]

    second, stats = await _acquire(emulator, cache_dir, **second_client)
    assert emulator.stats["issuecredential"] == before + 1
    assert (stats["certificate_mints"], stats["persisted_certificates_loaded"]) == (1, 0)
    assert second.binding_certificate.thumbprint_sha256 != first.binding_certificate.thumbprint_sha256
    assert cnf_thumbprint(second.access_token) == second.binding_certificate.thumbprint_sha256
    _assert_valid_binding_file(binding_file, second.binding_certificate.der)
    assert (cache_dir / KEY_FILE).read_bytes() == key_pem  # the same key, a new certificate
    if outside is not None:  # the symlink was replaced, not written through
        assert json.loads(outside.read_bytes())["certificate"] == base64.b64encode(
            first.binding_certificate.der
        ).decode("ascii")

    third, stats = await _acquire(emulator, cache_dir)
    assert emulator.stats["issuecredential"] == before + 1
    assert (stats["certificate_mints"], stats["persisted_certificates_loaded"]) == (0, 1)
    assert third.binding_certificate.thumbprint_sha256 == second.binding_certificate.thumbprint_sha256


@pytest.mark.anyio
async def test_key_file_readable_by_others_is_not_used_and_its_certificate_is_replaced(
    emulator: Emulator, tmp_path: Path
) -> None:
    # A key others could read may be compromised: it must not be loaded. A new key replaces it, and the
    # persisted certificate of the old key is then an orphan, so a new certificate is minted.
    cache_dir = tmp_path / "cache"
    first, _ = await _acquire(emulator, cache_dir)
    key_file = cache_dir / KEY_FILE
    old_key = key_file.read_bytes()
    key_file.chmod(0o644)

    second, stats = await _acquire(emulator, cache_dir)
    assert emulator.stats["issuecredential"] == 2
    assert (stats["certificate_mints"], stats["persisted_certificates_loaded"]) == (1, 0)
    assert second.binding_certificate.thumbprint_sha256 != first.binding_certificate.thumbprint_sha256
    assert key_file.read_bytes() != old_key
    assert _mode(key_file) == 0o600
    binding_file, lock_file = _slot_paths(emulator, cache_dir)
    _assert_private_layout(cache_dir, binding_file, lock_file)
    _assert_valid_binding_file(binding_file, second.binding_certificate.der)


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o705, 0o701])
def test_existing_cache_directory_open_to_others_is_refused_at_construction(
    tmp_path: Path, mode: int
) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    cache_dir.chmod(mode)
    with pytest.raises(ConfigurationError, match="0700"):
        MsiV2Client(cache_dir=str(cache_dir), imds_endpoint="http://127.0.0.1:9", environ={})
    assert _mode(cache_dir) == mode  # not silently "fixed"
    assert os.listdir(cache_dir) == []


def test_cache_directory_that_is_a_symlink_is_refused_at_construction(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "cache"
    link.symlink_to(real)
    with pytest.raises(ConfigurationError, match="symlink"):
        MsiV2Client(cache_dir=str(link), imds_endpoint="http://127.0.0.1:9", environ={})
    assert os.listdir(real) == []


def test_fifo_in_place_of_the_binding_file_is_treated_as_absent_without_blocking(
    emulator: Emulator, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    binding_file, _ = _slot_paths(emulator, cache_dir)
    os.mkfifo(binding_file, 0o600)

    done = threading.Event()

    def unblock() -> None:
        # After 2 s, keep opening the FIFO for writing: that releases a reader blocked in open() (with
        # the bug), so the test ends instead of hanging. Without a reader the open fails with ENXIO.
        if done.wait(2.0):
            return
        while not done.is_set():
            with contextlib.suppress(OSError):
                if stat.S_ISFIFO(binding_file.lstat().st_mode):
                    os.close(os.open(binding_file, os.O_WRONLY | os.O_NONBLOCK))
            done.wait(0.1)

    unblocker = threading.Thread(target=unblock, daemon=True)
    unblocker.start()
    started = time.monotonic()
    try:
        token, stats = anyio.run(_acquire, emulator, cache_dir)
    finally:
        elapsed = time.monotonic() - started
        done.set()
        unblocker.join(5)
    assert stats["certificate_mints"] == 1
    _assert_valid_binding_file(binding_file, token.binding_certificate.der)
    assert elapsed < 1.5, f"acquire_token blocked for {elapsed:.1f} s on a FIFO in the cache directory"


@pytest.mark.anyio
async def test_symlinked_lock_file_never_surfaces_as_a_bare_oserror(
    emulator: Emulator, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    _, lock_file = _slot_paths(emulator, cache_dir)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    lock_file.symlink_to(target)
    with contextlib.suppress(MsiV2Error):  # a typed refusal is acceptable, a bare OSError is not
        await _acquire(emulator, cache_dir)
    assert target.read_bytes() == b""


# -- A.5 tokens stay in memory ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_tokens_are_never_written_to_the_cache_directory(emulator: Emulator, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    scopes = [SCOPE, "https://graph.microsoft.com/.default", "https://management.azure.com"]

    def scan() -> dict[str, bytes]:
        files: dict[str, bytes] = {}
        for root, _, names in os.walk(cache_dir):
            for name in names:
                path = Path(root, name)
                if not path.is_symlink():
                    files[str(path.relative_to(cache_dir))] = path.read_bytes()
        return files

    async with MsiV2Client(**_client_kwargs(emulator, cache_dir)) as client:
        tokens = [await client.acquire_token(scope) for scope in scopes]
        tokens.append(await client.acquire_token(SCOPE, force_refresh=True))
        while_open = scan()
    after_close = scan()
    assert emulator.stats["token"] == 4
    assert len({token.access_token for token in tokens}) == 4
    binding_file, _ = _slot_paths(emulator, cache_dir)
    assert {KEY_FILE, binding_file.name} <= set(after_close)  # the scan looked in the right place
    leaks = []  # (file, token number, part): never the secret itself, so a failure does not print it
    for files in (while_open, after_close):
        for name, data in files.items():
            for number, token in enumerate(tokens):
                _, payload, signature = token.access_token.split(".")
                assert len(signature) > 40
                leaks += [(name, number, "signature")] if signature.encode() in data else []
                leaks += [(name, number, "payload")] if payload.encode() in data else []
    assert leaks == []
