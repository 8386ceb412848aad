"""Replaying a recorded final response the way `StreamedRunResult` streams a live one.

The live stream is handed to the caller at its `FinalResultEvent`: what arrived before it is yielded first (one
chunk per text part, as PydanticAI does), then each later event as it arrives, grouped by `debounce_by` with
PydanticAI's own grouping. Replayed at once (no `pace`), a `debounce_by=None` stream yields exactly the live
deltas; with `pace`, events come at their recorded times (divided by `pace`), so debouncing groups them as live.
A response recorded without a stream (by `cached_agent_run`) replays as one event per part.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pydantic_ai import messages as _messages
from pydantic_ai._parts_manager import ModelResponsePartsManager
from pydantic_ai.models import ModelRequestParameters

from ._codec import StreamRecord

__all__ = ("Replay",)


@dataclass
class Replay:
    """One recorded final response, replayable any number of times."""

    final: _messages.ModelResponse
    """The response as the run recorded it (the caller's own copy)."""
    events: Sequence[_messages.ModelResponseStreamEvent]
    offsets: Sequence[float] | None
    pace: float | None = None

    @classmethod
    def of(cls, final: _messages.ModelResponse, stream: StreamRecord | None, pace: float | None) -> Replay:
        if stream is None:
            events = [_messages.PartStartEvent(index=i, part=copy.copy(p)) for i, p in enumerate(final.parts)]
            return cls(final, events, None, pace)
        return cls(final, stream.events, stream.offsets, pace)

    @property
    def handoff(self) -> int:
        """How many events the live stream had yielded when it was handed to the caller (up to its final result)."""
        for index, event in enumerate(self.events):
            if isinstance(event, _messages.FinalResultEvent):
                return index + 1
        return 0

    async def _paced(self, start: int, clock: float) -> AsyncIterator[_messages.ModelResponseStreamEvent]:
        for index in range(start, len(self.events)):
            if self.pace and self.offsets is not None:
                delay = self.offsets[index] / self.pace - (time.perf_counter() - clock)
                if delay > 0:
                    await asyncio.sleep(delay)
            yield self.events[index]

    async def _opened(self, manager: ModelResponsePartsManager) -> float:
        """Apply the events before the handoff (waiting, with `pace`, until it came); the clock of the stream."""
        clock = time.perf_counter()
        if not self.handoff:
            return clock
        async for event in self._paced(0, clock):
            _apply(manager, event)
            if isinstance(event, _messages.FinalResultEvent):
                break
        return clock

    async def text(self, *, delta: bool, debounce_by: float | None) -> AsyncIterator[str]:
        """What `stream_text(delta=..., debounce_by=...)` yields for this response."""
        manager = ModelResponsePartsManager(model_request_parameters=ModelRequestParameters())
        clock = await self._opened(manager)

        async def chunks() -> AsyncIterator[str]:
            for part in manager.get_parts():
                if isinstance(part, _messages.TextPart) and part.content:
                    yield part.content
            last_text: int | None = None
            async for event in self._paced(self.handoff, clock):
                if isinstance(event, _messages.PartStartEvent) and isinstance(event.part, _messages.TextPart):
                    if event.part.content:
                        last_text = event.index
                        yield event.part.content
                elif isinstance(event, _messages.PartDeltaEvent) and isinstance(event.delta, _messages.TextPartDelta):
                    if event.delta.content_delta:
                        last_text = event.index
                        yield event.delta.content_delta
                elif isinstance(event, _messages.PartStartEvent) and isinstance(event.part, _messages.NativeToolCallPart):
                    if last_text is not None:  # text interrupted by a built-in tool call is not joined directly
                        yield "\n\n"
                        last_text = None

        text = ""
        async with _grouped(chunks(), debounce_by) as groups:
            async for group in groups:
                piece = "".join(group)
                text += piece
                yield piece if delta else text

    async def responses(self, *, debounce_by: float | None) -> AsyncIterator[_messages.ModelResponse]:
        """What `stream_response(debounce_by=...)` yields: snapshots while streaming, then the final response."""
        manager = ModelResponsePartsManager(model_request_parameters=ModelRequestParameters())
        clock = await self._opened(manager)
        if any(part.has_content() for part in manager.get_parts()):
            yield self._snapshot(manager)

        async def applied() -> AsyncIterator[None]:
            early: set[int] = set()
            index = self.handoff
            async for event in self._paced(self.handoff, clock):
                if index not in early:
                    _apply(manager, event)
                following = index + 1
                if (  # live, a part's end is seen once the next part has started: it is in that snapshot already
                    isinstance(event, _messages.PartEndEvent)
                    and getattr(event, "next_part_kind", None) is not None
                    and following < len(self.events)
                    and isinstance(self.events[following], _messages.PartStartEvent)
                ):
                    _apply(manager, self.events[following])
                    early.add(following)
                index += 1
                yield None

        async with _grouped(applied(), debounce_by) as groups:
            async for _ in groups:
                yield self._snapshot(manager)
        yield self.final

    def handoff_snapshot(self) -> _messages.ModelResponse:
        """The response as it stood when the live stream was handed to its caller (what `response` is, unread)."""
        manager = ModelResponsePartsManager(model_request_parameters=ModelRequestParameters())
        for event in self.events[: self.handoff]:
            _apply(manager, event)
        return self._snapshot(manager)

    def _snapshot(self, manager: ModelResponsePartsManager) -> _messages.ModelResponse:
        changes: dict[str, Any] = {"parts": manager.get_parts()}
        if any(f.name == "state" for f in dataclasses.fields(self.final)):
            changes["state"] = "incomplete"
        return dataclasses.replace(self.final, **changes)


def _apply(manager: ModelResponsePartsManager, event: _messages.ModelResponseStreamEvent) -> None:
    if isinstance(event, (_messages.PartStartEvent, _messages.PartDeltaEvent)):
        manager.apply_event(event)


@asynccontextmanager
async def _grouped(items: AsyncIterator[Any], debounce_by: float | None) -> AsyncIterator[AsyncIterator[list[Any]]]:
    """PydanticAI's own temporal grouping (what a live stream's `debounce_by` does)."""
    from pydantic_ai._utils import group_by_temporal

    async with group_by_temporal(items, debounce_by) as groups:
        yield groups
