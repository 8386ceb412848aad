"""Retry provider rate limits and transient failures with budgeted exponential backoff.

`call_with_backoff(fn, backoff)` calls `fn` and, while it fails with an error that waiting can fix
(`is_retryable`), waits and calls it again. Waits grow exponentially with "equal" jitter, honour a
provider's `Retry-After` (`retry_after`), and are capped by a budget: the *sum of the waits*
(not wall-clock time, and not the time the calls themselves take) never exceeds `Backoff.max_wait`.
When the budget cannot cover the next wait, `UsageLimitExceeded` is raised from the last provider
error. Errors waiting cannot fix propagate unchanged on the first attempt.

The loop is tenacity's `AsyncRetrying`; this module only supplies its `retry`, `wait`, `stop`,
`before_sleep` and `retry_error_callback` policies.

The cache retries one model request at a time (`_attempts.RetryingModel`), never a whole run. The provider
SDK clients PydanticAI builds (OpenAI, Anthropic, Groq) retry twice by default on their own; while this
backoff owns the retries (`max_wait > 0`) each request is sent with `ModelSettings['max_retries'] = 0`
unless the caller set it, so `max_wait` bounds the total wait.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, NoReturn, TypeVar, cast

from pydantic_ai import exceptions as _exceptions
from pydantic_ai.exceptions import AgentRunError, ModelAPIError, ModelHTTPError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from .exceptions import UsageLimitExceeded

__all__ = ("Backoff", "Budget", "call_with_backoff", "is_retryable", "retry_after")

T = TypeVar("T")

logger = logging.getLogger("pyai_caching")

_MIN_WAIT: Final = 0.001
"""A remaining budget below this many seconds counts as exhausted (a sub-millisecond wait is pointless)."""

_MAX_DOUBLINGS: Final = 1000
"""Cap on the exponent of `initial_wait * 2**n`, so a long run of tiny waits can't overflow a float."""


def _error_types(*names: str) -> tuple[type[ModelAPIError], ...]:
    """The PydanticAI error categories of these names that this release has (most arrived in 2.59 and 2.62;
    before them, the same errors are plain `ModelHTTPError`s, classified by status code below)."""
    return tuple(t for name in names if (t := getattr(_exceptions, name, None)) is not None)


_RETRYABLE_TYPES: Final = _error_types(
    "ModelRateLimitError",
    "ModelUnavailableError",  # includes ModelOverloadedError (529, "overloaded")
    "ModelServerError",
    "ModelConnectionError",  # includes ModelTimeoutError (transport timeout of one attempt)
    "ModelRequestTimeout",  # `request_timeout` / `first_event_timeout` ran out
)
"""PydanticAI error categories that waiting can fix."""

_FINAL_TYPES: Final = _error_types("ModelQuotaExceededError", "ModelRequestRejectedError")
"""PydanticAI error categories that waiting cannot fix, whatever their status code."""

_UNCATEGORIZED: Final = not hasattr(_exceptions, "ModelConnectionError")
_CONNECTION_CAUSES: Final = frozenset({"APIConnectionError", "APITimeoutError"})
"""SDK errors (openai, anthropic, groq) that releases before 2.59 wrap in a plain `ModelAPIError`."""

_QUOTA_MARKERS: Final = ("quota", "billing", "credit", "spend_limit", "usage_limit_exceeded")
"""Words in a 429's error code, type or body that mean an exhausted quota, not a rate limit.

Covers OpenAI's `insufficient_quota`, `billing_hard_limit_reached`, `credit_balance_exhausted` and
`*_spend_limit_exceeded` / `organization_usage_limit_exceeded`.
"""

_TRANSPORT_ERRORS: Final = frozenset(
    (package, name)
    for package in ("httpx", "httpx2")
    for name in ("TimeoutException", "NetworkError", "RemoteProtocolError")
)
"""Raw `httpx`/`httpx2` errors worth retrying, matched by top-level package and class name (any base class).

Timeouts, connect/read/write/close errors and a server that broke the protocol. Not `UnsupportedProtocol`,
`LocalProtocolError` or `ProxyError`, which are configuration mistakes. Matched by name so neither library
has to be importable (PydanticAI uses `httpx2`; `httpx` is not installed with it).
"""


