"""One model request under `ResponseCache`: where it is looked up, and how its outcome is counted and reported
(stats counters, metrics, the expense event, the pytest plugin's scope, the error a `replay` miss raises)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from pydantic_ai.usage import RunUsage

from . import _telemetry as telemetry
from ._config import CacheMode
from ._engine import Missing
from ._explain import explain_key
from ._logs import warn_once
from ._registry import Cache
from ._responses import CachedResponse
from ._scope import Scope
from .exceptions import CacheDriftError, CacheMissError
from .recorders import ExpenseCallback, ExpenseEvent, ExpenseRecorder, notify
from .stats import stats_group

__all__ = ("RequestCall", "account_request", "count_request", "in_background", "missing_request_error", "report_request")

@dataclass(eq=False)
class RequestCall:
    """Where one model request is looked up and counted."""

    task_name: str
    mode: CacheMode
    namespace: str
    ttl: float | None
    cache: Cache
    flights: dict[Any, Any]
    scope: Scope | None
    recorder: ExpenseRecorder | ExpenseCallback | None
    key: str | None = None
    """None in mode `off`, or when the request has no data form (`unkeyable`)."""
    unkeyable: Exception | None = None

    def check_uncached(self) -> None:
        """A request that cannot be keyed goes to the model uncached (with a warning), except in `replay`."""
        if self.unkeyable is None:
            return
        if self.mode == "replay":
            raise CacheMissError(
                f"task {self.task_name!r}: this model request cannot be replayed, it cannot be cached ({self.unkeyable})",
                key="",
                task_name=self.task_name,
            )
        warn_once(f"task {self.task_name!r}: a model request cannot be cached, sending it uncached: {self.unkeyable}")


async def account_request(
    call: RequestCall,
    entry: CachedResponse,
    *,
    hit: bool,
    errors: int,
    started: float,
    stored: bool = True,
) -> None:
    """Count and report one answered request: a hit as saved (its recorded cost), a miss as spent."""
    count_request(call, entry, hit=hit, errors=errors, stored=stored)
    await report_request(call, entry, hit=hit, started=started)


def count_request(call: RequestCall, entry: CachedResponse, *, hit: bool, errors: int, stored: bool) -> None:
    """The stats counters, metrics and the pytest plugin's scope for one request."""
    cost = entry.cost or 0.0
    uncached = call.key is None
    if hit:
        counters = {"hits": 1, "cost_saved": cost, "time_saved": entry.latency}
    else:
        counters = {"uncached" if uncached else "misses": 1, "cost_spent": cost}
    counters["errors"] = errors
    call.cache.stats.add(stats_group(call.namespace, call.task_name), counters)
    status = "hit" if hit else "bypass" if uncached else "miss"
    telemetry.count(call.task_name, status, spent=0.0 if hit else cost, saved=cost if hit else 0.0, errors=errors)
    if call.scope is not None and call.key is not None and (hit or stored):
        (call.scope.replayed if hit else call.scope.recorded).add(call.key)


async def report_request(
    call: RequestCall, entry: CachedResponse, *, hit: bool, started: float, failed: bool = False
) -> None:
    """The expense event for one request (`failed`: a stream that failed or was left part-way, paid for)."""
    if call.recorder is None:
        return
    usage = RunUsage(requests=1)
    usage.incr(entry.response.usage)
    await notify(
        call.recorder,
        ExpenseEvent(
            model=entry.model,
            task_name=call.task_name,
            cost=0.0 if hit else entry.cost,
            saved=entry.cost if hit else 0.0,
            cached=hit,
            usage=usage,
            latency=time.perf_counter() - started,
            key=call.key,
            failed_attempts=0 if hit else entry.failed_attempts,
            failed=failed,
        ),
    )


_background: set[asyncio.Task[None]] = set()


def in_background(report: Coroutine[Any, Any, None]) -> None:
    """Run `report` as a task of its own (kept until it is done)."""
    task = asyncio.get_running_loop().create_task(report)
    _background.add(task)
    task.add_done_callback(_background.discard)


async def missing_request_error(call: RequestCall, missing: Missing, manifest: Any) -> CacheMissError:
    """The error a `replay` miss raises: what was missing, and what differs from the nearest recorded request."""
    key, task = missing.key, call.task_name
    telemetry.count(task, "replay_miss", spent=0.0, saved=0.0, errors=int(missing.store_failed))
    call.cache.stats.add(stats_group(call.namespace, task), {"misses": 1, "errors": int(missing.store_failed)})
    if call.scope is not None:
        call.scope.missing.add(key)
    if missing.drift is not None:
        return CacheDriftError(
            f"the recorded model response of task {task!r} cannot be replayed: {missing.drift} [key {key}]",
            key=key,
            task_name=task,
        )
    if missing.store_failed:
        return CacheMissError(
            f"replay of a model request of task {task!r} failed: the cache store could not be read [key {key}]",
            key=key,
            task_name=task,
        )
    explanation = await explain_key(call.cache.guarded.store, key, task, manifest)
    hint = f"\n{call.scope.hint}" if call.scope is not None and call.scope.hint else ""
    return CacheMissError(
        f"no recorded response for this model request of task {task!r} (mode 'replay' never calls the model; record "
        f"it with mode 'read_write') [key {key}]\n{explanation}{hint}",
        key=key,
        task_name=task,
        explanation=explanation,
    )
