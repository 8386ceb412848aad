"""Pure key derivation: what changes an agent's answer, as canonical JSON, hashed.

The key covers the effective model by identity (class, `provider:name`, endpoint, settings, profile,
the fields it was built with; never its client or API key), merged model settings (transport-only
ones and secret headers left out), system prompts and instructions (toolsets' too), the output
schema and validation context, every tool's definition, the prompt and the message history by
content (file parts with their media type and identifier). It never uses `repr()`, `agent.name`,
memory addresses or `deps`.

Functions (dynamic prompts, instructions, model functions, validators) are keyed by name, body,
default values and the values they close over; a bound method by the data of its instance. What
they compute from `deps` at run time is not in the key, which is what `key_extra` is for. Tool
implementations are keyed by their definitions (name, description, schema), not their bodies.

This module reads a few private `Agent` attributes. If PydanticAI moves them, `UnkeyableError`
is raised and the run goes uncached rather than being served an answer keyed on too little.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import decimal
import dis
import enum
import functools
import hashlib
import json
import pathlib
import types
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic_core
from pydantic import BaseModel
from pydantic_ai import messages as _messages
from pydantic_ai.agent import AbstractAgent, Agent
from pydantic_ai.models import Model
from pydantic_ai.template import TemplateStr
from pydantic_ai.toolsets import AbstractToolset, ExternalToolset, FunctionToolset
from pydantic_ai.toolsets._dynamic import DynamicToolset

__all__ = (
    "KEY_VERSION",
    "UnkeyableError",
    "RUN_KWARGS_NOT_IN_KEY",
    "canonical_json",
    "effective_model_name",
    "request_digest",
    "format_key",
)

KEY_VERSION = "v1"
"""Bumped whenever the same inputs would hash differently; old entries then simply miss."""

RUN_KWARGS_NOT_IN_KEY = frozenset(
    {
        "deps",  # not hashable in general; see `key_extra`
        "usage_limits",
        "usage",
        "infer_name",
        "event_stream_handler",
        "run_id",
        "conversation_id",
        "conversation",  # its messages are keyed as history, in request_digest
        "metadata",
        "cancellation_token",
        "timeout",
        "retries",
        "workspace",
    }
)
"""`agent.run` keyword arguments that do not change the answer (or cannot be hashed)."""

# Settings that change how a request is sent, not what comes back.
_SETTINGS_NOT_IN_KEY = frozenset(
    {"timeout", "request_timeout", "first_event_timeout", "max_retries", "parallel_tool_calls_timeout"}
)

# Header names (lowercase) that authenticate or trace a request: never key material (`extra_headers` are keyed
# otherwise, since headers such as `anthropic-beta` change what the provider does).
_SECRET_HEADER_WORDS = ("auth", "key", "token", "secret", "cookie", "session", "signature", "credential")
_TRACE_HEADERS = frozenset({"traceparent", "tracestate", "baggage", "x-request-id", "x-stainless-retry-count"})

# Message fields that identify a particular run rather than its content.
_VOLATILE_MESSAGE_FIELDS = (
    "timestamp",
    "run_id",
    "conversation_id",
    "provider_response_id",
    "provider_details",
    "provider_url",
    "provider_name",
    "model_name",
    "model_id",
    "usage",
    "metadata",
    "finish_reason",
    "history_digest",
    "failed_attempts",
    "workspace_ref",
    "canonical_system",  # set by the model from its provider; a history rebuilt by hand has None
)
# Not `state`: a `'suspended'` or `'interrupted'` message makes the next run continue or retry it.
# Not `provider_name`: PydanticAI sends thinking signatures and native tool parts back only to their own
# provider (and it is None, so left out, on the text parts of a history rebuilt by hand).
_VOLATILE_PART_FIELDS = ("timestamp", "id", "provider_details")
# Private fields of message parts that are sent to the model (`ImageUrl(media_type=..., identifier=...)`).
_PRIVATE_PART_FIELDS = ("_media_type", "_identifier")


class UnkeyableError(TypeError):
    """Something that would change the answer cannot be turned into key material."""


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON for `value`: sorted keys, no whitespace, objects reduced to their data.

    Raises:
        UnkeyableError: `value` holds an object with no stable data form.
    """
    try:
        return json.dumps(
            value,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=True,
            check_circular=False,  # a cycle ends in RecursionError, turned into UnkeyableError below
            default=_to_data,
        ).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        if isinstance(exc, UnkeyableError):
            raise
        raise UnkeyableError(f"cannot derive a cache key: {exc}") from exc


