"""The object store's circuit breaker, with a fake clock and fake calls (unit)."""

from __future__ import annotations

import pytest

from server.core.errors import NotFound, Unavailable
from server.core.objects.breaker import CircuitBreaker, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Endpoint:
    """A call that fails with Unavailable while `down`, and counts how often it was made."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.down:
            raise Unavailable("connection refused")
        return "ok"


async def _fail(breaker: CircuitBreaker, endpoint: Endpoint, times: int) -> None:
    for _ in range(times):
        with pytest.raises(Unavailable):
            await breaker.call(endpoint)


async def test_opens_after_failures_in_a_row_then_fails_fast() -> None:
    clock, endpoint = Clock(), Endpoint()
    breaker = CircuitBreaker(failures=3, reset_seconds=5, clock=clock)
    endpoint.down = True
    await _fail(breaker, endpoint, 3)
    assert breaker.state is CircuitState.OPEN and endpoint.calls == 3
    with pytest.raises(Unavailable) as raised:
        await breaker.call(endpoint)
    assert endpoint.calls == 3  # not called: the dead endpoint is left alone
    assert raised.value.reason == "OBJECT_STORE_CIRCUIT_OPEN" and raised.value.retry_after == pytest.approx(5)
    clock.now += 2
    with pytest.raises(Unavailable) as again:
        await breaker.call(endpoint)
    assert again.value.retry_after == pytest.approx(3)


async def test_a_success_resets_the_count() -> None:
    endpoint = Endpoint()
    breaker = CircuitBreaker(failures=3, reset_seconds=5, clock=Clock())
    for _ in range(5):
        endpoint.down = True
        await _fail(breaker, endpoint, 2)
        endpoint.down = False
        assert await breaker.call(endpoint) == "ok"
    assert breaker.state is CircuitState.CLOSED


async def test_other_errors_are_answers_not_failures() -> None:
    breaker = CircuitBreaker(failures=1, reset_seconds=5, clock=Clock())

    async def missing() -> None:
        raise NotFound("object", "k")

    for _ in range(3):
        with pytest.raises(NotFound):
            await breaker.call(missing)
    assert breaker.state is CircuitState.CLOSED


async def test_half_open_lets_one_trial_through_which_closes_or_reopens() -> None:
    clock, endpoint = Clock(), Endpoint()
    breaker = CircuitBreaker(failures=2, reset_seconds=5, clock=clock)
    endpoint.down = True
    await _fail(breaker, endpoint, 2)
    clock.now += 5
    assert breaker.state is CircuitState.HALF_OPEN
    await _fail(breaker, endpoint, 1)  # the trial fails: open again, for a full period
    assert breaker.state in {CircuitState.OPEN} and endpoint.calls == 3  # a set: mypy keeps the narrowing above
    clock.now += 4.9
    await _fail(breaker, endpoint, 1)
    assert endpoint.calls == 3
    clock.now += 0.1
    endpoint.down = False
    assert await breaker.call(endpoint) == "ok"  # the trial succeeds: closed
    assert breaker.state is CircuitState.CLOSED
    assert await breaker.call(endpoint) == "ok"
