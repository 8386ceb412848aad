"""Recording a live model stream as it is read, and replaying a recording.

The recorder sits on the stream's own event iterator, so whoever reads the stream (the agent graph, an
`event_stream_handler`) sees exactly the events it would have seen, and the recording holds each event as it
was yielded (a snapshot: later deltas do not change it) with when it arrived.
"""

from __future__ import annotations

import copy
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai.messages import ModelResponseStreamEvent
from pydantic_ai.models import StreamedResponse

__all__ = ("Recording", "record_events")


@dataclass(eq=False)
class Recording:
    """The events a stream yielded so far; `complete` once it was read to its end."""

    events: list[ModelResponseStreamEvent] | None = field(default_factory=list)
    """None when the stream could not be recorded (it was already being read)."""
    offsets: list[float] | None = field(default_factory=list)
    complete: bool = False


def record_events(stream: StreamedResponse, started: float | None = None) -> Recording:
    """Record `stream`'s events as they are read, with their times from `started` (a `time.perf_counter()`: when
    the request was sent, so the model's time to first token is in them; default now). Does nothing (a
    `Recording` with no events) when the stream's iterator already started, or this PydanticAI keeps it
    elsewhere: such a stream is answered, not stored."""
    current = getattr(stream, "_event_iterator", False)
    if current is None:
        inner = type(stream).__aiter__(stream)  # the iterator the stream would hand out: PartEnd and FinalResult included
    elif current in _unstarted:  # another recorder of ours (a run-level one and a per-request one): record both
        inner = current
    else:
        return Recording(events=None, offsets=None)
    recording = Recording()
    started = time.perf_counter() if started is None else started

    async def recorded() -> AsyncIterator[ModelResponseStreamEvent]:
        assert recording.events is not None and recording.offsets is not None
        _unstarted.discard(iterator)
        async for event in inner:
            recording.events.append(copy.deepcopy(event))
            recording.offsets.append(time.perf_counter() - started)
            yield event
        recording.complete = True

    iterator = recorded()
    _unstarted.add(iterator)
    stream._event_iterator = iterator  # pyright: ignore[reportPrivateUsage]
    return recording


_unstarted: weakref.WeakSet[AsyncIterator[Any]] = weakref.WeakSet()
"""Recorders no one has read from yet (another recorder may wrap them)."""
