"""Tests for `pyai_caching._retry`: which errors are retried, how long it waits, when it gives up.

No test really sleeps: `Backoff.sleep` is a fake that records the requested waits.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence

import pytest
from pydantic_ai import Agent
from pydantic_ai import exceptions as _px
from pydantic_ai.exceptions import FallbackExceptionGroup, ModelHTTPError, RunTimedOut, UnexpectedModelBehavior
from pydantic_ai.exceptions import UsageLimitExceeded as PydanticAIUsageLimitExceeded
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching._retry import Backoff, call_with_backoff, is_retryable, retry_after
from pyai_caching.exceptions import PyaiCachingError, UsageLimitExceeded

MODEL = "test-model"

CATEGORIES = hasattr(_px, "ModelRateLimitError")
"""PydanticAI's error categories (rate limit, overloaded, connection, quota, ...) arrived in 2.59; before, the same
errors are `ModelHTTPError`s with a status code, which the status-code tests cover."""
needs_categories = pytest.mark.skipif(not CATEGORIES, reason="PydanticAI's error categories arrived in 2.59")


def limited(seconds: int) -> ModelHTTPError:
    """A 429 asking to wait `seconds` (a whole-seconds `Retry-After` header: read by every supported PydanticAI)."""
    return ModelHTTPError(429, MODEL, "slow down", headers={"retry-after": str(seconds)})  # type: ignore[call-arg]


class FakeSleep:
    """Records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class Flaky:
    """Raises the given errors one per call, then returns `result`; counts calls."""

    def __init__(self, errors: Sequence[BaseException], result: str = "ok") -> None:
        self.errors = list(errors)
        self.result = result
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def http(status: int, body: object = None, **kwargs: object) -> ModelHTTPError:
    return ModelHTTPError(status, MODEL, body, **kwargs)  # type: ignore[arg-type]


def always(error_factory: Callable[[], BaseException]) -> Callable[[], Awaitable[str]]:
    async def fn() -> str:
        raise error_factory()

    return fn


async def test_429_twice_then_success_returns_value_after_two_growing_waits() -> None:
    sleep = FakeSleep()
    fn = Flaky([http(429), http(429)], result="value")

    assert await call_with_backoff(fn, Backoff(initial_wait=1.0, max_wait=30.0, sleep=sleep)) == "value"

    assert fn.calls == 3
    assert len(sleep.waits) == 2
    # Equal jitter: wait n is in [e/2, e) with e = initial_wait * 2**(n-1).
    assert 0.5 <= sleep.waits[0] < 1.0
    assert 1.0 <= sleep.waits[1] < 2.0
    assert sleep.waits[1] > sleep.waits[0]
    assert all(type(w) is float for w in sleep.waits)


async def test_waits_keep_doubling() -> None:
    sleep = FakeSleep()
    fn = Flaky([http(503)] * 5)

    await call_with_backoff(fn, Backoff(initial_wait=0.1, max_wait=1000.0, sleep=sleep))

    assert len(sleep.waits) == 5
    for n, wait in enumerate(sleep.waits, start=1):
        exponential = 0.1 * 2 ** (n - 1)
        assert exponential / 2 <= wait < exponential


async def test_rate_limit_retry_after_is_a_minimum_wait() -> None:
    sleep = FakeSleep()
    error = limited(7)
    fn = Flaky([error])

    assert await call_with_backoff(fn, Backoff(initial_wait=1.0, max_wait=30.0, sleep=sleep)) == "ok"

    assert retry_after(error) == 7.0
    assert sleep.waits == [7.0]  # longer than the exponential wait (< 1s), so used instead


async def test_retry_after_header_on_http_429_is_honoured() -> None:
    sleep = FakeSleep()
    error = http(429, headers={"Retry-After": "4"})
    assert retry_after(error) == 4.0

    await call_with_backoff(Flaky([error]), Backoff(sleep=sleep))

    assert sleep.waits == [4.0]


async def test_short_retry_after_does_not_shorten_the_exponential_wait() -> None:
    sleep = FakeSleep()
    errors = [limited(0) for _ in range(3)]

    await call_with_backoff(Flaky(errors), Backoff(initial_wait=2.0, max_wait=100.0, sleep=sleep))

    assert 1.0 <= sleep.waits[0] < 2.0
    assert 2.0 <= sleep.waits[1] < 4.0
    assert 4.0 <= sleep.waits[2] < 8.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_4xx_raises_the_original_error_immediately(status: int) -> None:
    sleep = FakeSleep()
    error = http(status, {"error": "bad request"})
    fn = Flaky([error])

    with pytest.raises(ModelHTTPError) as info:
        await call_with_backoff(fn, Backoff(sleep=sleep))

    assert info.value is error
    assert fn.calls == 1
    assert sleep.waits == []