_code_digests: dict[int, tuple[types.CodeType, str]] = {}


def _code_digest(code: types.CodeType) -> str:
    """`_code_digest_of(code)`, remembered by identity (hashing a code object hashes all of it)."""
    cached = _code_digests.get(id(code))
    if cached is not None and cached[0] is code:
        return cached[1]
    digest = _code_digest_of(code)
    if len(_code_digests) >= 4096:
        _code_digests.clear()
    _code_digests[id(code)] = (code, digest)
    return digest


def _code_digest_of(code: types.CodeType) -> str:
    """A digest of a function's body (bytecode, constants, names), so two lambdas of one scope differ
    and editing a function changes the key. It changes with the Python version too (a miss, not a wrong hit)."""
    consts = [_const_data(c) for c in code.co_consts]
    material = canonical_json([code.co_code.hex(), consts, code.co_names, code.co_varnames])
    return hashlib.sha256(material).hexdigest()[:32]


def _const_data(const: Any) -> Any:
    """A code constant as stable data (frozenset order and `repr` of code objects vary by process)."""
    if isinstance(const, types.CodeType):
        return {"code": _code_digest(const)}
    if isinstance(const, (tuple, frozenset)):
        items = [_const_data(c) for c in const]
        return items if isinstance(const, tuple) else sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    if const is None or isinstance(const, (str, int, float, bool)):
        return const
    if isinstance(const, bytes):
        return {"bytes": const.hex()}
    return {"repr": repr(const)}


def _qualname(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or type(obj).__module__
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{name}"


def _to_data(obj: Any) -> Any:  # noqa: C901 - one flat dispatch
    """`json.dumps` hook: the stable data form of one non-JSON object."""
    cls: type = type(obj)
    if _is_plain_dataclass(cls):  # the common case, decided once per type
        names, type_name = _data_fields(cls)
        # fields left at None are left out: smaller JSON, and a field added later as None keeps keys stable
        data = {name: value for name in names if (value := getattr(obj, name)) is not None}
        if type_name is not None:
            data["__type__"] = type_name
        return data
    if isinstance(obj, Model):
        return _model_data(obj)
    if isinstance(obj, AbstractToolset):
        return _toolset_data(obj)
    if isinstance(obj, BaseModel):
        # python mode, so sets stay sets (sorted below) instead of lists in hash-seed order
        return {"__type__": _qualname(type(obj)), "data": obj.model_dump(round_trip=True)}
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"__sha256__": hashlib.sha256(obj).hexdigest()}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        return obj.isoformat()
    if isinstance(obj, datetime.timedelta):
        return {"__timedelta__": obj.total_seconds()}
    if isinstance(obj, (uuid.UUID, decimal.Decimal, pathlib.PurePath)):
        return {"__" + type(obj).__name__.lower() + "__": str(obj)}
    if isinstance(obj, (tuple, set, frozenset)):
        items = list(obj)
        return items if isinstance(obj, tuple) else sorted(items, key=canonical_json)
    if isinstance(obj, functools.partial):
        return {"__partial__": obj.func, "args": obj.args, "kwargs": obj.keywords}
    if isinstance(obj, types.FunctionType):
        return _function_data(obj)
    if isinstance(obj, types.MethodType):
        return {"__method__": obj.__func__, "self": _self_data(obj.__self__)}
    if isinstance(obj, (type, types.BuiltinFunctionType)):
        return {"__callable__": _qualname(obj)}
    if isinstance(obj, TemplateStr):
        return {"__template__": obj._source}  # pyright: ignore[reportPrivateUsage]
    try:  # what pydantic knows how to serialize (URLs, IP addresses, ...), as pydantic serializes it
        return {"__" + _qualname(cls) + "__": pydantic_core.to_jsonable_python(obj)}
    except pydantic_core.PydanticSerializationError:
        pass
    if _model_state.get():  # a model's own helper object (a callable test double): keyed by its class and code
        call = getattr(cls, "__call__", None)
        return {"__object__": _qualname(cls), "call": call if isinstance(call, types.FunctionType) else None}
    raise UnkeyableError(
        f"cannot derive a cache key from a {type(obj).__qualname__!s} object; "
        "pass key material you choose with key_extra= instead"
    )


