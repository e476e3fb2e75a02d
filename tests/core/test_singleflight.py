"""Single-flight rules, with no network: counts of work runs under concurrency, cancellation and failure."""

from __future__ import annotations

import gc
import warnings

import anyio
import pytest

from msiv2_async._clock import FakeClock
from msiv2_async._singleflight import SingleFlight

pytestmark = pytest.mark.anyio


class Work:
    def __init__(self, delay: float = 0.01, fail: bool = False) -> None:
        self.runs = 0
        self.delay = delay
        self.fail = fail

    async def __call__(self) -> str:
        self.runs += 1
        await anyio.sleep(self.delay)
        if self.fail:
            raise RuntimeError(f"failure {self.runs}")
        return f"value {self.runs}"


async def test_concurrent_callers_share_one_run() -> None:
    flights: SingleFlight[str, str] = SingleFlight(FakeClock())
    work = Work()
    results: list[str] = []

    async def call() -> None:
        results.append(await flights.run("k", work))

    async with anyio.create_task_group() as group:
        for _ in range(1_000):
            group.start_soon(call)
    assert work.runs == 1
    assert results == ["value 1"] * 1_000


async def test_different_keys_fly_separately() -> None:
    flights: SingleFlight[str, str] = SingleFlight(FakeClock())
    work = Work()
    async with anyio.create_task_group() as group:
        for key in "abc":
            group.start_soon(flights.run, key, work)
    assert work.runs == 3


async def test_an_exception_reaches_every_waiter_and_is_replayed_within_the_ttl() -> None:
    clock = FakeClock()
    flights: SingleFlight[str, str] = SingleFlight(clock, failure_ttl=5.0)
    work = Work(fail=True)
    errors: list[BaseException] = []

    async def call() -> None:
        try:
            await flights.run("k", work)
        except RuntimeError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as group:
        for _ in range(100):
            group.start_soon(call)
    assert len(errors) == 100
    assert work.runs == 1
    with pytest.raises(RuntimeError, match="failure 1"):
        await flights.run("k", work)
    clock.advance(5.0)
    with pytest.raises(RuntimeError, match="failure 2"):
        await flights.run("k", work)
    assert work.runs == 2


async def test_forget_failure_lets_the_next_call_fly_at_once() -> None:
    flights: SingleFlight[str, str] = SingleFlight(FakeClock(), failure_ttl=60.0)
    work = Work(fail=True)
    with pytest.raises(RuntimeError):
        await flights.run("k", work)
    flights.forget_failure("k")
    work.fail = False
    assert await flights.run("k", work) == "value 2"


async def test_a_cancelled_leader_hands_the_flight_to_a_waiter() -> None:
    flights: SingleFlight[str, str] = SingleFlight(FakeClock())
    work = Work(delay=0.2)
    results: list[str] = []

    async def leader() -> None:
        with anyio.move_on_after(0.05):
            await flights.run("k", work)

    async def follower() -> None:
        results.append(await flights.run("k", work))

    async with anyio.create_task_group() as group:
        group.start_soon(leader)
        await anyio.sleep(0.01)
        for _ in range(10):
            group.start_soon(follower)
    assert work.runs == 2
    assert results == ["value 2"] * 10
    assert not flights.in_flight("k")


async def test_cancellation_is_not_remembered_as_a_failure() -> None:
    flights: SingleFlight[str, str] = SingleFlight(FakeClock(), failure_ttl=60.0)
    work = Work(delay=0.2)
    with anyio.move_on_after(0.01):
        await flights.run("k", work)
    work.delay = 0
    assert await flights.run("k", work) == "value 2"


async def test_no_unretrieved_exception_warnings_and_nothing_left_in_flight() -> None:
    flights: SingleFlight[str, str] = SingleFlight(FakeClock(), failure_ttl=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            with pytest.raises(RuntimeError):
                await flights.run("k", Work(fail=True))
        gc.collect()
    assert not flights.in_flight("k")
    assert flights.flights_started == 3


async def test_many_waiters_are_woken_in_cohorts_over_several_loop_iterations() -> None:
    from msiv2_async._singleflight import WAKE_BATCH

    flights: SingleFlight[str, str] = SingleFlight(FakeClock())
    gate = anyio.Event()
    ticks = 0
    seen: list[int] = []

    async def work() -> str:
        await gate.wait()
        return "value"

    async def ticker() -> None:
        nonlocal ticks
        while len(seen) < 4 * WAKE_BATCH:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async def call() -> None:
        assert await flights.run("k", work) == "value"
        seen.append(ticks)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for _ in range(4 * WAKE_BATCH):
                group.start_soon(call)
            await anyio.wait_all_tasks_blocked()
            group.start_soon(ticker)
            gate.set()
    assert len(seen) == 4 * WAKE_BATCH
    assert len(set(seen)) >= 3  # not all in one go: the loop ran in between


async def test_a_cohort_whose_waiters_all_left_does_not_strand_the_next_one() -> None:
    from msiv2_async._singleflight import WAKE_BATCH

    flights: SingleFlight[str, str] = SingleFlight(FakeClock())
    gate = anyio.Event()
    results: list[str] = []

    async def work() -> str:
        await gate.wait()
        return "value"

    async def call() -> None:
        results.append(await flights.run("k", work))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(call)  # the leader
            await anyio.wait_all_tasks_blocked()
            with anyio.CancelScope() as leaving:
                async with anyio.create_task_group() as quitters:
                    for _ in range(2 * WAKE_BATCH):  # fill the first cohorts, then leave
                        quitters.start_soon(call)
                    await anyio.wait_all_tasks_blocked()
                    leaving.cancel()
            for _ in range(WAKE_BATCH + 3):  # later cohorts
                group.start_soon(call)
            await anyio.wait_all_tasks_blocked()
            gate.set()
    assert results == ["value"] * (WAKE_BATCH + 4)
