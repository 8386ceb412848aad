"""Canonical JSON of key material: sorted keys, no whitespace, objects reduced to their data.

Messages and parts are keyed by content (fields naming one run left out), dataclasses by their
fields, toolsets by their tools, models by their identity (`_models`), functions by name, code and
what they close over (`_functions`). Anything else with no data form raises `UnkeyableError`.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import functools
import hashlib
import json
import pathlib
import types
import uuid
from collections.abc import Callable
from typing import Any

import pydantic_core
from pydantic import BaseModel
from pydantic_ai import messages as _messages
from pydantic_ai.models import Model
from pydantic_ai.template import TemplateStr
from pydantic_ai.toolsets import AbstractToolset, ExternalToolset, FunctionToolset
from pydantic_ai.toolsets._dynamic import DynamicToolset

__all__ = ("UnkeyableError", "canonical_json", "qualname", "instance_extras")

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
_VOLATILE_PART_FIELDS = ("timestamp", "id")
# The parts whose `id` only names a provider's item (a text or tool call it returned). On any other part it is content
# the model receives: a compaction's id, an instruction's id (rendered into the text). Provider details are keyed on
# every part: PydanticAI sends them back (Gemini's thought signatures, the Responses API's `phase` of a text and
# `namespace` of a tool call, Anthropic's raw citations, a thinking part's or native tool call's provider data).
_ITEM_ID_KINDS = frozenset({"text", "tool-call", "tool-return", "retry-prompt", "user-prompt", "system-prompt"})
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
        return _encoder.encode(value).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        if isinstance(exc, UnkeyableError):
            raise
        raise UnkeyableError(f"cannot derive a cache key: {exc}") from exc


_encoder: json.JSONEncoder  # made below, once `_to_data` exists (an encoder per call costs a microsecond)


def qualname(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or type(obj).__module__
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{name}"


def _to_data(obj: Any) -> Any:
    """`json.dumps` hook: the stable data form of one non-JSON object (by a handler chosen once per type)."""
    cls = type(obj)
    if obj.__class__ is not cls:  # a proxy (`wrapt`, `LocalProxy`) or a mock: what it says it is, read through it
        cls = obj.__class__
    handler = _handlers.get(cls)
    if handler is None:
        if len(_handlers) >= 4096:  # classes made at run time (generic models): forget, do not grow without bound
            _handlers.clear()
        handler = _handlers[cls] = _handler_for(cls)
    return handler(obj)


_handlers: dict[type, Callable[[Any], Any]] = {}


def _handler_for(cls: type) -> Callable[[Any], Any]:  # noqa: C901 - one flat dispatch
    """How instances of `cls` become data (decided by their type alone, once)."""
    if _is_plain_dataclass(cls):  # the common case
        names, type_name = _data_fields(cls)
        if type_name is None:  # messages and parts: their fields, those left at None left out (a field added
            # later as None keeps keys stable)
            return lambda obj: {name: value for name in names if (value := getattr(obj, name, None)) is not None}
        return functools.partial(_tagged_dataclass, names, type_name)
    if issubclass(cls, Model):
        return model_data
    if issubclass(cls, AbstractToolset):
        return _toolset_data
    if issubclass(cls, BaseModel):
        # python mode, so sets stay sets (sorted below) instead of lists in hash-seed order
        return lambda obj: {"__type__": qualname(type(obj)), "data": obj.model_dump(round_trip=True)}
    if issubclass(cls, (bytes, bytearray, memoryview)):
        return lambda obj: {"__sha256__": hashlib.sha256(obj).hexdigest()}
    if issubclass(cls, enum.Enum):
        return lambda obj: obj.value
    if issubclass(cls, (datetime.datetime, datetime.date, datetime.time)):
        return lambda obj: obj.isoformat()
    if issubclass(cls, datetime.timedelta):
        return lambda obj: {"__timedelta__": obj.total_seconds()}
    if issubclass(cls, (uuid.UUID, decimal.Decimal, pathlib.PurePath)):
        return lambda obj: {"__" + type(obj).__name__.lower() + "__": str(obj)}
    if issubclass(cls, tuple):
        return list
    if issubclass(cls, (set, frozenset)):
        return lambda obj: sorted(obj, key=canonical_json)
    if issubclass(cls, functools.partial):
        return lambda obj: {"__partial__": obj.func, "args": obj.args, "kwargs": obj.keywords}
    if issubclass(cls, types.FunctionType):
        return function_data
    if issubclass(cls, types.MethodType):
        return lambda obj: {"__method__": obj.__func__, "self": self_data(obj.__self__)}
    if issubclass(cls, (type, types.BuiltinFunctionType)):
        return lambda obj: {"__callable__": qualname(obj)}
    if issubclass(cls, TemplateStr):
        return lambda obj: {"__template__": obj._source}  # pyright: ignore[reportPrivateUsage]
    return _other_data


def _tagged_dataclass(names: tuple[str, ...], type_name: str, obj: Any) -> dict[str, Any]:
    """Another dataclass (a capability, a profile): its fields, its type, and attributes set beyond them."""
    data = {name: value for name in names if (value := getattr(obj, name, None)) is not None}
    data["__type__"] = type_name
    extras = instance_extras(obj)
    if extras:
        data["__attrs__"] = extras
    return data


def _other_data(obj: Any) -> Any:
    try:  # what pydantic knows how to serialize (URLs, IP addresses, ...), as pydantic serializes it
        return {"__" + qualname(type(obj)) + "__": pydantic_core.to_jsonable_python(obj)}
    except pydantic_core.PydanticSerializationError:
        pass
    if in_model.get():  # a model's own helper object (a callable test double): keyed by its class and code
        call = getattr(type(obj), "__call__", None)
        return {"__object__": qualname(type(obj)), "call": call if isinstance(call, types.FunctionType) else None}
    raise UnkeyableError(
        f"cannot derive a cache key from a {type(obj).__qualname__!s} object; "
        "pass key material you choose with key_extra= instead"
    )


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
    declared = getattr(cls, "_pyai_caching_key_fields", None)
    if declared is not None:  # a class of ours that says which of its fields change an answer (`ResponseCache`: none)
        return tuple(declared), qualname(cls)
    # private fields a dataclass computes itself (`init=False`: CombinedCapability's dispatch tables) derive from the rest
    fields = [f.name for f in dataclasses.fields(cls) if f.init or not f.name.startswith("_")]
    names = [n for n in fields if not n.startswith("_") or n in _PRIVATE_PART_FIELDS]
    if issubclass(cls, (_messages.ModelRequest, _messages.ModelResponse)):
        return tuple(n for n in names if n not in _VOLATILE_MESSAGE_FIELDS), None
    if _is_message_part(cls) and ("part_kind" in names or "kind" in names):
        kind = getattr(cls, "part_kind", None)
        volatile = _VOLATILE_PART_FIELDS if kind in _ITEM_ID_KINDS else ("timestamp",)
        return tuple(n for n in names if n not in volatile), None
    # other dataclasses (capabilities such as `Hooks`, whose hooks live in `_registry`): every field but a run's state
    return tuple(n for n in fields if n not in _STATE_FIELDS), qualname(cls)


def _is_message_part(cls: type) -> bool:
    """A part of a message: a dataclass of `pydantic_ai.messages`, or a subclass of one (the typed tool call and return
    parts PydanticAI defines elsewhere, `ToolSearchReturnPart`; a user's own), sent as the part it extends."""
    return any(base.__module__ == _messages.__name__ and dataclasses.is_dataclass(base) for base in cls.__mro__)


_STATE_FIELDS = frozenset({"_step", "_pending", "_lock", "_tasks", "_entered_count", "_cache", "_client"})
"""Private dataclass fields that hold what a capability or toolset is doing, not what it is configured to do."""


def instance_extras(obj: Any) -> dict[str, Any] | None:
    """Public attributes an instance has beyond its dataclass fields (a subclass without `@dataclass` that sets
    them in `__init__`): they configure it too. Private ones are its own bookkeeping."""
    attrs = getattr(obj, "__dict__", None)
    if not attrs:
        return None
    cls = obj.__class__
    fields = _all_fields(cls)
    if attrs.keys() <= fields:  # the common case: only its fields
        return None
    names = attrs.keys() - fields
    extras = {
        k: attrs[k]
        for k in names
        if k[0] != "_" and not isinstance(getattr(cls, k, None), functools.cached_property)
    }
    return extras or None


@functools.lru_cache(maxsize=None)
def _all_fields(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


def _toolset_data(toolset: AbstractToolset[Any]) -> dict[str, Any]:
    data: dict[str, Any] = {"__toolset__": qualname(type(toolset)), "id": toolset.id}
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


_encoder = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=True,
    check_circular=False,  # a cycle ends in RecursionError, turned into UnkeyableError
    default=_to_data,
)

# the handlers `_to_data` dispatches to; imported last, as they use `canonical_json` themselves
from ._functions import function_data, in_model, self_data  # noqa: E402
from ._models import model_data  # noqa: E402
