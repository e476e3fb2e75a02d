"""Single-flight: concurrent callers with the same key share one execution of the work.

- The first caller (the leader) runs the work; the others wait for its outcome.
- If the leader is cancelled, the flight is abandoned, not failed: one waiter becomes the new leader
  and runs the work again, so a cancelled caller never cancels or poisons the flight for the others.
- An exception reaches every waiter of that flight, and is remembered for ``failure_ttl`` seconds
  (monotonic; an error's own ``retry_after`` instead, capped at one hour) so that an outage does not
  turn into a storm of new flights.
- No futures are created, so there is never an "exception was never retrieved" warning, and no lock
  is held across an ``await`` of the work.
- Waiters are woken in cohorts of :data:`WAKE_BATCH`: the first waiter of a cohort to resume wakes
  the next cohort, so 10,000 waiters resume over many event-loop iterations instead of stalling the
  loop in one (a cohort whose waiters all left is skipped).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, TypeVar

import anyio

from ._clock import Clock

MAX_FAILURE_TTL = 3600.0
WAKE_BATCH = 64
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class _Cohort:
    done: anyio.Event = field(default_factory=anyio.Event)
    waiting: int = 0
    relayed: bool = False


@dataclass
class _Flight(Generic[V]):
    cohorts: list[_Cohort] = field(default_factory=lambda: [_Cohort()])
    value: V | None = None
    error: BaseException | None = None
    traceback: TracebackType | None = None
    abandoned: bool = False
    finished: bool = False

    def join(self) -> tuple[int, _Cohort]:
        cohort = self.cohorts[-1]
        if cohort.waiting >= WAKE_BATCH:
            cohort = _Cohort()
            self.cohorts.append(cohort)
        cohort.waiting += 1
        return len(self.cohorts) - 1, cohort

    def wake_from(self, index: int) -> None:
        """Wake cohort ``index``, and the ones after it while a cohort has nobody left to relay."""
        for cohort in self.cohorts[index:]:
            cohort.done.set()
            if cohort.waiting:
                return

    def leave(self, index: int, cohort: _Cohort) -> None:
        """A waiter stops waiting (woken or cancelled); once the flight is over, the cohort relays."""
        cohort.waiting -= 1
        if self.finished and not cohort.relayed:
            cohort.relayed = True
            self.wake_from(index + 1)


@dataclass(frozen=True)
class _Failure:
    error: BaseException
    until: float
    traceback: TracebackType | None = None


class SingleFlight(Generic[K, V]):
    """Deduplicates concurrent work per key; counts flights for observability."""

    def __init__(self, clock: Clock, failure_ttl: float = 5.0) -> None:
        self._clock = clock
        self._failure_ttl = failure_ttl
        self._flights: dict[K, _Flight[V]] = {}
        self._failures: dict[K, _Failure] = {}
        self.flights_started = 0

    def forget_failure(self, key: K) -> None:
        """Drop a remembered failure so the next call flies again."""
        self._failures.pop(key, None)

    def in_flight(self, key: K) -> bool:
        """True while a flight for ``key`` runs."""
        return key in self._flights

    def _ttl_for(self, error: Exception) -> float:
        """An error that says how long to stay away (``retry_after``) is remembered that long (max 1 h)."""
        retry_after = getattr(error, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > 0:
            return min(float(retry_after), MAX_FAILURE_TTL)
        return self._failure_ttl

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        """Join the flight for ``key``, or lead a new one that runs ``work``."""
        while True:
            failure = self._failures.get(key)
            if failure is not None:
                if self._clock.monotonic() < failure.until:
                    raise failure.error.with_traceback(failure.traceback)
                del self._failures[key]
            flight = self._flights.get(key)
            if flight is None:
                return await self._lead(key, work)
            index, cohort = flight.join()
            try:
                await cohort.done.wait()
            finally:
                flight.leave(index, cohort)
            if flight.abandoned:
                continue
            if flight.error is not None:
                raise flight.error.with_traceback(flight.traceback)
            return flight.value  # type: ignore[return-value]

    async def _lead(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        flight: _Flight[V] = _Flight()
        self._flights[key] = flight
        self.flights_started += 1
        try:
            flight.value = await work()
            return flight.value
        except anyio.get_cancelled_exc_class():
            flight.abandoned = True
            raise
        except Exception as exc:
            flight.error, flight.traceback = exc, exc.__traceback__
            ttl = self._ttl_for(exc)
            if ttl > 0:
                self._failures[key] = _Failure(exc, self._clock.monotonic() + ttl, exc.__traceback__)
            raise
        except BaseException:
            flight.abandoned = True
            raise
        finally:
            del self._flights[key]
            flight.finished = True
            flight.wake_from(0)
