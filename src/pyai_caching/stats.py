"""Hit/miss/cost counters, kept in the store so several processes add up, and their report."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._failopen import FailOpen

__all__ = ("TaskStats", "StatsReport", "StatsBuffer", "stats_group", "stats_prefix")

FLUSH_DELAY = 0.5
"""Seconds counters wait in memory before one batched store write (hits stay one round trip)."""


def stats_prefix(namespace: str) -> str:
    return f"{namespace}:stats:"


def stats_group(namespace: str, task_name: str) -> str:
    """The counter group of one task, e.g. `pyai_caching:stats:faq`."""
    return stats_prefix(namespace) + task_name


@dataclass(frozen=True)
class TaskStats:
    """Counters of one task (or of all tasks, summed)."""

    hits: int = 0
    misses: int = 0
    errors: int = 0
    """Store failures and unreadable entries (each run still returned an answer)."""
    uncached: int = 0
    """Runs that could not be keyed and went to the model without the cache."""
    failed: int = 0
    """Runs that raised (after retries); what their responses cost is in `cost_spent`."""
    cost_spent: float = 0.0
    """USD paid for misses (priced runs only)."""
    cost_saved: float = 0.0
    """USD the hits would have cost: the original price of each cached run served."""
    time_saved: float = 0.0
    """Seconds the hits would have taken: the original latency of each cached run served."""

    @property
    def requests(self) -> int:
        return self.hits + self.misses + self.uncached

    @property
    def hit_rate(self) -> float:
        """Hits over all requests; 0.0 when there were none."""
        return self.hits / self.requests if self.requests else 0.0

    @classmethod
    def from_counters(cls, counters: dict[str, float]) -> TaskStats:
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = counters.get(f.name, 0.0)
            values[f.name] = round(raw) if f.type == "int" else raw
        return cls(**values)

    def __add__(self, other: TaskStats) -> TaskStats:
        return TaskStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


@dataclass(frozen=True)
class StatsReport:
    """Counters per task and their total."""

    tasks: dict[str, TaskStats]
    total: TaskStats

    @classmethod
    def from_groups(cls, namespace: str, groups: dict[str, dict[str, float]]) -> StatsReport:
        prefix = stats_prefix(namespace)
        tasks = {name[len(prefix) :]: TaskStats.from_counters(c) for name, c in sorted(groups.items())}
        return cls(tasks=tasks, total=sum(tasks.values(), TaskStats()))


@dataclass
class StatsBuffer:
    """Counters added in memory and written to the store in one batch per group, shortly after."""

    cache: FailOpen
    _pending: defaultdict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    _scheduled: asyncio.TimerHandle | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def add(self, group: str, counters: dict[str, float]) -> None:
        pending = self._pending[group]
        for name, value in counters.items():
            if value:
                pending[name] = pending.get(name, 0.0) + value
        if self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_later(FLUSH_DELAY, self._flush_soon)

    @property
    def pending(self) -> bool:
        """Counters are waiting to be written."""
        return any(self._pending.values())

    def move_to(self, other: StatsBuffer) -> None:
        """Hand the pending counters to `other` (this buffer's loop is gone)."""
        for group, counters in self._take().items():
            other.add(group, counters)

    def _take(self) -> dict[str, dict[str, float]]:
        """The pending counters, now no longer pending (and no flush scheduled for them)."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        pending, self._pending = self._pending, defaultdict(dict)
        return {group: counters for group, counters in pending.items() if counters}

    def _flush_soon(self) -> None:
        self._scheduled = None
        task = asyncio.get_running_loop().create_task(self.flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Write every pending counter now (counters a failing store refuses are dropped, not retried)."""
        for group, counters in self._take().items():
            await self.cache.add_counters(group, counters)