@pytest.mark.parametrize("status", [500, 502, 503, 504, 529])
async def test_5xx_and_overloaded_are_retried(status: int) -> None:
    sleep = FakeSleep()
    fn = Flaky([http(status)])

    assert await call_with_backoff(fn, Backoff(sleep=sleep)) == "ok"

    assert fn.calls == 2
    assert len(sleep.waits) == 1


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError("reset by peer"),
        TimeoutError(),
        *(
            [
                _px.ModelOverloadedError(MODEL, "overloaded"),
                _px.ModelConnectionError(MODEL, "connection reset", phase="read"),
                _px.ModelTimeoutError(MODEL, "timed out", phase="read"),
                ModelHTTPError.for_category(_px.ModelRateLimitError, status_code=429, model_name=MODEL),
            ]
            if CATEGORIES
            else []
        ),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_transient_errors_are_retried(error: BaseException) -> None:
    sleep = FakeSleep()
    fn = Flaky([error])

    assert await call_with_backoff(fn, Backoff(sleep=sleep)) == "ok"

    assert fn.calls == 2
    assert len(sleep.waits) == 1


async def test_raw_httpx2_transport_errors_are_retried_but_not_configuration_errors() -> None:
    httpx2 = pytest.importorskip("httpx2")

    assert is_retryable(httpx2.ReadTimeout("read timed out"))
    assert is_retryable(httpx2.ConnectError("refused"))
    assert is_retryable(httpx2.RemoteProtocolError("peer closed connection"))
    assert not is_retryable(httpx2.UnsupportedProtocol("ftp://"))
    assert not is_retryable(httpx2.LocalProtocolError("bad header"))


