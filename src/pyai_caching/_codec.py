"""Pure codec: a finished run <-> a small versioned JSON envelope. No pickle: entries are data.

Envelope (format 1)::

    {"format": 1, "model": "openai:gpt-4o", "cost": 0.0012, "latency": 1.9,
     "created": 1732252800.0, "history": 2, "run": <TypeAdapter(AgentRunResult[Any]) JSON>,
     "stream": {"events": [...], "offsets": [...]}  # optional: how the final response streamed
     "manifest": {...what the key was made of, to explain a miss; optional}}

The run holds its new messages only: `history` counts the messages of the history it was given,
which a hit takes from its own caller (the key covers them by content), so an entry does not
grow with the conversation.

The run (messages, usage, ids) is read with one schema shared by every output type, built once
per process; then its output is validated against the caller's output type, with the caller's
validation context, so an entry written for another schema (or corrupted) fails to decode
instead of handing back wrong data.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from typing import Any, Generic, Literal, Union

import pydantic_core
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_ai import AgentRunResult
from pydantic_ai.messages import ModelResponseStreamEvent
from pydantic_ai.output import OutputDataT
from pydantic_ai.usage import RunUsage

__all__ = ("FORMAT", "CachedRun", "StreamRecord", "first_error", "spliced", "stream_record", "DecodeError", "encode", "decode", "read_manifest", "same_answer")

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
    usage: RunUsage | None = None
    """The run's own usage, when `run.usage` also counts a usage object the caller passed in (`usage=`)."""
    history: int = 0
    """How many history messages the run was given that the entry does not hold (`run` has only its new ones)."""
    stream: Any = None
    """How the final response streamed, when the run was streamed (`cached_agent_run_stream`): a `StreamRecord`,
    or as read from the entry, its JSON data (validated only where it is replayed: `stream_record`)."""
    events: Any = None
    """The events an `event_stream_handler` was given, one list per call (as read: JSON data; `_events`)."""
    event_steps: Any = None
    """Where the run was at each of those calls (messages so far, usage, step), as JSON data."""

    @property
    def run_usage(self) -> RunUsage:
        """What this run used (and what its entry records)."""
        return self.usage if self.usage is not None else self.run.usage


class StreamRecord(BaseModel):
    """How a run's final response streamed: its events as the live stream yielded them, and when (seconds from the
    start of that stream)."""

    events: list[ModelResponseStreamEvent]
    offsets: list[float]


class _Envelope(BaseModel, Generic[OutputDataT]):
    """The stored form; validated in one pass (in Rust) on read."""

    format: Literal[1]
    model: str | None
    cost: float | None
    latency: float
    created: float
    history: int = 0
    """Messages of the history the run was given, not stored: a hit is given its caller's own history."""
    run: AgentRunResult[OutputDataT]
    stream: Any = None
    """Read as plain data: only a streamed hit validates it (`stream_record`), so other hits never pay for it."""
    events: Any = None
    event_steps: Any = None


_SPLICED = frozenset({"stream", "events", "event_steps"})
"""Optional fields written only when present (spliced in by `encode`)."""

_ENVELOPE: type[_Envelope[Any]] = _Envelope[Any]
"""The envelope with the output read as plain JSON data: its schema (the run's message types, ~60 ms to build)
is built once per process, not once per output type."""


@functools.lru_cache(maxsize=512)
def _output_adapter(data_type: Any) -> TypeAdapter[Any]:
    return TypeAdapter(data_type)


def _output_data_type(output_type: Any) -> Any:
    """The type a run's `.output` has for an output spec: `[A, B]`, `ToolOutput(A)`, `NativeOutput(...)`,
    `TextOutput(f)` and output functions name their data type(s) rather than being it."""
    from pydantic_ai._output import types_from_output_spec  # noqa: PLC0415 - private, imported where used

    types = tuple(types_from_output_spec(output_type))
    return types[0] if len(types) == 1 else Union[types]  # noqa: UP007 - a runtime tuple of types


def _output_type_adapter(output_type: Any) -> TypeAdapter[Any] | None:
    """The adapter validating a run's `.output` for an output spec; None when nothing says what it is."""
    spec = tuple(output_type) if isinstance(output_type, list) else output_type  # `[A, B]`, hashable
    try:
        return _spec_adapter(spec)
    except TypeError:  # an unhashable spec: resolved on every call
        return _adapter_for_spec(spec)


def _adapter_for_spec(output_type: Any) -> TypeAdapter[Any] | None:
    try:
        data_type = _output_data_type(output_type)
    except TypeError:  # no type to validate against: the output is kept as read
        return None
    if data_type is Any:
        return None
    try:
        return _output_adapter(data_type)
    except TypeError:  # an unhashable data type
        return TypeAdapter(data_type)


_spec_adapter = functools.lru_cache(maxsize=512)(_adapter_for_spec)


