"""A key's manifest: a small summary of its material, stored next to the entry, to say why a call misses.

Items are named as a user would name them (`model_settings.temperature`, ``tool `search`: parameters
schema``, `output schema`); each holds a short value (the model's name, a scalar setting) or a digest
(`#` and 12 hex digits). Messages are a list of `kind #digest`. Nothing secret goes in: settings are
shown only as scalars, and only settings that are key material at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic_ai import messages as _messages
from pydantic_ai.models import Model
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset

from ._canonical import canonical_json, qualname

__all__ = ("request_manifest", "Manifest")

Manifest = dict[str, Any]
"""`{"items": {name: value}, "messages": ["user prompt #3f2a...", ...]}`"""

_SHOWN_STRING = 80  # characters; longer settings are shown as digests
_SECRET_WORDS = ("key", "secret", "password", "auth", "credential", "cookie", "session", "signature")


def request_manifest(material: Mapping[str, Any], agent_json: bytes | None = None) -> Manifest:
    """The manifest of `request_material` (costs a few dozen microseconds: made on misses only). `agent_json`: the
    canonical JSON of `material["agent"]`, if known: the agent's items are then worked out once per configuration."""
    agent_items = _AGENT_ITEMS.get(agent_json) if agent_json is not None else None
    if agent_items is None:
        agent_items = _agent_items(material["agent"])
        if agent_json is not None:
            if len(_AGENT_ITEMS) >= 64:  # agents configured per request: forget, do not grow without bound
                _AGENT_ITEMS.clear()
            _AGENT_ITEMS[agent_json] = agent_items
    items = dict(agent_items)
    items["prompt"] = _digest(material["prompt"])
    items["key_extra"] = _digest(material["extra"])
    if "deferred_tool_requests" in material:
        items["deferred tool requests"] = _digest(material["deferred_tool_requests"])
    return {"items": items, "messages": [f"{message_kind(m)} {_digest(m)}" for m in material["history"]]}


_AGENT_ITEMS: dict[bytes, dict[str, str]] = {}
"""The agent's items by the canonical JSON they were worked out from (the same JSON: the same items)."""


def _agent_items(agent: Mapping[str, Any]) -> dict[str, str]:
    items: dict[str, str] = {}
    model = agent["model"]
    items["model"] = model.model_id if isinstance(model, Model) else str(model)
    if isinstance(model, Model):
        items["model class"] = qualname(type(model))
        endpoint = _endpoint(model)
        if endpoint:
            items["model endpoint"] = endpoint
    items["model configuration"] = _digest(model)
    settings = agent["settings"]
    for name, value in sorted((settings["static"] or {}).items()):
        items[f"model_settings.{name}"] = _shown(name, value)
    if settings["dynamic"]:
        items["model_settings (functions)"] = _digest(settings["dynamic"])
    items["system prompts"] = _digest(agent["system_prompts"])
    items["instructions"] = _digest(agent["instructions"])
    for toolset in agent["toolsets"]:
        _toolset_items(items, toolset)
    for name in ("native_tools", "capabilities", "end_strategy", "validation_context"):
        items[name.replace("_", " ")] = _digest(agent[name])
    items["output schema"] = _digest(agent["output"]["schema"])
    items["output validators"] = _digest(agent["output"]["validators"])
    for name, value in sorted(agent["run"].items()):
        if name == "toolsets" and isinstance(value, (list, tuple)):
            for toolset in value:
                _toolset_items(items, toolset)
        else:
            items[f"{name} (run argument)"] = _digest(value)
    return items


def message_kind(message: Any) -> str:
    """`user prompt`, `tool return`, `response: text, tool call`, ...: what a message holds, in words."""
    parts = getattr(message, "parts", ())
    kinds = list(dict.fromkeys(str(getattr(p, "part_kind", "part")).replace("-", " ") for p in parts))
    if isinstance(message, _messages.ModelResponse):
        return "response: " + (", ".join(kinds) or "empty")
    return ", ".join(kinds) or "empty request"


def _toolset_items(items: dict[str, str], toolset: Any) -> None:
    if isinstance(toolset, FunctionToolset):
        for name, tool in toolset.tools.items():
            definition = tool.tool_def
            items[f"tool `{name}`: description"] = _digest(definition.description)
            items[f"tool `{name}`: parameters schema"] = _digest(definition.parameters_json_schema)
            rest = {f.name: getattr(definition, f.name) for f in dataclasses.fields(definition)}
            for shown in ("name", "description", "parameters_json_schema"):
                rest.pop(shown, None)
            items[f"tool `{name}`: definition"] = _digest({"def": rest, "prepare": tool.prepare})
        instructions = list(getattr(toolset, "_instructions", None) or ())
        if instructions:
            items[f"toolset `{toolset.id}`: instructions"] = _digest(instructions)
    elif isinstance(toolset, AbstractToolset):
        items[f"toolset `{toolset.id or type(toolset).__qualname__}`"] = _digest(toolset)


def _endpoint(model: Model) -> str | None:
    """The model's base URL without credentials or query."""
    try:
        url = model.base_url
    except Exception:  # noqa: BLE001 - a provider that cannot say
        return None
    if not url:
        return None
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _shown(name: str, value: Any) -> str:
    """A setting as the text a diff shows: scalars as JSON, anything else (or anything secret-looking) as a digest."""
    if any(word in name.lower() for word in _SECRET_WORDS):
        return _digest(value)
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    if isinstance(value, str) and len(value) <= _SHOWN_STRING:
        return json.dumps(value, ensure_ascii=False)
    return _digest(value)


def _digest(value: Any) -> str:
    return "#" + hashlib.sha256(canonical_json(value)).hexdigest()[:12]
