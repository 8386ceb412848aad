"""An `event_stream_handler` on a cached run: its events recorded on a miss, replayed to it on a hit.

PydanticAI calls the handler once per streamed step of the run (a model response, a round of tool calls), each
time with that step's events. On a miss the cache passes the handler the same events it would have had, and keeps
a copy of each group; the entry stores them (`"events": [[...], ...]`). On a hit the handler is called again once
per recorded group, in order, with a `RunContext` of the caller's run (its deps, usage, messages, ids).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_ai import RunContext
from pydantic_ai.messages import AgentStreamEvent
from pydantic_ai.models import Model
from pydantic_ai.usage import RunUsage

__all__ = ("HandlerRecording", "event_groups", "recording_handler", "replay_events", "run_context_for")

Handler = Callable[[RunContext[Any], AsyncIterable[AgentStreamEvent]], Awaitable[None]]


@functools.lru_cache(maxsize=1)
def _groups_adapter() -> TypeAdapter[list[list[AgentStreamEvent]]]:
    """The stored form of the recorded groups (built when first needed: most hits never read events)."""
    return TypeAdapter(list[list[AgentStreamEvent]])


def event_groups(entry: Any) -> list[list[AgentStreamEvent]] | None:
    """The groups recorded with an entry, as new objects; None if it has none or they do not validate."""
    if entry.events is None:
        return None
    try:
        if isinstance(entry.events, list) and all(isinstance(g, list) for g in entry.events) and not any(
            isinstance(e, dict) for g in entry.events for e in g
        ):
            return copy.deepcopy(entry.events)  # the leader's own recording (no bytes to read)
        return _groups_adapter().validate_python(entry.events)
    except ValidationError:
        return None


@dataclass(eq=False)
class HandlerRecording:
    """The events a handler was given, one list per call; `groups` is None when one of them could not be copied
    (an event holding something with no copy): the run is then stored without events."""

    groups: list[list[AgentStreamEvent]] | None = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    """Where the run was at each call (as JSON data): how many messages it had, its usage, its step."""


def recording_handler(handler: Handler) -> tuple[Handler, HandlerRecording]:
    """`handler`, recording every event it is given (one list per call), and the recording."""
    recording = HandlerRecording()

    async def recording_one(ctx: RunContext[Any], events: AsyncIterable[AgentStreamEvent]) -> None:
        group: list[AgentStreamEvent] = []
        if recording.groups is not None:
            recording.groups.append(group)
            recording.steps.append(_step(ctx))

        async def tee() -> AsyncIterator[AgentStreamEvent]:
            async for event in events:
                if recording.groups is not None:
                    try:
                        group.append(copy.deepcopy(event))  # as it was given: later steps do not change it
                    except Exception:  # noqa: BLE001 - never the run's problem: it is just stored without events
                        recording.groups = None
                yield event

        await handler(ctx, tee())

    return recording_one, recording


def _step(ctx: RunContext[Any]) -> dict[str, Any]:
    return {
        "messages": len(ctx.messages),
        "usage": _usage_adapter().dump_python(ctx.usage, mode="json"),
        "run_step": getattr(ctx, "run_step", 0),
    }


@functools.lru_cache(maxsize=1)
def _usage_adapter() -> TypeAdapter[RunUsage]:
    return TypeAdapter(RunUsage)


async def replay_events(
    handler: Handler,
    groups: list[list[AgentStreamEvent]],
    steps: Any,
    *,
    deps: Any,
    model: Any,
    run: Any,
    prompt: Any,
) -> None:
    """Call `handler` once per recorded group, with a `RunContext` of the caller's own run as it was at that step
    (its messages so far, usage and step, as recorded); the final one if the steps were not recorded."""
    messages = run.all_messages()
    if not (isinstance(steps, list) and len(steps) == len(groups)):
        steps = [None] * len(groups)
    for group, step in zip(groups, steps, strict=True):  # each step its own context, as live
        ctx = run_context_for(deps=deps, model=model, run=run, prompt=prompt)
        try:
            if isinstance(step, dict):
                ctx = dataclasses.replace(
                    ctx,
                    messages=messages[: int(step["messages"])],
                    usage=_usage_adapter().validate_python(step["usage"]),
                    **({"run_step": int(step["run_step"])} if "run_step" in _context_fields() else {}),
                )
        except (KeyError, TypeError, ValueError, ValidationError):  # an unreadable step: the final context
            pass

        async def events(group: list[AgentStreamEvent] = group) -> AsyncIterator[AgentStreamEvent]:
            for event in group:
                yield event

        await handler(ctx, events())


def run_context_for(*, deps: Any, model: Any, run: Any, prompt: Any) -> RunContext[Any]:
    """A `RunContext` of a caller's run that no model ran (a hit): its deps, model, usage, messages and ids."""
    values = {
        "deps": deps,
        "model": model if isinstance(model, Model) else None,
        "usage": run.usage,
        "prompt": prompt,
        "messages": run.all_messages(),
        "run_id": run.run_id,
        "conversation_id": run.conversation_id,
        "metadata": run.metadata,
    }
    names = _context_fields()
    return RunContext(**{k: v for k, v in values.items() if k in names})


@functools.lru_cache(maxsize=1)
def _context_fields() -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(RunContext) if f.init)