_in_progress: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar("_in_progress", default=frozenset())
_model_state: contextvars.ContextVar[bool] = contextvars.ContextVar("_model_state", default=False)
"""True while keying a model's own functions: their mutable closure values and instances are the model's
state (a test double's call counter), not its identity, and are left out."""


def _function_data(fn: types.FunctionType, model_state: bool | None = None) -> dict[str, Any]:
    """A function by name, body, defaults and the values it closes over (`make_prompt("German")` differs
    from `make_prompt("French")`). A value with no data form makes the function unkeyable."""
    data: dict[str, Any] = {"__callable__": _qualname(fn), "code": _code_digest(fn.__code__)}
    if fn.__defaults__:
        data["defaults"] = fn.__defaults__
    if fn.__kwdefaults__:
        data["kwdefaults"] = fn.__kwdefaults__
    if fn.__closure__:
        data["closure"] = _closure_data(fn, _model_state.get() if model_state is None else model_state)
    return data


def _closure_data(fn: types.FunctionType, model_state: bool) -> dict[str, Any]:
    """The values `fn` closes over: scalars as they are, the rest encoded now (while `fn` is marked in progress,
    so a recursive closure ends)."""
    cells: dict[str, Any] = {}
    nested: list[tuple[str, Any]] = []
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell (not yet assigned)
            continue
        if model_state and (name in _rebound_names(fn.__code__) or not _is_immutable(value)):
            continue
        if value is None or type(value) in (str, int, float, bool):
            cells[name] = value
        else:
            nested.append((name, value))
    if not nested:
        return cells
    seen = _in_progress.get()
    if id(fn) in seen:  # a recursive closure: its body is keyed already
        return {"recursive": True}
    token = _in_progress.set(seen | {id(fn)})
    state = _model_state.set(model_state)
    try:
        for name, value in nested:
            cells[name] = canonical_json(value)  # bytes: keyed by their digest
    except UnkeyableError as exc:
        raise UnkeyableError(f"{_qualname(fn)} closes over a value with no data form ({exc})") from None
    finally:
        _model_state.reset(state)
        _in_progress.reset(token)
    return cells


def _self_data(obj: Any) -> Any:
    """The instance a bound method is bound to: its data (a dataclass, a pydantic model, a model or toolset),
    or its class when the method is a classmethod; other objects have no data form."""
    if isinstance(obj, type):
        return {"__class__": _qualname(obj)}
    if _model_state.get() and not _is_immutable(obj):
        return {"__class__": _qualname(type(obj))}
    if dataclasses.is_dataclass(obj) or isinstance(obj, (BaseModel, Model, AbstractToolset)):
        return obj
    raise UnkeyableError(
        f"a method of a {type(obj).__qualname__} object is keyed by that object's data, and it has none "
        "(make it a dataclass or a pydantic model, or use a plain function)"
    )


def _model_data(model: Model) -> dict[str, Any]:
    """A model's identity: its class (the API flavour), `provider:name`, endpoint, settings, profile, and the
    public fields it was built with (a `FunctionModel`'s function, a `TestModel`'s scripted output).

    The provider's client (API keys, auth headers) is never read.
    """
    data: dict[str, Any] = {
        "__model__": _qualname(type(model)),
        "id": model.model_id,
        "settings": _key_settings(model.settings),
    }
    try:
        base_url = model.base_url
    except Exception:  # noqa: BLE001 - a provider that cannot say: the model id and class must do
        base_url = None
    if base_url:
        data["base_url"] = str(base_url)
    profile = getattr(model, "_profile", None)
    if profile is not None:
        data["profile"] = profile
    if dataclasses.is_dataclass(model):
        for f in _model_fields(type(model)):
            value = getattr(model, f, None)
            if value is None or type(value) in (str, int, float, bool):
                data[f] = value
            elif isinstance(value, types.FunctionType):
                data[f] = _function_data(value, model_state=True)
            else:  # encoded now, while what it holds is keyed as model state
                token = _model_state.set(True)
                try:
                    data[f] = canonical_json(value)
                finally:
                    _model_state.reset(token)
    return data


