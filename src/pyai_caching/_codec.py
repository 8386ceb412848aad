"""Pure codec: a finished run <-> a small versioned JSON envelope. No pickle: entries are data.

Envelope (format 1)::

    {"format": 1, "model": "openai:gpt-4o", "cost": 0.0012, "latency": 1.9,
     "created": 1732252800.0, "run": <TypeAdapter(AgentRunResult[T]) JSON>}

The run is re-validated against the caller's output type on read, so an entry written for
another schema (or corrupted) fails to decode instead of handing back wrong data.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Generic, Literal, Union

from pydantic import BaseModel, ValidationError
from pydantic_ai import AgentRunResult
from pydantic_ai.output import OutputDataT

__all__ = ("FORMAT", "CachedRun", "DecodeError", "encode", "decode")

FORMAT = 1


class DecodeError(ValueError):
    """The stored bytes are not a valid entry for this output type (corrupt, old format, other schema)."""


@dataclass(frozen=True)
class CachedRun(Generic[OutputDataT]):
    """A run as stored: the PydanticAI result plus what the cache knows about it."""

    run: AgentRunResult[OutputDataT]
    model: str | None
    cost: float | None
    """What the run cost when it was made (USD); `None` if the model had no price."""
    latency: float
    """Seconds the original run took."""
    created: float
    """Unix time the entry was written."""
    failed_attempts: int = 0
    """Model request attempts of the original run that failed and were retried (not stored)."""


class _Envelope(BaseModel, Generic[OutputDataT]):
    """The stored form; validated in one pass (in Rust) on read."""

    format: Literal[1]
    model: str | None
    cost: float | None
    latency: float
    created: float
    run: AgentRunResult[OutputDataT]


@functools.lru_cache(maxsize=512)
def _envelope_adapter(output_type: Any) -> type[_Envelope[Any]]:
    return _Envelope[output_type]  # type: ignore[valid-type]


def _output_data_type(output_type: Any) -> Any:
    """The type a run's `.output` has for an output spec: `[A, B]`, `ToolOutput(A)`, `NativeOutput(...)`,
    `TextOutput(f)` and output functions name their data type(s) rather than being it."""
    from pydantic_ai._output import types_from_output_spec  # noqa: PLC0415 - private, imported where used

    types = tuple(types_from_output_spec(output_type))
    return types[0] if len(types) == 1 else Union[types]  # noqa: UP007 - a runtime tuple of types


def _adapter(output_type: Any) -> type[_Envelope[Any]]:
    spec = tuple(output_type) if isinstance(output_type, list) else output_type  # `[A, B]`, hashable
    try:
        return _spec_adapter(spec)
    except TypeError:  # an unhashable spec: resolved on every call
        return _build_adapter(spec)


def _build_adapter(output_type: Any) -> type[_Envelope[Any]]:
    try:
        return _envelope_adapter(_output_data_type(output_type))
    except TypeError:  # no type to validate against: validate the output loosely
        return _envelope_adapter(Any)


_spec_adapter = functools.lru_cache(maxsize=512)(_build_adapter)


def encode(entry: CachedRun[Any], output_type: Any) -> bytes:
    """Serialize `entry` to the versioned JSON envelope."""
    envelope = _adapter(output_type).model_construct(
        format=FORMAT,
        model=entry.model,
        cost=entry.cost,
        latency=entry.latency,
        created=entry.created,
        run=entry.run,
    )
    return envelope.model_dump_json().encode()


def decode(data: bytes, output_type: Any, *, context: Any = None) -> CachedRun[Any]:
    """Parse and validate an envelope written by `encode`; the output's validators get `context`.

    Raises:
        DecodeError: not JSON, another format version, a run that fails validation for `output_type`, or a
            validator of the output that raised (whatever it raised).
    """
    try:
        envelope = _adapter(output_type).model_validate_json(data, context=context)
    except ValidationError as exc:
        raise DecodeError(f"entry does not validate: {exc.error_count()} error(s), first: {exc.errors()[0]['msg']}") from exc
    except Exception as exc:  # noqa: BLE001 - a user validator raising TypeError, KeyError, ...: never the caller's error
        raise DecodeError(f"a validator of the output raised {type(exc).__name__}: {exc}") from exc
    return CachedRun(
        run=envelope.run,
        model=envelope.model,
        cost=envelope.cost,
        latency=envelope.latency,
        created=envelope.created,
    )
