"""RELIABILITY.md §7 rows 51-64: concurrency, cross-process persistence, key and clock faults, event
loops and fork, and DEBUG logging over the whole matrix.

Windows (negative cache, refresh damping, throttling) run on the fake clock; worker processes, kills and
event loops are real. Figures of RELIABILITY.md §8 measured here (cold start, warm path, outage storm,
multi-process, file kills) go to :mod:`._figures` for ``test_zz_figures.py`` to print.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import importlib.util
import json
import logging
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from msiv2_async import (
    NO_RETRY,
    BackendError,
    FakeClock,
    FileBindingStore,
    ImdsError,
    MsiV2Client,
    MsiV2Error,
    MsiV2TimeoutError,
    MtlsPopToken,
    SoftwareBackend,
    StsThrottledError,
    _store,
    create_mtls_client,
)
from msiv2_async._binding import cnf_thumbprint
from msiv2_async.backends import software
from msiv2_async.emulator import Emulator, Fault

from ._figures import record
from .conftest import LEDGER, record_error

SCOPE = "https://graph.microsoft.com/.default"
HERE = Path(__file__).resolve().parent
MP_WORKER = HERE / "_mp_worker.py"
FORK_WORKER = HERE / "_fork_worker.py"
LOCK_HOLDER = HERE.parent / "cache" / "_lock_holder.py"
WRITER = HERE.parent / "cache" / "_writer.py"
KEY_FILE = "software-key.pem"
PROCESS_TIMEOUT = 90.0


@pytest.fixture(autouse=True)
def emulator_defaults(emulator: Emulator) -> Iterator[None]:
    """Lifetimes and TLS knobs a test changed on the shared emulator are put back afterwards."""
    lifetimes = emulator.certificate_lifetime, emulator.token_lifetime
    yield
    emulator.certificate_lifetime, emulator.token_lifetime = lifetimes
    emulator.reject_client_certificates(0)
    emulator.clear_faults()


def counts(emulator: Emulator) -> tuple[int, int, int]:
    stats = emulator.stats
    return stats["getplatformmetadata"], stats["issuecredential"], stats["token"]


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` on the real clock (background work does real I/O)."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


class JumpingClock(FakeClock):
    """A fake clock whose wall time can jump on its own (the monotonic reading never goes back)."""

    def jump_wall(self, seconds: float) -> None:
        self._wall += seconds


@contextlib.asynccontextmanager
async def stall_monitor() -> AsyncIterator[dict[str, float]]:
    """The longest gap between 1 ms ticks of a task on the same loop, in ms, while the block runs."""
    result = {"longest_ms": 0.0}

    async def tick() -> None:
        last = time.perf_counter()
        while True:
            await anyio.sleep(0.001)
            now = time.perf_counter()
            result["longest_ms"] = max(result["longest_ms"], (now - last - 0.001) * 1000)
            last = now

    async with anyio.create_task_group() as group:
        group.start_soon(tick)
        try:
            yield result
        finally:
            group.cancel_scope.cancel()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def issued_der(emulator: Emulator, index: int) -> bytes:
    return emulator.issued_certificates[index].public_bytes(serialization.Encoding.DER)


def persisted_certificate(cache_dir: Path) -> bytes:
    import base64

    (binding_file,) = cache_dir.glob("binding-*.json")
    return base64.b64decode(json.loads(binding_file.read_bytes())["certificate"])


@contextlib.contextmanager
def typed_only(seen: list[BaseException]) -> Iterator[None]:
    """Count any non-MsiV2Error escaping the block as an untyped escape (the test then fails on it)."""
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, MsiV2Error | AssertionError):
            record_error(seen, exc)
        raise


# --- in-process single flight -----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.fault_row(51)
@pytest.mark.parametrize("callers", [1, 100, 1_000, 10_000])
async def test_row51_concurrent_cold_callers_share_one_flight_and_one_pair(
    emulator: Emulator, client_kwargs: dict[str, Any], callers: int, anyio_backend: str
) -> None:
    results: list[MtlsPopToken] = []
    latencies: list[float] = []

    async def one() -> None:
        started = time.perf_counter()
        results.append(await client.acquire_token(SCOPE))
        latencies.append(time.perf_counter() - started)

    async with MsiV2Client(**client_kwargs) as client:
        async with stall_monitor() as stall, anyio.create_task_group() as group:
            for _ in range(callers):
                group.start_soon(one)
        cold = counts(emulator)
        if callers == 10_000:  # §8.3 warm path: the same client, 10 000 more calls, no network
            started = time.perf_counter()
            for _ in range(10_000):
                await client.acquire_token(SCOPE)
            rate = 10_000 / (time.perf_counter() - started)
            assert counts(emulator) == cold
            record(
                "warm path",
                f"10 000 calls ({anyio_backend}): network requests / calls per second",
                f"0 / {rate:,.0f}",
            )
    assert cold == (1, 1, 1)
    assert len(results) == callers
    assert len({(t.access_token, t.binding_certificate.thumbprint_sha256) for t in results}) == 1
    assert cnf_thumbprint(results[0].access_token) == results[0].binding_certificate.thumbprint_sha256
    p50, p99 = (percentile(latencies, share) * 1000 for share in (0.5, 0.99))
    requests = "/".join(map(str, cold))
    summary = f"metadata/issuecredential/token {requests}, p50 {p50:.0f} ms, p99 {p99:.0f} ms"
    record(
        "cold start",
        f"C={callers:>6} ({anyio_backend})",
        f"{summary}, longest loop stall {stall['longest_ms']:.0f} ms",
    )


@pytest.mark.anyio
@pytest.mark.fault_row(52)
async def test_row52_outage_storm_runs_one_retry_sequence_and_replays_its_error(
    emulator: Emulator,
    client_kwargs: dict[str, Any],
    clock: FakeClock,
    seen: list[BaseException],
    anyio_backend: str,
) -> None:
    emulator.inject("getplatformmetadata", *[Fault(status=503)] * 12)
    deadline = 30.0
    errors: list[MsiV2Error] = []
    times: list[float] = []

    async def one() -> None:
        try:
            await client.acquire_token(SCOPE)
        except MsiV2Error as exc:
            errors.append(exc)
            times.append(time.monotonic() - started)

    async with MsiV2Client(**client_kwargs, timeout=deadline) as client:
        started = time.monotonic()
        async with anyio.create_task_group() as group:
            for _ in range(10_000):
                group.start_soon(one)
        assert len(errors) == 10_000
        assert len({id(error) for error in errors}) == 1  # every caller got the very same error
        error = record_error(seen, errors[0])
        assert isinstance(error, ImdsError)
        assert error.status == 503
        assert emulator.stats["getplatformmetadata"] == 4  # one retry sequence: 1 + 3 retries
        assert clock.sleeps == [1.0, 2.0, 4.0]
        assert max(times) < deadline
        tb_frames = len(traceback.extract_tb(error.__traceback__))

        # New callers inside the negative-cache window (5 s): the same error, no request.
        async with anyio.create_task_group() as group:
            for _ in range(1_000):
                group.start_soon(one)
        assert emulator.stats["getplatformmetadata"] == 4
        assert len(errors) == 11_000
        assert all(e is error for e in errors)
        clock.advance(5.0)
        with pytest.raises(ImdsError):  # the window is over: a new retry sequence starts
            await client.acquire_token(SCOPE)
        assert emulator.stats["getplatformmetadata"] == 8
    record(
        "outage storm",
        f"10 000 callers vs IMDS 503 ({anyio_backend})",
        f"IMDS requests 4, first/last error after {min(times):.2f}/{max(times[:10_000]):.2f} s "
        f"(deadline {deadline:.0f} s), requests in the negative-cache window 0 (1 000 callers)",
    )
    record(
        "outage storm",
        f"traceback frames of the replayed error after 11 000 raises ({anyio_backend})",
        tb_frames,
    )


@pytest.mark.anyio
async def test_replayed_error_keeps_a_bounded_traceback(
    emulator: Emulator, client_kwargs: dict[str, Any]
) -> None:
    """Not a §7 row: found by row 52. A replayed error must not accumulate the frames of every replay."""
    emulator.inject("token", Fault(status=429, headers={"Retry-After": "60"}))
    async with MsiV2Client(**client_kwargs) as client:
        for _ in range(1_000):
            with pytest.raises(StsThrottledError) as caught:
                await client.acquire_token(SCOPE)
    assert len(traceback.extract_tb(caught.value.__traceback__)) < 100


@pytest.mark.anyio
@pytest.mark.fault_row(53)
@pytest.mark.parametrize("endpoint", ["getplatformmetadata", "token"])
async def test_row53_cancelled_leader_leaves_waiters_a_working_flight(
    emulator: Emulator,
    client_kwargs: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    recwarn: pytest.WarningsRecorder,
    endpoint: str,
) -> None:
    emulator.inject(endpoint, Fault(delay=0.5, response_fields={}))  # the normal answer, 0.5 s late
    results: list[MtlsPopToken] = []
    outcome: dict[str, Any] = {}
    leader_scope = anyio.CancelScope()

    async def leader() -> None:
        with leader_scope:
            outcome["token"] = await client.acquire_token(SCOPE)
        outcome["cancelled"] = leader_scope.cancelled_caught

    async def waiter() -> None:
        results.append(await client.acquire_token(SCOPE))

    async with MsiV2Client(**client_kwargs) as client:
        async with anyio.create_task_group() as group:
            group.start_soon(leader)
            await until(lambda: emulator.stats[endpoint] == 1)  # the emulator holds the leader's request
            for _ in range(20):
                group.start_soon(waiter)
            await anyio.sleep(0.05)
            leader_scope.cancel()
        assert outcome == {"cancelled": True}
        assert len(results) == 20
        assert len({token.access_token for token in results}) == 1
        with anyio.fail_after(2):  # nothing stuck: a cache hit
            again = await client.acquire_token(SCOPE)
        assert again.access_token == results[0].access_token
    gc.collect()
    expected = {"getplatformmetadata": (2, 1, 1), "token": (1, 1, 2)}[endpoint]
    assert counts(emulator) == expected  # the abandoned request is redone once by a waiter
    assert "never retrieved" not in caplog.text
    assert not [w for w in recwarn if "never" in str(w.message)]


@pytest.mark.anyio
@pytest.mark.fault_row(54)
@pytest.mark.parametrize("failing", ["imds", "sts"])
async def test_row54_due_token_is_served_while_refresh_fails_and_retried_every_30s(
    emulator: Emulator, client_kwargs: dict[str, Any], clock: FakeClock, failing: str
) -> None:
    if failing == "imds":
        emulator.certificate_lifetime = timedelta(hours=2)  # the certificate falls due after about 1 h
    async with MsiV2Client(**{**client_kwargs, "retry": NO_RETRY}) as client:
        token = await client.acquire_token(SCOPE)
        certificate = token.binding_certificate
        if failing == "imds":
            lifetime = certificate.not_after.timestamp() - certificate.not_before.timestamp()
            due_at = certificate.not_before.timestamp() + lifetime / 2
            emulator.inject("getplatformmetadata", *[Fault(status=503)] * 50)
            watched = "getplatformmetadata"
        else:
            assert token.refresh_on is not None
            due_at = token.refresh_on
            emulator.inject("token", *[Fault(status=500)] * 50)
            watched = "token"
        clock.advance(due_at + 1 - clock.time())
        base = emulator.stats[watched]

        def finished() -> int:
            stats = client.cache_stats
            return stats["background_refreshes"] + stats["failed_refreshes"]

        def last_attempt() -> float | None:
            (entry,) = client._tokens.entries.values()
            return entry.last_refresh_attempt

        started = requests = 0
        for second in range(121):  # two minutes of one call per second
            mark = last_attempt()
            served = await client.acquire_token(SCOPE)
            assert served.access_token == token.access_token  # the still-valid token, at once
            if last_attempt() != mark:  # this call started a background refresh: let it end
                started += 1
                expected = started
                await until(lambda: finished() == expected)  # noqa: B023 - awaited right here
            requests = emulator.stats[watched] - base
            assert started <= 1 + second // 30, f"{started} refresh attempts after {second} s"
            assert requests <= started
            clock.advance(1.0)
        assert started >= 4  # retried every 30 s, not given up
        assert requests >= 2
    record(
        "refresh damping",
        f"{failing} failing, calls every 1 s for 120 s: refresh attempts / requests",
        f"{started} / {requests}",
    )


@pytest.mark.anyio
@pytest.mark.fault_row(55)
async def test_row55_rotation_during_in_flight_requests_keeps_every_pair_consistent(
    emulator: Emulator, client_kwargs: dict[str, Any], clock: FakeClock
) -> None:
    emulator.certificate_lifetime = timedelta(hours=2)
    before = len(emulator.resource_log)
    statuses: list[int] = []
    async with MsiV2Client(**client_kwargs) as client:
        async with create_mtls_client(client, SCOPE) as http:
            first = await http.get(emulator.resource_url)
            assert first.status_code == 200
            emulator.certificate_lifetime = timedelta(days=7)  # the next certificate is not due at once
            old = await client.get_binding_certificate()
            lifetime = old.not_after.timestamp() - old.not_before.timestamp()
            clock.advance(old.not_before.timestamp() + lifetime / 2 + 1 - clock.time())

            async def one(index: int) -> None:
                await anyio.sleep(index * 0.003)
                statuses.append((await http.get(emulator.resource_url)).status_code)

            async with anyio.create_task_group() as group:
                for index in range(300):
                    group.start_soon(one, index)
        new = await client.get_binding_certificate()
    assert new != old
    assert statuses == [200] * 300
    entries = emulator.resource_log[before:]
    assert len(entries) == 301
    assert all(entry["presented_x5t"] == entry["cnf_x5t"] is not None for entry in entries)
    seen_certificates = {entry["presented_x5t"] for entry in entries}
    assert seen_certificates == {old.thumbprint_sha256, new.thumbprint_sha256}
    assert counts(emulator) == (2, 2, 2)
    old_share = sum(entry["presented_x5t"] == old.thumbprint_sha256 for entry in entries)
    record(
        "binding",
        "rotation under load: consistent (token, cert) pairs at the resource",
        f"301/301 (old certificate {old_share}, new {301 - old_share})",
    )


# --- cross-process persistence ----------------------------------------------------------------------------


def _child_env(**extra: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("MSIV2_ASYNC_") and name != "AZURE_POD_IDENTITY_AUTHORITY_HOST"
    }
    env.update(extra)
    return env


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


def _start_worker(
    processes: list[subprocess.Popen[str]],
    emulator: Emulator,
    cache_dir: Path,
    *,
    tasks: int,
    lock: bool,
    start_at: float = 0.0,
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            str(MP_WORKER),
            str(cache_dir),
            emulator.imds_url,
            emulator.ca_bundle_path,
            emulator.allowed_token_host,
            str(tasks),
            "1" if lock else "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(FAULT_TEST_START_AT=str(start_at)),
    )
    processes.append(process)
    return process


def _worker_result(process: subprocess.Popen[str]) -> dict[str, Any]:
    stdout, stderr = process.communicate(timeout=PROCESS_TIMEOUT)
    assert process.returncode == 0, f"worker failed: {stdout.strip()} {stderr.strip()[-2000:]}"
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def _has_open(pid: int, path: Path) -> bool:
    real = os.path.realpath(path)
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == real:
                    return True
    return False


def _cold_start(
    processes: list[subprocess.Popen[str]], emulator: Emulator, cache_dir: Path, *, lock: bool
) -> tuple[int, list[dict[str, Any]]]:
    emulator.reset_stats()
    start_at = time.time() + 2.0
    workers = [
        _start_worker(processes, emulator, cache_dir, tasks=1_000, lock=lock, start_at=start_at)
        for _ in range(8)
    ]
    results = [_worker_result(worker) for worker in workers]
    return emulator.stats["issuecredential"], results


@pytest.mark.fault_row(56)
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see who waits on the lock")
def test_row56_eight_cold_processes_mint_once_with_the_lock_and_survive_a_killed_holder(
    emulator: Emulator, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    with_lock, results = _cold_start(processes, emulator, tmp_path / "locked", lock=True)
    assert with_lock == 1
    assert len({thumbprint for result in results for thumbprint in result["thumbprints"]}) == 1
    assert all(result["bound"] and result["tasks"] == 1_000 for result in results)
    assert sorted(result["mints"] for result in results) == [0] * 7 + [1]

    without_lock, results = _cold_start(processes, emulator, tmp_path / "unlocked", lock=False)
    assert 1 <= without_lock <= 8
    assert all(result["bound"] for result in results)

    # A process holding the mint lock is SIGKILLed: the waiting workers proceed, one mints.
    emulator.reset_stats()
    cache_dir = tmp_path / "killed"
    slot = MsiV2Client(
        imds_endpoint=emulator.imds_url,
        ca_bundle=emulator.ca_bundle_path,
        allowed_token_hosts=[emulator.allowed_token_host],
        environ={},
    )._slot
    lock_file = Path(FileBindingStore(str(cache_dir))._path(slot, ".lock"))
    holder = subprocess.Popen(
        [sys.executable, str(LOCK_HOLDER), str(lock_file)], stdout=subprocess.PIPE, text=True
    )
    processes.append(holder)
    assert holder.stdout is not None
    assert holder.stdout.readline() == "locked\n"
    workers = [_start_worker(processes, emulator, cache_dir, tasks=100, lock=True) for _ in range(3)]
    wait_until = time.monotonic() + 30
    while not all(_has_open(worker.pid, lock_file) for worker in workers):
        assert all(worker.poll() is None for worker in workers), "a worker ended while the lock was held"
        assert time.monotonic() < wait_until, "the workers never opened the mint lock"
        time.sleep(0.02)
    time.sleep(0.3)
    assert emulator.stats["issuecredential"] == 0  # all blocked behind the holder
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    killed_at = time.monotonic()
    results = [_worker_result(worker) for worker in workers]
    recovery = time.monotonic() - killed_at
    assert recovery < 10  # released by the kill, not by the 60 s lock timeout
    assert emulator.stats["issuecredential"] == 1
    assert len({thumbprint for result in results for thumbprint in result["thumbprints"]}) == 1
    record("multi-process", "P=8 x 1 000 tasks cold, issuecredential with the lock", with_lock)
    record("multi-process", "P=8 x 1 000 tasks cold, issuecredential without the lock", without_lock)
    record("multi-process", "recovery after the lock holder was SIGKILLed (s)", round(recovery, 2))


_PERSISTED_FAULTS = [
    "corrupt",
    "truncated",
    "wrong_schema",
    "symlink",
    "mode_0644",
    "other_owner",
    "key_corrupt",
]


@pytest.mark.anyio
@pytest.mark.fault_row(57)
@pytest.mark.parametrize("variant", _PERSISTED_FAULTS)
async def test_row57_unusable_persisted_files_are_treated_as_absent_and_replaced(
    emulator: Emulator, client_kwargs: dict[str, Any], tmp_path: Path, variant: str
) -> None:
    cache_dir = tmp_path / "cache"
    async with MsiV2Client(**client_kwargs, cache_dir=str(cache_dir)) as first:
        old = await first.acquire_token(SCOPE)
    (binding_file,) = cache_dir.glob("binding-*.json")
    original = binding_file.read_bytes()
    target = tmp_path / "elsewhere" / "valid.json"
    if variant == "corrupt":
        binding_file.write_bytes(random.Random(57).randbytes(400))
    elif variant == "truncated":
        binding_file.write_bytes(original[: len(original) // 2])
    elif variant == "wrong_schema":
        binding_file.write_bytes(json.dumps({**json.loads(original), "version": 2}).encode())
    elif variant == "symlink":
        target.parent.mkdir(mode=0o700)
        target.write_bytes(original)
        target.chmod(0o600)
        binding_file.unlink()
        binding_file.symlink_to(target)
    elif variant == "mode_0644":
        binding_file.chmod(0o644)
    elif variant == "other_owner":
        os.chown(binding_file, 12345, 12345)
    else:
        (cache_dir / KEY_FILE).write_bytes(
            b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"
        )
    async with MsiV2Client(**client_kwargs, cache_dir=str(cache_dir)) as second:
        new = await second.acquire_token(SCOPE)
        stats = second.cache_stats
    assert stats["persisted_certificates_loaded"] == 0  # the file was not used
    assert counts(emulator) == (2, 2, 2)  # re-minted, no crash
    assert new.binding_certificate != old.binding_certificate
    info = binding_file.lstat()  # replaced safely: a regular 0600 file of ours naming the new certificate
    assert stat.S_ISREG(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.geteuid()
    assert persisted_certificate(cache_dir) == new.binding_certificate.der
    if variant == "symlink":
        assert target.read_bytes() == original  # neither read nor written through the link


def _load_writer() -> Any:
    spec = importlib.util.spec_from_file_location("msiv2_fault_tests_writer", WRITER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.fault_row(58)
def test_row58_kill_9_during_writes_leaves_the_old_or_the_new_file_never_a_partial_one(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    report = _load_writer().kill_during_writes(
        directory, max_cycles=200, budget_seconds=15.0, seed=58, env=_child_env()
    )
    assert (report.partial, report.regressions) == (0, 0)
    assert report.cycles >= 100
    assert report.kills_mid_write >= 1  # kills did land inside writes
    record(
        "files",
        "kill -9 during write: cycles / partial files / kills inside a write",
        f"{report.cycles} / {report.partial} / {report.kills_mid_write}",
    )


def _can_make_read_only() -> bool:
    """Whether :func:`read_only` works here: always for a normal user, for root only with ``chattr +i``."""
    if os.geteuid() != 0:
        return True
    if shutil.which("chattr") is None:
        return False
    probe = tempfile.mkdtemp(prefix="msiv2-chattr-probe-")
    try:
        if subprocess.run(["chattr", "+i", probe], capture_output=True).returncode != 0:
            return False
        subprocess.run(["chattr", "-i", probe], capture_output=True, check=True)
        return True
    finally:
        os.rmdir(probe)


_READ_ONLY = pytest.mark.skipif(
    not _can_make_read_only(), reason="as root a read-only directory needs a working chattr +i"
)


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """Make ``directory`` refuse new files: mode 0500, or (as root, who ignores modes) ``chattr +i``."""
    if os.geteuid() != 0:
        directory.chmod(0o500)
        try:
            yield
        finally:
            directory.chmod(0o700)
        return
    subprocess.run(["chattr", "+i", str(directory)], capture_output=True, check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


@pytest.mark.anyio
@pytest.mark.fault_row(59)
@pytest.mark.parametrize(
    "variant",
    [
        pytest.param("read_only_cold", marks=_READ_ONLY),
        pytest.param("read_only_warm", marks=_READ_ONLY),
        "disk_full_warm",
    ],
)
async def test_row59_failed_persistence_write_still_returns_the_token_and_warns_once(
    emulator: Emulator,
    client_kwargs: dict[str, Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    seen: list[BaseException],
    variant: str,
) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(mode=0o700)
    if variant != "read_only_cold":  # warm: the key is already on disk, the certificate is not
        async with MsiV2Client(**client_kwargs, cache_dir=str(cache_dir)) as warm_up:
            await warm_up.acquire_token(SCOPE)
        for binding_file in cache_dir.glob("binding-*.json"):
            binding_file.unlink()
    if variant == "disk_full_warm":

        def disk_full(path: str, data: bytes) -> None:
            raise OSError(errno.ENOSPC, "No space left on device", path)

        monkeypatch.setattr(_store, "write_private_file", disk_full)
        monkeypatch.setattr(software, "write_private_file", disk_full)
        guard: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    else:
        guard = read_only(cache_dir)
    emulator.reset_stats()

    def warnings() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name.startswith("msiv2_async") and r.levelno >= logging.WARNING
        ]

    with guard, typed_only(seen):
        caplog.clear()
        async with MsiV2Client(**client_kwargs, cache_dir=str(cache_dir)) as client:
            token = await client.acquire_token(SCOPE)
            first = warnings()
            for _ in range(5):
                assert (await client.acquire_token(SCOPE)).access_token == token.access_token
            await client.acquire_token(SCOPE, force_refresh=True)
            await client.acquire_token("https://vault.azure.net")
        assert first  # the failed write is reported ...
        assert len(set(first)) == len(first)  # ... once per thing that could not be written
        assert warnings() == first  # and never again for the calls the memory cache serves
        assert counts(emulator) == (1, 1, 3)  # one certificate, kept in memory


class FlakyKeyBackend(SoftwareBackend):
    """A software backend whose key 'disappears' on demand: signing fails, as with a dead KeyGuard key.

    ``recoverable``: a regenerated key (``discard_key`` then ``open_key``) works again; otherwise the key
    store itself is dead and every key fails.
    """

    def __init__(self, *, recoverable: bool) -> None:
        super().__init__()
        self.recoverable = recoverable
        self.key_lost = False
        self.signatures = 0
        self.discarded = 0

    def sign(self, data: bytes) -> bytes:
        self.signatures += 1
        if self.key_lost:
            raise RuntimeError("NTE_BAD_KEYSET: the key container is gone")
        return super().sign(data)

    def discard_key(self) -> None:
        self.discarded += 1
        discard = getattr(super(), "discard_key", None)
        if discard is not None:
            discard()
        else:
            self._key = None
        if self.recoverable:
            self.key_lost = False


async def _lose_key_then_reject(
    client: MsiV2Client, emulator: Emulator, backend: FlakyKeyBackend
) -> MtlsPopToken:
    """Warm up, lose the key, and make the STS reject the certificate so that a re-mint is needed."""
    token = await client.acquire_token(SCOPE)
    backend.key_lost = True
    body = json.dumps({"error": "invalid_client", "error_codes": [1000611], "error_description": "key gone"})
    emulator.inject("token", Fault(status=401, body=body))
    return token


@pytest.mark.anyio
@pytest.mark.fault_row(60)
async def test_row60_key_lost_for_good_is_a_typed_backend_error_without_a_loop(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException]
) -> None:
    backend = FlakyKeyBackend(recoverable=False)
    async with MsiV2Client(**client_kwargs, backend=backend, failure_cache_seconds=0) as client:
        await _lose_key_then_reject(client, emulator, backend)
        with pytest.raises(BackendError, match="csr_sign") as caught:
            await client.acquire_token(SCOPE, force_refresh=True)
        record_error(seen, caught.value)
        attempts = backend.signatures - 1
        assert 1 <= attempts <= 2  # at most one regeneration, then the typed error: no loop
        assert emulator.stats["issuecredential"] == 1
        with pytest.raises(BackendError):  # the next call: the same, bounded
            await client.acquire_token(SCOPE)
        assert backend.signatures - 1 - attempts == attempts
    record(
        "lifecycle",
        "key store dead after warm-up",
        f"typed BackendError after {attempts} signing attempt(s) per acquisition, no loop",
    )


@pytest.mark.anyio
@pytest.mark.fault_row(60)
async def test_row60_key_lost_after_warm_up_regenerates_the_key_purges_and_remints_once(
    emulator: Emulator, client_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    backend = FlakyKeyBackend(recoverable=True)
    cache_dir = tmp_path / "cache"
    async with MsiV2Client(**client_kwargs, backend=backend, cache_dir=str(cache_dir)) as client:
        first = await _lose_key_then_reject(client, emulator, backend)
        old_key = (cache_dir / KEY_FILE).read_bytes()
        token = await client.acquire_token(SCOPE, force_refresh=True)
        again = await client.acquire_token(SCOPE)
    assert backend.discarded == 1  # the key was regenerated once
    assert token.binding_certificate != first.binding_certificate
    assert again.access_token == token.access_token  # memory: only the new pair
    assert emulator.stats["issuecredential"] == 2  # re-minted once
    assert persisted_certificate(cache_dir) == token.binding_certificate.der  # disk: the old one is gone
    assert (cache_dir / KEY_FILE).read_bytes() != old_key
    public = x509.load_der_x509_certificate(token.binding_certificate.der).public_key()
    persisted_key = serialization.load_pem_private_key((cache_dir / KEY_FILE).read_bytes(), password=None)
    assert isinstance(public, rsa.RSAPublicKey)
    assert isinstance(persisted_key, rsa.RSAPrivateKey)
    assert public.public_numbers() == persisted_key.public_key().public_numbers()
    record(
        "lifecycle",
        "key lost after warm-up, new key usable",
        "key regenerated once, certificate re-minted once",
    )


@pytest.mark.anyio
@pytest.mark.fault_row(61)
async def test_row61_persisted_certificate_of_another_key_is_deleted_and_reminted(
    emulator: Emulator, client_kwargs: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache_dir = tmp_path / "cache"
    async with MsiV2Client(**client_kwargs, cache_dir=str(cache_dir)) as first:
        old = await first.acquire_token(SCOPE)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = cache_dir / KEY_FILE
    key_file.write_bytes(
        other_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    async with MsiV2Client(**client_kwargs, cache_dir=str(cache_dir)) as second:
        new = await second.acquire_token(SCOPE)
        assert second.cache_stats["persisted_certificates_loaded"] == 0
    assert "orphaned" in caplog.text
    assert counts(emulator) == (2, 2, 2)
    assert new.binding_certificate != old.binding_certificate
    public = x509.load_der_x509_certificate(new.binding_certificate.der).public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.public_numbers() == other_key.public_key().public_numbers()
    assert persisted_certificate(cache_dir) == new.binding_certificate.der


# --- clocks -----------------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.fault_row(62)
@pytest.mark.parametrize("variant", ["local_ahead_10min", "local_behind_9min", "wall_jumps_back_1h"])
async def test_row62_clock_skew_and_a_wall_clock_jump_change_no_window(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], variant: str
) -> None:
    offset = {"local_ahead_10min": 600.0, "local_behind_9min": -540.0, "wall_jumps_back_1h": 0.0}[variant]
    clock = JumpingClock(start=time.time() + offset)
    client_kwargs = {**client_kwargs, "clock": clock}
    async with MsiV2Client(**client_kwargs) as client:
        token = await client.acquire_token(SCOPE)  # not rejected as "not yet valid" or expired
        async with await client.resource_client(token) as http:
            assert (await http.get(emulator.resource_url)).status_code == 200
        if variant != "wall_jumps_back_1h":
            return
        emulator.inject("token", Fault(status=429, headers={"Retry-After": "30"}))
        with pytest.raises(StsThrottledError) as caught:
            await client.acquire_token("https://vault.azure.net")
        record_error(seen, caught.value)
        clock.jump_wall(-3600.0)
        assert (await client.acquire_token(SCOPE)).access_token == token.access_token  # still served
        clock.advance(29.0)
        with pytest.raises(StsThrottledError):  # the window neither shrank nor grew with the wall clock
            await client.acquire_token("https://vault.azure.net")
        assert emulator.stats["token"] == 2
        clock.advance(1.001)
        await client.acquire_token("https://vault.azure.net")
        assert emulator.stats["token"] == 3
        emulator.inject("token", Fault(action="hang"))
        started = time.monotonic()
        with pytest.raises(MsiV2TimeoutError):  # deadlines run on the real monotonic clock
            await client.acquire_token("https://management.azure.com", timeout=0.5)
        assert time.monotonic() - started < 1.5


# --- event loops and fork ---------------------------------------------------------------------------------


@pytest.mark.fault_row(63)
@pytest.mark.parametrize(
    ("first", "second"), [("asyncio", "asyncio"), ("asyncio", "trio"), ("trio", "asyncio"), ("trio", "trio")]
)
def test_row63_client_used_from_a_second_event_loop_is_typed_or_works(
    emulator: Emulator, client_kwargs: dict[str, Any], seen: list[BaseException], first: str, second: str
) -> None:
    client = MsiV2Client(**client_kwargs)
    outcomes: list[str] = []

    async def use_first() -> MtlsPopToken:
        return await client.acquire_token(SCOPE)

    async def use_second() -> None:
        for force_refresh in (False, True):
            try:
                await client.acquire_token(SCOPE, force_refresh=force_refresh, timeout=5)
                outcomes.append("token")
            except MsiV2Error as exc:
                record_error(seen, exc)
                outcomes.append("typed error")
        await client.aclose()
        async with MsiV2Client(**client_kwargs) as own:  # one client per loop works
            await own.acquire_token(SCOPE)

    anyio.run(use_first, backend=first)
    started = time.monotonic()
    with typed_only(seen):
        anyio.run(use_second, backend=second)
    assert time.monotonic() - started < 10  # no deadlock
    assert set(outcomes) <= {"token", "typed error"}
    record("event loops", f"client first used on {first}, then on a new {second} loop", ", ".join(outcomes))


@pytest.mark.fault_row(63)
@pytest.mark.parametrize("mode", ["cached", "refresh"])
def test_row63_client_used_after_fork_is_typed_or_works(emulator: Emulator, mode: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(FORK_WORKER),
            emulator.imds_url,
            emulator.ca_bundle_path,
            emulator.allowed_token_host,
            mode,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=_child_env(),
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    child = next(line for line in lines if "result" in line)
    assert lines[-1] == {"child_exit": 0}  # the child finished: no deadlock
    if child["result"] == "untyped":
        LEDGER.untyped_escapes.append(f"after fork ({mode}): {child['error']}")
    if "close_error" in child:
        LEDGER.untyped_escapes.append(f"after fork ({mode}), aclose: {child['close_error']}")
    assert child["result"] in ("token", "typed"), child
    assert "close_error" not in child, child
    if child["result"] == "token" and mode == "cached":
        assert child["same"] is True
    record("event loops", f"client used after fork ({mode})", child.get("error") or child["result"])


# --- logging ----------------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.fault_row(64)
async def test_row64_debug_logging_of_a_whole_run_holds_no_secret(
    emulator: Emulator,
    client_kwargs: dict[str, Any],
    seen: list[BaseException],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    for name in ("msiv2_async", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    async with MsiV2Client(**client_kwargs, cache_dir=str(tmp_path / "cache")) as client:
        token = await client.acquire_token(SCOPE)
        async with create_mtls_client(client, SCOPE) as http:
            assert (await http.get(emulator.resource_url)).status_code == 200
        await client.acquire_token(token_type="bearer")
        emulator.inject("token", Fault(token="truncated"))
        with pytest.raises(MsiV2Error) as caught:
            await client.acquire_token("https://vault.azure.net")
        record_error(seen, caught.value)
        emulator.inject(
            "token",
            Fault(
                status=400, body=json.dumps({"error": "invalid_grant", "access_token": token.access_token})
            ),
        )
        with pytest.raises(MsiV2Error) as caught:
            await client.acquire_token("https://management.azure.com")
        record_error(seen, caught.value)
    secrets = emulator.sentinels()
    assert len(secrets) >= 6  # mtls_pop and bearer tokens, their signatures and uti sentinels, a prefix
    debug = [r for r in caplog.records if r.name.startswith("msiv2_async") and r.levelno == logging.DEBUG]
    assert debug  # DEBUG really was on for the library
    texts = [caplog.text, repr(client), repr(token), str(token)]
    texts += [f"{e!s} {e!r}" for e in seen]
    texts += [p.read_bytes().decode("latin-1") for p in (tmp_path / "cache").iterdir() if p.is_file()]
    leaks = [secret for secret in secrets for text in texts if secret in text]
    assert leaks == []