@functools.lru_cache(maxsize=1024)
def _rebound_names(code: types.CodeType) -> frozenset[str]:
    """Closure variables `code` assigns to (`nonlocal calls; calls += 1`): state, not configuration."""
    return frozenset(i.argval for i in dis.get_instructions(code) if i.opname in ("STORE_DEREF", "DELETE_DEREF"))


def _is_immutable(value: Any) -> bool:
    """Whether `value` cannot change after it is made (so it is a model's configuration, not its state)."""
    if value is None or isinstance(value, (str, bytes, int, float, complex, enum.Enum, type, types.FunctionType)):
        return True
    if isinstance(value, (tuple, frozenset)):
        return all(_is_immutable(v) for v in value)
    if dataclasses.is_dataclass(value):
        params = getattr(type(value), "__dataclass_params__", None)
        return bool(params is not None and params.frozen)
    if isinstance(value, BaseModel):
        return bool(type(value).model_config.get("frozen"))
    return False


@functools.lru_cache(maxsize=None)
def _model_fields(cls: type) -> tuple[str, ...]:
    """Public fields a model class is built from (not state such as `TestModel.last_model_request_parameters`)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_"))


def _key_settings(settings: Any) -> Any:
    """Model settings as key material: transport-only settings and secret headers left out."""
    if not isinstance(settings, Mapping):
        return settings
    keyed = {k: v for k, v in settings.items() if k not in _SETTINGS_NOT_IN_KEY}
    headers = keyed.get("extra_headers")
    if isinstance(headers, Mapping):
        kept = {str(k).lower(): v for k, v in headers.items() if not _is_secret_header(str(k))}
        if kept:
            keyed["extra_headers"] = kept
        else:
            del keyed["extra_headers"]
    return keyed


@functools.lru_cache(maxsize=1024)
def _is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in _TRACE_HEADERS or any(word in lowered for word in _SECRET_HEADER_WORDS)


@functools.lru_cache(maxsize=None)
def _is_plain_dataclass(cls: type) -> bool:
    """Instances of `cls` are keyed by their fields (dataclasses that are not models or toolsets)."""
    return dataclasses.is_dataclass(cls) and not issubclass(cls, (Model, AbstractToolset, BaseModel))


@functools.lru_cache(maxsize=None)
def _data_fields(cls: type) -> tuple[tuple[str, ...], str | None]:
    """Public field names of a dataclass and the type tag to key it with.

    Messages and parts are keyed by content alone: their `kind` fields already say what they are,
    and fields naming a particular run (timestamps, ids, usage) are left out.
    """
    names = [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_") or f.name in _PRIVATE_PART_FIELDS]
    if issubclass(cls, (_messages.ModelRequest, _messages.ModelResponse)):
        return tuple(n for n in names if n not in _VOLATILE_MESSAGE_FIELDS), None
    if cls.__module__ == _messages.__name__ and ("part_kind" in names or "kind" in names):
        return tuple(n for n in names if n not in _VOLATILE_PART_FIELDS), None
    return tuple(names), _qualname(cls)


def _toolset_data(toolset: AbstractToolset[Any]) -> dict[str, Any]:
    data: dict[str, Any] = {"__toolset__": _qualname(type(toolset)), "id": toolset.id}
    if isinstance(toolset, FunctionToolset):
        data["tools"] = {name: {"def": tool.tool_def, "prepare": tool.prepare} for name, tool in toolset.tools.items()}
        # the toolset's instructions are sent to the model with its tools
        data["instructions"] = list(getattr(toolset, "_instructions", None) or ())  # pyright: ignore
    elif isinstance(toolset, ExternalToolset):
        data["tools"] = toolset.tool_defs
    elif isinstance(toolset, DynamicToolset):
        data["function"] = toolset.toolset_func
        data["per_run_step"] = toolset.per_run_step
    elif dataclasses.is_dataclass(toolset):
        data.update((name, getattr(toolset, name)) for name in _data_fields(type(toolset))[0])
    else:  # its tools are not readable without running it (an MCP server, a custom toolset)
        raise UnkeyableError(
            f"cannot read the tools of a {type(toolset).__qualname__} toolset without running it, "
            "so runs using it are not cached"
        )
    return data


def _effective_model(agent: AbstractAgent[Any, Any], run_model: Any) -> Any:
    """The model a run would use, in PydanticAI's order (`Agent._pick_raw_model`):
    `agent.override(model=...)` wins over the run's `model=`, which wins over the agent's."""
    override = agent._override_model.get() if isinstance(agent, Agent) else None  # pyright: ignore[reportPrivateUsage]
    if override is not None:
        return override.value
    return run_model if run_model is not None else agent.model


def effective_model_name(agent: AbstractAgent[Any, Any], run_model: Model | str | None) -> str | None:
    """`provider:name` of the model a run would use: an override, else the run's `model=`, else the agent's."""
    model = _effective_model(agent, run_model)
    if model is None:
        return None
    return model.model_id if isinstance(model, Model) else str(model)


def _merged_settings(agent: Agent[Any, Any], run_model: Any, run_settings: Any) -> Any:
    """Model, agent, capability and run settings merged in PydanticAI's order; callables kept by name."""
    model = _effective_model(agent, run_model)
    # `agent.override(model_settings=...)` replaces the agent's settings and makes the run's ignored.
    override = agent._override_model_settings.get()  # pyright: ignore[reportPrivateUsage]
    layers: list[Any] = [
        model.settings if isinstance(model, Model) else None,
        override.value if override is not None else agent.model_settings,
        agent._cap_model_settings,  # pyright: ignore[reportPrivateUsage]
        run_settings if override is None else None,
    ]
    merged: dict[str, Any] = {}
    dynamic: list[Any] = []
    for layer in layers:
        if layer is None:
            continue
        if callable(layer):
            dynamic.append(layer)
        elif isinstance(layer, Mapping):
            merged.update(layer)
        else:
            raise UnkeyableError(f"model settings of type {type(layer).__qualname__} are not a mapping")
    return {"static": _key_settings(merged), "dynamic": dynamic}