@pytest.mark.parametrize(
    "error",
    [
        PydanticAIUsageLimitExceeded("request_limit of 1 exceeded"),
        UnexpectedModelBehavior("garbage response"),
        RunTimedOut("run timed out"),
        ValueError("bug"),
        KeyError("bug"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_local_and_unrelated_errors_are_not_retried(error: BaseException) -> None:
    sleep = FakeSleep()
    fn = Flaky([error])

    with pytest.raises(type(error)) as info:
        await call_with_backoff(fn, Backoff(sleep=sleep))

    assert info.value is error
    assert fn.calls == 1
    assert sleep.waits == []


@pytest.mark.parametrize(
    "error",
    [
        http(
            429,
            {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"},
        ),
        http(429, {"error": {"code": "billing_hard_limit_reached"}}),
        *(
            [
                http(429, None, provider_error_code="insufficient_quota"),
                ModelHTTPError.for_category(_px.ModelQuotaExceededError, status_code=429, model_name=MODEL),
                _px.ModelQuotaExceededError(MODEL, "credits exhausted"),
            ]
            if CATEGORIES
            else []
        ),
    ],
    ids=["openai-body", "billing-body", "provider-code", "categorized-429", "quota-category"][: 5 if CATEGORIES else 2],
)
async def test_quota_exhausted_is_not_retried(error: BaseException) -> None:
    sleep = FakeSleep()
    fn = Flaky([error])

    with pytest.raises(type(error)) as info:
        await call_with_backoff(fn, Backoff(sleep=sleep))

    assert info.value is error
    assert fn.calls == 1
    assert sleep.waits == []


async def test_budget_exhaustion_raises_usage_limit_exceeded_from_last_error() -> None:
    sleep = FakeSleep()
    errors: list[BaseException] = []

    async def fn() -> str:
        errors.append(http(429, {"error": f"rate limited #{len(errors) + 1}"}))
        raise errors[-1]

    with pytest.raises(UsageLimitExceeded) as info:
        await call_with_backoff(fn, Backoff(initial_wait=1.0, max_wait=10.0, sleep=sleep))

    assert isinstance(info.value, PyaiCachingError)
    assert info.value.__cause__ is errors[-1]
    assert len(errors) == len(sleep.waits) + 1
    assert sum(sleep.waits) <= 10.0
    assert math.isclose(sum(sleep.waits), 10.0)  # the last wait is capped to what remains, so the budget is used up
    message = str(info.value)
    assert f"{len(errors)} attempt(s)" in message
    assert "10.00s of waiting" in message
    assert f"rate limited #{len(errors)}" in message


async def test_retry_after_beyond_the_remaining_budget_gives_up_without_waiting() -> None:
    sleep = FakeSleep()
    error = limited(60)
    fn = Flaky([error])

    with pytest.raises(UsageLimitExceeded) as info:
        await call_with_backoff(fn, Backoff(max_wait=30.0, sleep=sleep))

    assert info.value.__cause__ is error
    assert fn.calls == 1
    assert sleep.waits == []
    assert "asked to wait 60s" in str(info.value)


async def test_max_wait_zero_never_retries() -> None:
    sleep = FakeSleep()
    error = http(429)
    fn = Flaky([error])

    with pytest.raises(UsageLimitExceeded) as info:
        await call_with_backoff(fn, Backoff(max_wait=0, sleep=sleep))

    assert info.value.__cause__ is error
    assert fn.calls == 1
    assert sleep.waits == []


async def test_max_wait_zero_still_propagates_non_retryable_errors_unchanged() -> None:
    error = http(401)
    with pytest.raises(ModelHTTPError) as info:
        await call_with_backoff(Flaky([error]), Backoff(max_wait=0, sleep=FakeSleep()))
    assert info.value is error


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_wait": -1.0},
        {"max_wait": -0.5},
        {"initial_wait": math.nan},
        {"max_wait": math.inf},
        {"max_wait": math.nan},
        {"initial_wait": 0.0},  # waits would never grow
        {"initial_wait": 5.0, "max_wait": 2.0},
    ],
)
def test_invalid_backoff_raises_value_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_valid_backoff_edge_values() -> None:
    assert Backoff(initial_wait=0.0, max_wait=0.0).max_wait == 0.0
    assert Backoff(initial_wait=5.0, max_wait=0.0).initial_wait == 5.0  # retrying disabled: initial_wait unused
    assert Backoff(initial_wait=2.0, max_wait=2.0).initial_wait == 2.0


def test_retry_after_ignores_other_errors_and_bad_values() -> None:
    assert retry_after(ValueError()) is None
    assert retry_after(http(429)) is None
    if CATEGORIES:  # (before 2.59 only `Retry-After` is read, and only a ModelHTTPError carries it)
        assert retry_after(_px.ModelRateLimitError(MODEL, "x", retry_after=-1)) is None
        assert retry_after(_px.ModelRateLimitError(MODEL, "x", retry_after=math.nan)) is None
        assert retry_after(http(429, headers={"retry-after-ms": "1500"})) == 1.5


def test_exception_groups_are_retryable_only_when_every_member_is() -> None:
    assert is_retryable(FallbackExceptionGroup("all failed", [http(429), http(503)]))
    assert not is_retryable(FallbackExceptionGroup("all failed", [http(429), http(401)]))


async def test_each_retry_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    sleep = FakeSleep()
    with caplog.at_level(logging.INFO, logger="pyai_caching"):
        await call_with_backoff(Flaky([http(429), http(503)]), Backoff(sleep=sleep))

    records = [r for r in caplog.records if r.name == "pyai_caching"]
    assert len(records) == 2
    assert all(r.levelno == logging.WARNING for r in records)
    assert MODEL in records[0].getMessage()
    assert "status 429" in records[0].getMessage()
    assert "status 503" in records[1].getMessage()
    assert f"{sleep.waits[0]:.2f}s" in records[0].getMessage()


async def test_agent_run_with_function_model_is_retried() -> None:
    """A provider error raised inside a FunctionModel leaves `agent.run` unwrapped, and pydantic-ai doesn't retry it."""
    sleep = FakeSleep()
    calls = 0

    def model_fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ModelHTTPError(429, "function-model", {"error": "rate limited"})
        return ModelResponse(parts=[TextPart("hello")])

    agent = Agent(FunctionModel(model_fn))

    result = await call_with_backoff(lambda: agent.run("hi"), Backoff(sleep=sleep))

    assert result.output == "hello"
    assert calls == 2
    assert len(sleep.waits) == 1


async def test_agent_run_error_surfaces_unwrapped() -> None:
    """Pins the assumption `is_retryable` relies on: agent.run raises the model's own error object, once."""
    calls = 0
    error = ModelHTTPError(503, "function-model")

    def model_fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(ModelHTTPError) as info:
        await Agent(FunctionModel(model_fn)).run("hi")

    assert info.value is error
    assert calls == 1
