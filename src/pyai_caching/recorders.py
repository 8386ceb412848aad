"""Expense recording: the seed's `expense_recorder(model, task_name, cost)` and a richer event hook."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, Union, runtime_checkable

from pydantic_ai.usage import RunUsage

__all__ = ("ExpenseEvent", "ExpenseRecorder", "ExpenseCallback", "RECORDER_TIMEOUT", "notify")

logger = logging.getLogger("pyai_caching")

RECORDER_TIMEOUT = 5.0
"""Seconds a recorder may take before it is abandoned (and logged); the run is returned regardless."""


@dataclass(frozen=True)
class ExpenseEvent:
    """What one `cached_agent_run` call cost, or saved."""

    model: str | None
    task_name: str
    cost: float | None
    """USD spent by this call: the run's price on a miss, 0.0 on a hit, None if the model has no price."""
    saved: float | None
    """On a hit, the original price of the cached run (None if unknown); 0.0 on a miss."""
    cached: bool
    usage: RunUsage
    """Token usage of the run (on a hit: of the original run, which was not paid again)."""
    latency: float
    """Seconds this call took."""
    key: str | None
    """The cache key, or None when the run could not be keyed."""
    failed_attempts: int = 0
    """Model request attempts that failed (rate limits, server errors) and were retried or gave up."""
    failed: bool = False
    """The run raised after paying for some responses: `cost` is what those responses cost."""


@runtime_checkable
class ExpenseRecorder(Protocol):
    """An object receiving every `ExpenseEvent`; `record` may be sync or async."""

    def record(self, event: ExpenseEvent) -> Awaitable[None] | None: ...


ExpenseCallback = Callable[[str, str, float], Union[Awaitable[None], None]]
"""The seed signature: `(model, task_name, cost)`; sync or async. Gets 0.0 for hits and unpriced runs."""


async def notify(recorder: ExpenseRecorder | ExpenseCallback | None, event: ExpenseEvent) -> None:
    """Deliver `event`; a recorder that raises or takes longer than `RECORDER_TIMEOUT` is logged, never raised.

    Plain functions run in a worker thread so a slow one cannot block the event loop.
    """
    if recorder is None:
        return
    if isinstance(recorder, ExpenseRecorder):
        fn: Callable[..., Any] = recorder.record
        args: tuple[Any, ...] = (event,)
    else:
        fn = recorder
        args = (event.model or "unknown", event.task_name, event.cost or 0.0)
    try:
        if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):
            await asyncio.wait_for(fn(*args), RECORDER_TIMEOUT)
        else:
            result = await asyncio.wait_for(asyncio.to_thread(fn, *args), RECORDER_TIMEOUT)
            if inspect.isawaitable(result):
                await asyncio.wait_for(result, RECORDER_TIMEOUT)
    except asyncio.TimeoutError:
        logger.error("expense recorder %r took more than %.0fs; event for task %r not confirmed", fn, RECORDER_TIMEOUT, event.task_name)
    except Exception:  # noqa: BLE001 - a recorder must never fail the run
        logger.exception("expense recorder %r raised; event for task %r was not recorded", fn, event.task_name)