def _output_data(agent: Agent[Any, Any], run_output_type: Any) -> Any:
    if run_output_type is None:
        schema = agent._output_schema  # pyright: ignore[reportPrivateUsage]
    else:
        schema = _output_schema_for(run_output_type)
    return {
        "schema": _schema_json(schema),
        "validators": [v.function for v in agent._output_validators],  # pyright: ignore[reportPrivateUsage]
    }


_schema_jsons: dict[int, tuple[Any, bytes]] = {}


def _schema_json(schema: Any) -> bytes:
    """An output schema's key material, encoded once per schema object (schemas are built once and not
    changed; a large JSON schema would otherwise be encoded on every lookup)."""
    cached = _schema_jsons.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    processors = schema.toolset.processors if schema.toolset is not None else {}
    encoded = canonical_json(
        {
            "mode": schema.mode,
            "text": schema.allows_text,
            "none": schema.allows_none,
            "image": schema.allows_image,
            "deferred": schema.allows_deferred_tools,
            "object": schema.object_def,
            "template": getattr(schema, "template", None),
            "text_processor": _text_processor_data(schema.text_processor),
            "tools": {name: p.object_def for name, p in processors.items()},
        }
    )
    if len(_schema_jsons) >= 1024:
        _schema_jsons.clear()
    _schema_jsons[id(schema)] = (schema, encoded)
    return encoded


def _text_processor_data(processor: Any) -> Any:
    if processor is None:
        return None
    function_schema = getattr(processor, "_function_schema", None)
    return {
        "type": _qualname(type(processor)),
        "function": function_schema.function if function_schema is not None else None,
    }


def _output_schema_for(output_type: Any) -> Any:
    try:
        return _cached_output_schema(output_type)
    except TypeError:  # an unhashable spec (a list of types) is built each time
        return _build_output_schema(output_type)


def _build_output_schema(output_type: Any) -> Any:
    from pydantic_ai._output import OutputSchema  # noqa: PLC0415 - private, imported where used

    return OutputSchema.build(output_type)


_cached_output_schema = functools.lru_cache(maxsize=256)(_build_output_schema)


