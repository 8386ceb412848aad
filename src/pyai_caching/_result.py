"""The result type: a real `AgentRunResult` that also says what it cost and where it came from."""

from __future__ import annotations

from typing import Any

from pydantic_ai import AgentRunResult
from pydantic_ai.output import OutputDataT

__all__ = ("CachedAgentRunResult",)


class CachedAgentRunResult(AgentRunResult[OutputDataT]):
    """An `AgentRunResult` (typed `.output`, `.usage`, `.all_messages()`, ...) plus cache metadata.

    Attributes:
        cost: USD this call cost: the run's price on a miss, 0.0 on a hit, None if the model has no price.
        saved_cost: On a hit, the original price of the cached run (what this call saved); None otherwise.
        model: Name of the model that produced the answer.
        cached: True if the answer came from the cache (no model call was made for this call).
        cache_key: The store key of the entry, or None when the run could not be keyed.
        original_latency: Seconds the original model run took.
    """

    cost: float | None
    saved_cost: float | None
    model: str | None
    cached: bool
    cache_key: str | None
    original_latency: float

    @classmethod
    def _wrap(
        cls,
        run: AgentRunResult[Any],
        *,
        cost: float | None,
        saved_cost: float | None,
        model: str | None,
        cached: bool,
        cache_key: str | None,
        original_latency: float,
    ) -> CachedAgentRunResult[Any]:
        result = object.__new__(cls)
        result.__dict__.update(run.__dict__)
        result.__dict__.update(
            cost=cost,
            saved_cost=saved_cost,
            model=model,
            cached=cached,
            cache_key=cache_key,
            original_latency=original_latency,
        )
        return result

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(output={self.output!r}, model={self.model!r}, cached={self.cached!r}, "
            f"cost={self.cost!r})"
        )
