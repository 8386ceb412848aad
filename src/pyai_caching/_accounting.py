"""Counting and reporting a run's outcome: stats counters, the expense event, the result handed out, and the
error a `replay` miss raises (with its explanation)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic_ai import usage as _usage

from . import _telemetry as telemetry
from ._attempts import Attempts
from ._codec import CachedRun
from ._engine import Missing
from ._explain import explain_key
from ._keys import effective_model_name
from ._registry import Cache
from ._result import CachedAgentRunResult
from .costs import price_responses
from .exceptions import CacheDriftError, CacheMissError
from .recorders import ExpenseEvent, notify
from .stats import stats_group

if TYPE_CHECKING:
    from ._call import RunCall as _Call

__all__ = ("account", "account_failure", "count_failure", "missing_error")


def count_failure(call: _Call, cache: Cache, namespace: str, attempts: Attempts) -> tuple[str | None, float | None]:
    """A run that raised or was cancelled: what its responses cost is still spent."""
    model, cost = price_responses(
        attempts.all_responses(),
        requested=effective_model_name(call.agent, call.run_kwargs.get("model")),
        custom_costs=call.custom_costs,
    )
    cache.stats.add(stats_group(namespace, call.task_name), {"cost_spent": cost or 0.0, "failed": 1})
    telemetry.count(call.task_name, "error", spent=cost or 0.0, saved=0.0, errors=0)
    return model, cost


async def account_failure(call: _Call, cache: Cache, namespace: str, attempts: Attempts, latency: float) -> None:
    """A run that raised: what its responses cost is still spent, and reported."""
    responses = attempts.all_responses()
    if not responses and not attempts.failed:
        return
    model, cost = count_failure(call, cache, namespace, attempts)
    if call.recorder is not None:
        await notify(
            call.recorder,
            ExpenseEvent(
                model=model,
                task_name=call.task_name,
                cost=cost,
                saved=0.0,
                cached=False,
                usage=sum((r.usage for r in responses), _usage.RunUsage()) if responses else _usage.RunUsage(),
                latency=latency,
                key=None,
                failed_attempts=attempts.failed,
                failed=True,
            ),
        )


async def account(
    call: _Call,
    cache: Cache,
    namespace: str,
    key: str | None,
    entry: CachedRun[Any],
    *,
    hit: bool,
    errors: int,
    started: float,
    uncached: bool = False,
) -> CachedAgentRunResult[Any]:
    result = CachedAgentRunResult._wrap(
        entry.run,
        cost=0.0 if hit else entry.cost,
        saved_cost=entry.cost if hit else None,
        model=entry.model,
        cached=hit,
        cache_key=key,
        original_latency=entry.latency,
    )
    counters = (
        {"hits": 1, "cost_saved": entry.cost or 0.0, "time_saved": entry.latency}
        if hit
        else {"uncached" if uncached else "misses": 1, "cost_spent": entry.cost or 0.0}
    )
    counters["errors"] = errors
    cache.stats.add(stats_group(namespace, call.task_name), counters)
    status = "hit" if hit else "bypass" if uncached else "miss"
    saved = (entry.cost or 0.0) if hit else 0.0
    telemetry.annotate(status=status, key=key, created=entry.created, cost=result.cost, saved=saved, errors=errors)
    telemetry.count(call.task_name, status, spent=0.0 if hit else entry.cost or 0.0, saved=saved, errors=errors)
    if call.scope is not None and key is not None:
        (call.scope.replayed if hit else call.scope.recorded).add(key)
    if call.recorder is not None:
        await notify(
            call.recorder,
            ExpenseEvent(
                model=entry.model,
                task_name=call.task_name,
                cost=result.cost,
                saved=entry.cost if hit else 0.0,
                cached=hit,
                usage=entry.run_usage,
                latency=time.perf_counter() - started,
                key=key,
                failed_attempts=0 if hit else entry.failed_attempts,
            ),
        )
    return result


async def missing_error(call: _Call, cache: Cache, missing: Missing) -> CacheMissError:
    """The error a `replay` miss raises: what was missing, and what differs from the nearest recording."""
    key, task = missing.key, call.task_name
    if missing.drift is not None:
        return CacheDriftError(
            f"the recorded answer of task {task!r} cannot be replayed: {missing.drift} (if the agent's output type "
            f"or its validators changed since it was recorded, record it again with mode 'refresh') [key {key}]",
            key=key,
            task_name=task,
        )
    if missing.store_failed:
        return CacheMissError(
            f"replay of task {task!r} failed: the cache store could not be read [key {key}]", key=key, task_name=task
        )
    explanation = await explain_key(cache.guarded.store, key, task, call.manifest())
    return CacheMissError(
        f"no recorded answer for this call of task {task!r} (mode 'replay' never calls the model; record it with "
        f"mode 'read_write') [key {key}]\n{explanation}" + (f"\n{call.scope.hint}" if call.scope and call.scope.hint else ""),
        key=key,
        task_name=task,
        explanation=explanation,
    )