@dataclass(frozen=True)
class Backoff:
    """How long `call_with_backoff` may wait between attempts.

    Wait n (1-based) is drawn uniformly from `[e/2, e)` with `e = initial_wait * 2**(n-1)` ("equal jitter":
    spread out, yet never shorter than half the exponential value), raised to the provider's `retry_after`
    when that is longer, and capped to what is left of `max_wait`.

    Raises:
        ValueError: `initial_wait` or `max_wait` is negative, NaN or infinite; or, when `max_wait > 0`,
            `initial_wait` is 0 (the waits would never grow) or greater than `max_wait`.
            `max_wait == 0` disables retrying, whatever `initial_wait` is.
    """

    initial_wait: float = 1.0
    """Scale of the first wait, in seconds."""
    max_wait: float = 30.0
    """Total seconds the waits may add up to before giving up; `0` means never retry."""
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, repr=False)
    """Waits the given number of seconds; injectable so tests don't really sleep."""

    def __post_init__(self) -> None:
        for name in ("initial_wait", "max_wait"):
            value = cast(float, getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"Backoff.{name} must be a finite number >= 0, got {value!r}")
        if self.max_wait > 0 and not 0 < self.initial_wait <= self.max_wait:
            raise ValueError(
                f"Backoff.initial_wait must be > 0 and <= max_wait ({self.max_wait!r}) when retrying is enabled, "
                f"got {self.initial_wait!r}"
            )


def is_retryable(exc: BaseException) -> bool:
    """Whether waiting and calling again may succeed after `exc`.

    True for: PydanticAI's rate limit, unavailable/overloaded, server, connection and timeout errors; an
    uncategorized `ModelHTTPError` with status 408, 429 (unless its code/body says the quota or billing is
    exhausted) or 5xx (incl. 503, 529); builtin `TimeoutError`/`ConnectionError`; raw httpx/httpx2 timeouts and
    network errors; an exception group whose every member is retryable (e.g. a `FallbackExceptionGroup`).
    False for everything else, notably 4xx, quota exhaustion, PydanticAI's `UsageLimitExceeded`,
    `UnexpectedModelBehavior`, cancellation and run timeouts. `__cause__` chains are not followed: PydanticAI
    raises its own error categories unwrapped out of `agent.run`.
    """
    if isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)
        return all(is_retryable(member) for member in group.exceptions)
    if isinstance(exc, ModelAPIError):
        return _is_retryable_model_error(exc)
    if isinstance(exc, AgentRunError):
        # Local decisions: UsageLimitExceeded, UnexpectedModelBehavior, RunCancelled/RunTimedOut (a TimeoutError!), ...
        return False
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    return any((cls.__module__.partition(".")[0], cls.__name__) in _TRANSPORT_ERRORS for cls in type(exc).__mro__)


def retry_after(exc: BaseException) -> float | None:
    """Seconds the provider asked to wait before retrying (`Retry-After`, `retry-after-ms`, Google `RetryInfo`), if any.

    Read from PydanticAI's `ModelAPIError.retry_after`; `None` for other errors, exception groups, and
    negative or NaN values.
    """
    value = getattr(exc, "retry_after", None) if isinstance(exc, ModelAPIError) else None  # (on every error: 2.59)
    if value is None:
        return None
    seconds = float(value)
    return seconds if seconds >= 0 else None  # NaN fails the comparison too


@dataclass
class Budget:
    """Seconds already waited by earlier `call_with_backoff` calls sharing one `max_wait` (one run's requests)."""

    waited: float = 0.0


async def call_with_backoff(fn: Callable[[], Awaitable[T]], backoff: Backoff, budget: Budget | None = None) -> T:
    """Call `fn`; on a retryable error wait and call again, until it succeeds or the waiting budget runs out.

    With `budget`, the waits of every call sharing it add up to at most `backoff.max_wait`.

    Raises:
        UsageLimitExceeded: a retryable error came when the rest of `backoff.max_wait` could not cover the next
            wait (nothing left, or less than the provider's `retry_after`); chained `from` that last error.
            With `max_wait == 0` this happens on the first retryable error.
        BaseException: any non-retryable error from `fn`, unchanged and immediately.
    """

    # Fast path: the first attempt runs without tenacity (its setup costs more than a cache hit).
    try:
        return await fn()
    except Exception as exc:  # noqa: BLE001 - classified right below
        if not is_retryable(exc):
            raise
        first_error: BaseException | None = exc

    async def attempt() -> T:
        # A coroutine function, so tenacity awaits it inside the attempt: `fn` may be a lambda returning a coroutine.
        nonlocal first_error
        if first_error is not None:  # replay the first attempt's failure so tenacity accounts for it
            error, first_error = first_error, None
            raise error
        return await fn()

    budget = budget if budget is not None else Budget()

    async def sleep(seconds: float) -> None:
        budget.waited += float(seconds)
        await backoff.sleep(float(seconds))  # tenacity passes a `DoSleep` (a float subclass)

    policy = _Policy(backoff, budget)
    retrying = AsyncRetrying(
        retry=retry_if_exception(is_retryable),
        wait=policy.wait,
        stop=policy.stop,
        sleep=sleep,
        before_sleep=policy.log_retry,
        retry_error_callback=policy.give_up,
        reraise=True,  # unused while `retry_error_callback` raises; never wrap in `tenacity.RetryError`
    )
    return cast(T, await retrying(attempt))