def _agent_data(agent: Agent[Any, Any], run_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Everything about the agent (and the run's agent-shaping kwargs) that changes the answer."""
    if agent._override_root_capability.get() is not None:  # pyright: ignore[reportPrivateUsage]
        # `override(spec=...)` swaps every capability contribution (instructions, settings, tools).
        raise UnkeyableError("agent.override(spec=...) replacing the agent's capabilities is not keyed")
    run_model = run_kwargs.get("model")
    # `agent.override(instructions=...)` / `(native_tools=...)` replace the agent's own and its capabilities'.
    override_instructions = agent._override_instructions.get()  # pyright: ignore[reportPrivateUsage]
    override_native_tools = agent._override_native_tools.get()  # pyright: ignore[reportPrivateUsage]
    return {
        "model": _effective_model(agent, run_model),  # a Model by its identity (`_model_data`), or its name
        "settings": _merged_settings(agent, run_model, run_kwargs.get("model_settings")),
        "system_prompts": [
            *agent._system_prompts,  # pyright: ignore[reportPrivateUsage]
            *(r.function for r in agent._system_prompt_functions),  # pyright: ignore[reportPrivateUsage]
        ],
        "instructions": list(override_instructions.value)
        if override_instructions is not None
        else [
            i.instruction
            for i in (*agent._instructions, *agent._cap_instructions)  # pyright: ignore[reportPrivateUsage]
        ],
        # without an override, native tools come from the capabilities, keyed below
        "native_tools": list(override_native_tools.value) if override_native_tools is not None else None,
        "toolsets": list(agent.toolsets),
        # capabilities act through hooks too (history processors, model selection, thinking, ...)
        "capabilities": agent._effective_root_capability(),  # pyright: ignore[reportPrivateUsage]
        "output": _output_data(agent, run_kwargs.get("output_type")),
        "end_strategy": agent.end_strategy,
        # outputs (and tool arguments) are validated with it: another context can give another output
        "validation_context": getattr(agent, "_validation_context", None),
        # an argument passed as None is the argument left out
        "run": {
            k: v
            for k, v in run_kwargs.items()
            if v is not None and k not in RUN_KWARGS_NOT_IN_KEY and k not in _AGENT_SHAPING
        },
    }


_AGENT_SHAPING = frozenset({"model", "model_settings", "output_type"})


def request_digest(
    agent: AbstractAgent[Any, Any],
    prompt: Any,
    history: Sequence[_messages.ModelMessage],
    run_kwargs: Mapping[str, Any],
    key_extra: Any = None,
) -> str:
    """SHA-256 hex digest of everything that changes the answer to this run.

    Raises:
        UnkeyableError: part of the agent or run cannot be turned into stable key material.
    """
    if not isinstance(agent, Agent):
        raise UnkeyableError(f"cannot read the configuration of a {type(agent).__qualname__}; only Agent is keyed")
    try:
        agent_data = _agent_data(agent, run_kwargs)
    except AttributeError as exc:  # a PydanticAI outside the tested range moved something
        raise UnkeyableError(f"this pydantic-ai version is not supported for keying: {exc}") from exc
    material = {
        "agent": agent_data,
        "prompt": prompt,
        "history": list(history),
        "extra": _tagged(key_extra),
    }
    conversation = run_kwargs.get("conversation")
    if conversation is not None:
        # `conversation=` stands in for `message_history=`: key its messages as the history, so the same
        # messages hit either way, plus the deferred tool calls it carries.
        try:
            material["history"] = [*material["history"], *conversation.messages]
            if conversation.deferred_tool_requests is not None:
                material["deferred_tool_requests"] = conversation.deferred_tool_requests
        except AttributeError as exc:
            raise UnkeyableError(f"cannot read the messages of conversation={type(conversation).__qualname__}") from exc
    return hashlib.sha256(canonical_json(material)).hexdigest()


def _tagged(value: Any) -> Any:
    """`key_extra` with what JSON would merge kept apart: `{1: x}` is not `{"1": x}`, `(1,)` is not `[1]`."""
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value):
            return {k: _tagged(v) for k, v in value.items()}
        items = [[_tagged(k), _tagged(v)] for k, v in value.items()]
        return {"__mapping__": sorted(items, key=lambda kv: canonical_json(kv[0]))}
    if isinstance(value, tuple):
        return {"__tuple__": [_tagged(v) for v in value]}
    if isinstance(value, list):
        return [_tagged(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return {"__set__": sorted((_tagged(v) for v in value), key=canonical_json)}
    return value


def format_key(namespace: str, task_name: str, digest: str) -> str:
    """`<namespace>:<key-version>:<task_name>:<digest>`, readable and groupable in `redis-cli`."""
    return f"{namespace}:{KEY_VERSION}:{task_name}:{digest}"