def encode(entry: CachedRun[Any], output_type: Any, *, manifest: Any = None) -> bytes:
    """Serialize `entry` to the versioned JSON envelope (the output as pydantic serializes its value), with the
    key's `manifest` (JSON data explaining what the entry was keyed by) as its last field."""
    run = entry.run
    state = run._state  # pyright: ignore[reportPrivateUsage]
    history = run._new_message_index  # pyright: ignore[reportPrivateUsage]
    # the run's new messages only (the history is the caller's, and is in the key), and its own usage
    stored_state = dataclasses.replace(
        state,
        message_history=state.message_history[history:],
        usage=entry.usage if entry.usage is not None else state.usage,
        **_no_metadata(type(state)),
    )
    run = dataclasses.replace(run, _state=stored_state, _new_message_index=0)
    envelope = _ENVELOPE.model_construct(
        format=FORMAT,
        model=entry.model,
        cost=entry.cost,
        latency=entry.latency,
        created=entry.created,
        history=history,
        run=run,
    )
    data = envelope.model_dump_json(exclude=_SPLICED).encode()
    # spliced in, so entries without them stay as they were; hits never read the manifest (not in the schema)
    return spliced(data, stream=entry.stream, events=entry.events, event_steps=entry.event_steps, manifest=manifest)


def spliced(data: bytes, **fields: Any) -> bytes:
    """A JSON object's bytes with `fields` that are not None added at its end (as JSON)."""
    for name, value in fields.items():
        if value is not None:
            data = data[:-1] + b',"' + name.encode() + b'":' + pydantic_core.to_json(value) + b"}"
    return data


def read_manifest(data: bytes) -> Any:
    """The manifest stored in an entry, or None (an entry written without one, or not an entry)."""
    try:
        envelope = json.loads(data)
    except ValueError:
        return None
    return envelope.get("manifest") if isinstance(envelope, dict) else None


@functools.lru_cache(maxsize=8)
def _no_metadata(state_type: type) -> dict[str, None]:
    """`metadata=None` for the run state type if it has the field: a run's metadata is the caller's (a hit gets its
    own), often user data, and never stored."""
    return {"metadata": None} if any(f.name == "metadata" for f in dataclasses.fields(state_type)) else {}


def decode(data: bytes, output_type: Any, *, context: Any = None) -> CachedRun[Any]:
    """Parse and validate an envelope written by `encode`; the output's validators get `context`.

    Raises:
        DecodeError: not JSON, another format version, a run that fails validation for `output_type`, or a
            validator of the output that raised (whatever it raised).
    """
    adapter = _output_type_adapter(output_type)
    try:
        envelope = _ENVELOPE.model_validate_json(data)
    except ValidationError as exc:
        raise DecodeError(f"entry does not validate: {first_error(exc, 'entry')}") from exc
    try:
        if adapter is not None:  # the output's own validators run here, once, with the caller's context
            envelope.run.output = adapter.validate_python(envelope.run.output, context=context)
    except ValidationError as exc:
        raise DecodeError(f"the output does not validate: {first_error(exc, 'output')}") from exc
    except Exception as exc:  # noqa: BLE001 - a user validator raising TypeError, KeyError, ...: never the caller's error
        raise DecodeError(f"a validator of the output raised {type(exc).__name__}: {exc}") from exc
    return CachedRun(
        run=envelope.run,
        model=envelope.model,
        cost=envelope.cost,
        latency=envelope.latency,
        created=envelope.created,
        history=envelope.history,
        stream=envelope.stream,
        events=envelope.events,
        event_steps=envelope.event_steps,
    )


def stream_record(entry: CachedRun[Any]) -> StreamRecord | None:
    """The entry's stream, validated; None if it has none or it does not validate (it then replays as its parts)."""
    if entry.stream is None or isinstance(entry.stream, StreamRecord):
        return entry.stream
    try:
        return StreamRecord.model_validate(entry.stream)
    except ValidationError:
        return None


def first_error(exc: ValidationError, root: str) -> str:
    """`output.cents: Value error, ... (1 of 2 errors)`: where the first error is, and what it says."""
    first = exc.errors()[0]
    where = ".".join([root, *(str(part) for part in first["loc"])])
    count = exc.error_count()
    return f"{where}: {first['msg']}" + (f" (1 of {count} errors)" if count > 1 else "")


_VOLATILE_ENTRY_FIELDS = frozenset({"created", "latency"})
_VOLATILE_RUN_FIELDS = frozenset({"run_id", "conversation_id", "traceparent"})
_VOLATILE_MESSAGE_FIELDS = frozenset({"timestamp", "run_id", "conversation_id", "provider_response_id"})
_VOLATILE_PART_FIELDS = frozenset({"timestamp", "tool_call_id"})


def same_answer(a: Any, b: Any) -> bool:
    """Whether two entries (as parsed JSON) record the same answer: equal but for when it was made and the ids
    naming that one run (the run's and its messages' timestamps and ids, the parts' tool call ids). Only those
    places are ignored: the same names inside an output or a tool's arguments are the answer."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return a == b
    return _comparable(a) == _comparable(b)


def _comparable(entry: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in entry.items() if k not in _VOLATILE_ENTRY_FIELDS}
    run = out.get("run")
    if isinstance(run, dict):
        run = {k: v for k, v in run.items() if k not in _VOLATILE_RUN_FIELDS}
        messages = run.get("messages")
        if isinstance(messages, list):
            run["messages"] = [_comparable_message(m) for m in messages]
        out["run"] = run
    if isinstance(out.get("response"), dict):  # a `ResponseCache` entry: one response
        out["response"] = _comparable_message(out["response"])
    return out


def _comparable_message(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    out = {k: v for k, v in message.items() if k not in _VOLATILE_MESSAGE_FIELDS}
    parts = out.get("parts")
    if isinstance(parts, list):
        out["parts"] = [
            {k: v for k, v in p.items() if k not in _VOLATILE_PART_FIELDS} if isinstance(p, dict) else p for p in parts
        ]
    return out
