"""Pure codec for one model response as stored by `ResponseCache`, with its stream when it was streamed.

Envelope (format 1)::

    {"format": 1, "kind": "model_response", "model": "openai:gpt-4o", "cost": 0.0004, "latency": 0.8,
     "created": 1732252800.0, "response": <ModelResponse JSON>,
     "events": [<ModelResponseStreamEvent JSON>, ...] | null, "offsets": [seconds, ...] | null,
     "manifest": {...what the key was made of, to explain a miss; optional}}

`events` are the stream's events exactly as the live stream yielded them (its chunking), `offsets` when
each arrived, in seconds from the start of the stream. A response requested without streaming has none:
a streamed request answered from it gets one event per part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic_ai.messages import ModelResponse, ModelResponseStreamEvent

from ._codec import DecodeError, first_error, spliced

__all__ = ("CachedResponse", "decode_response", "encode_response")


@dataclass(frozen=True)
class CachedResponse:
    """A model response as stored: the response, its stream if it had one, and what the cache knows about it."""

    response: ModelResponse
    model: str | None
    cost: float | None
    """What the response cost when it was made (USD); `None` if the model had no price."""
    latency: float
    """Seconds the original request took (to its last event, when streamed)."""
    created: float
    events: list[ModelResponseStreamEvent] | None = None
    offsets: list[float] | None = None
    failed_attempts: int = 0
    """Attempts of the original request that failed and were retried (not stored)."""


class _Envelope(BaseModel):
    format: Literal[1]
    kind: Literal["model_response"]
    model: str | None
    cost: float | None
    latency: float
    created: float
    response: ModelResponse
    events: list[ModelResponseStreamEvent] | None = None
    offsets: list[float] | None = None


def encode_response(entry: CachedResponse, *, manifest: Any = None) -> bytes:
    """The entry as its JSON envelope, with the key's `manifest` (JSON data) spliced in last."""
    envelope = _Envelope.model_construct(
        format=1,
        kind="model_response",
        model=entry.model,
        cost=entry.cost,
        latency=entry.latency,
        created=entry.created,
        response=entry.response,
        events=entry.events,
        offsets=entry.offsets,
    )
    return spliced(envelope.model_dump_json().encode(), manifest=manifest)


def decode_response(data: bytes) -> CachedResponse:
    """Parse an envelope written by `encode_response` into new objects.

    Raises:
        DecodeError: not JSON, not a model response entry, or another format version.
    """
    try:
        envelope = _Envelope.model_validate_json(data)
    except ValidationError as exc:
        raise DecodeError(f"entry does not validate as a model response: {first_error(exc, 'entry')}") from exc
    if envelope.events is not None and envelope.offsets is not None and len(envelope.offsets) != len(envelope.events):
        raise DecodeError("entry does not validate as a model response: events and offsets differ in length")
    return CachedResponse(
        response=envelope.response,
        model=envelope.model,
        cost=envelope.cost,
        latency=envelope.latency,
        created=envelope.created,
        events=envelope.events,
        offsets=envelope.offsets,
    )