@dataclass(frozen=True)
class _Policy:
    """Tenacity callbacks enforcing `backoff`'s waiting budget over one `call_with_backoff`."""

    backoff: Backoff
    budget: Budget

    def wait(self, state: RetryCallState) -> float:
        """The next wait: jittered exponential, at least the provider's `retry_after`, capped to the budget left."""
        exponential = self.backoff.initial_wait * 2.0 ** min(state.attempt_number - 1, _MAX_DOUBLINGS)
        jittered = exponential / 2 + random.random() * exponential / 2
        provider = retry_after(_last_error(state))
        return min(max(jittered, provider or 0.0), self._remaining(state))

    def stop(self, state: RetryCallState) -> bool:
        """Give up when no budget is left or the provider asks for a longer wait than what is left."""
        remaining = self._remaining(state)
        provider = retry_after(_last_error(state))
        return remaining < _MIN_WAIT or (provider is not None and provider > remaining)

    def log_retry(self, state: RetryCallState) -> None:
        """Log the retry about to be waited for, counting its wait as used."""
        error = _last_error(state)
        logger.warning(
            "Model %s failed (%s); retrying in %.2fs (attempt %d, %.2fs of %gs waiting budget used)",
            getattr(error, "model_name", "?"),
            _describe(error),
            state.upcoming_sleep,
            state.attempt_number,
            self.budget.waited + state.upcoming_sleep,
            self.backoff.max_wait,
        )

    def give_up(self, state: RetryCallState) -> NoReturn:
        """Raise `UsageLimitExceeded` from the last provider error."""
        error = _last_error(state)
        provider = retry_after(error)
        remaining = self._remaining(state)
        asked = (
            f"; the provider asked to wait {provider:g}s but only {max(remaining, 0.0):.2f}s of the budget remain"
            if provider is not None and provider > remaining
            else ""
        )
        raise UsageLimitExceeded(
            f"Gave up after {state.attempt_number} attempt(s) and {self.budget.waited:.2f}s of waiting "
            f"(max_wait={self.backoff.max_wait:g}s){asked}; last error: {type(error).__name__}: {error}"
        ) from error

    def _remaining(self, state: RetryCallState) -> float:
        return self.backoff.max_wait - self.budget.waited


def _last_error(state: RetryCallState) -> BaseException:
    """The exception of the attempt that just failed (tenacity only consults these callbacks after a failure)."""
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    if error is None:  # pragma: no cover - `retry_if_exception` never retries a successful attempt
        raise RuntimeError("retry policy consulted without a failed attempt")
    return error


def _describe(error: BaseException) -> str:
    """Short description for logs: the HTTP status, else the error class."""
    if isinstance(error, ModelHTTPError):
        return f"status {error.status_code}"
    return type(error).__name__


def _is_retryable_model_error(exc: ModelAPIError) -> bool:
    if isinstance(exc, _FINAL_TYPES):
        return False
    if isinstance(exc, _RETRYABLE_TYPES):
        return True
    if not isinstance(exc, ModelHTTPError):
        # before 2.59, a dropped connection or a transport timeout is a plain ModelAPIError from the SDK's error
        cause = exc.__cause__
        return (
            _UNCATEGORIZED
            and type(exc) is ModelAPIError
            and cause is not None
            and (type(cause).__name__ in _CONNECTION_CAUSES or is_retryable(cause))
        )
    status = exc.status_code
    if status == 429:
        return not _says_quota_exhausted(exc)
    return status == 408 or 500 <= status <= 599


def _says_quota_exhausted(exc: ModelHTTPError) -> bool:
    """Whether a 429 that PydanticAI didn't categorize reports exhausted quota/billing rather than a rate limit."""
    parts = (getattr(exc, "provider_error_code", None), getattr(exc, "provider_error_type", None), exc.body)  # 2.59
    text = " ".join(str(part) for part in parts).lower()
    return any(marker in text for marker in _QUOTA_MARKERS)
