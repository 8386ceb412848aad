"""Recording a live model stream as it is read.

The recorder sits on the stream's own event iterator (the stream's class is swapped for a subclass whose
`__aiter__` wraps the one it had), so whoever reads the stream (the agent graph, an `event_stream_handler`,
PydanticAI's request deadline or `FallbackModel` wrappers) sees exactly the events it would have seen, and nothing
of the stream's own state is touched. A recording holds each event as it was yielded (a snapshot: later deltas do
not change it) with when it arrived.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai.messages import ModelResponseStreamEvent
from pydantic_ai.models import StreamedResponse

__all__ = ("Recording", "record_events")


@dataclass(eq=False)
class Recording:
    """The events a stream yielded so far; `complete` once it was read to its end."""

    started: float = field(default_factory=time.perf_counter)
    events: list[ModelResponseStreamEvent] | None = field(default_factory=list)
    """None when the stream could not be recorded (already being read, or an event with no copy): such a stream is
    answered, not stored."""
    offsets: list[float] | None = field(default_factory=list)
    complete: bool = False


def record_events(stream: StreamedResponse, started: float | None = None) -> Recording:
    """Record `stream`'s events as they are read, with their times from `started` (a `time.perf_counter()`: when
    the request was sent, so the model's time to first token is in them; default now). Several recordings of one
    stream (a run-level and a per-request one) each get every event, if they start before it is read."""
    recording = Recording() if started is None else Recording(started=started)
    state = getattr(stream, "__dict__", None)
    if state is None or state.get("_pyai_reading"):  # a slotted stream, or too late: events were read already
        recording.events = recording.offsets = None
        return recording
    if not getattr(type(stream), "_pyai_recorded", False):
        try:
            stream.__class__ = _recording_class(type(stream))
        except TypeError:  # a stream class that cannot be subclassed this way: answered, not stored
            recording.events = recording.offsets = None
            return recording
        state["_pyai_recordings"] = []
    state["_pyai_recordings"].append(recording)
    return recording


@functools.lru_cache(maxsize=None)
def _recording_class(cls: type[StreamedResponse]) -> type[StreamedResponse]:
    def __aiter__(self: StreamedResponse) -> AsyncIterator[ModelResponseStreamEvent]:  # noqa: N807
        inner = cls.__aiter__(self)  # the iterator the stream hands out: PartEnd and FinalResult events included
        state = self.__dict__
        current = state.get("_pyai_recorder")
        if current is None:
            current = state["_pyai_recorder"] = (inner, _recorded(self, inner))
        elif current[0] is not inner:  # PydanticAI wrapped the iterator after we did (a request deadline): it reads
            return inner  # through our recorder already, so this one passes through unrecorded
        return current[1]

    return type(cls.__name__, (cls,), {"__aiter__": __aiter__, "_pyai_recorded": True, "__module__": cls.__module__})


async def _recorded(stream: StreamedResponse, inner: AsyncIterator[ModelResponseStreamEvent]) -> AsyncIterator[Any]:
    recordings: list[Recording] = stream.__dict__["_pyai_recordings"]
    stream.__dict__["_pyai_reading"] = True
    async for event in inner:
        now = time.perf_counter()
        snapshot: Any = None
        for recording in recordings:
            if recording.events is None or recording.offsets is None:
                continue
            try:
                snapshot = copy.deepcopy(event) if snapshot is None else snapshot
            except Exception:  # noqa: BLE001 - an event holding something with no copy: the stream is just not stored
                for other in recordings:
                    other.events = other.offsets = None
                break
            recording.events.append(snapshot)
            recording.offsets.append(now - recording.started)
        yield event
    for recording in recordings:
        recording.complete = True
