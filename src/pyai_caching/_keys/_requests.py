"""What one model request is keyed by: what the model receives, not how the agent got there.

The messages as sent (by content: timestamps, run and conversation ids left out, and tool call ids that
PydanticAI generated itself renumbered in order of appearance, so a run that made them up again still
matches), the merged settings (transport-only ones and secret headers left out), the request parameters
(function and output tools, output mode and schema, native tools, instruction parts, thinking) and the
model's identity (class, `provider:name`, endpoint, the fields it was built with).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from collections.abc import Sequence
from typing import Any

from pydantic_ai import messages as _messages
from pydantic_ai.models import Model, ModelRequestParameters

from ._canonical import canonical_json, qualname
from ._manifest import Manifest, _digest, _endpoint, _shown, message_kind  # pyright: ignore[reportPrivateUsage]
from ._models import key_settings

__all__ = ("model_request_digest", "model_request_manifest")

_GENERATED_ID = re.compile(rb'"tool_call_id":"pyd_ai_[0-9A-Za-z_-]*"')


def model_request_digest(
    model: Model,
    messages: Sequence[_messages.ModelMessage],
    settings: Any,
    parameters: ModelRequestParameters,
) -> str:
    """SHA-256 hex digest of one model request.

    Raises:
        UnkeyableError: part of it has no stable data form (a custom model holding an arbitrary object).
    """
    material = {
        "kind": "model_request",
        "model": model,
        "settings": key_settings(settings) or None,  # no settings, or only transport ones, are none
        "parameters": _parameters_data(parameters),
        "messages": list(messages),
    }
    return hashlib.sha256(_renumbered(canonical_json(material))).hexdigest()


def _renumbered(encoded: bytes, seen: dict[bytes, bytes] | None = None) -> bytes:
    """Tool call ids PydanticAI generated (`pyd_ai_<uuid>`) as their order of first appearance (in `seen`, shared
    across calls): a call and the return naming it still pair up, and a run whose ids were generated anew keys the
    same."""
    seen = {} if seen is None else seen

    def number(match: re.Match[bytes]) -> bytes:
        return seen.setdefault(match.group(0), b'"tool_call_id":"#%d"' % len(seen))

    return _GENERATED_ID.sub(number, encoded)


def _parameters_data(parameters: ModelRequestParameters) -> dict[str, Any]:
    """Every field that shapes the request; not the private ones kept for telemetry."""
    return {name: getattr(parameters, name) for name in _parameter_fields(type(parameters))}


@functools.lru_cache(maxsize=8)
def _parameter_fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if not f.name.startswith("_telemetry"))


def model_request_manifest(
    model: Model,
    messages: Sequence[_messages.ModelMessage],
    settings: Any,
    parameters: ModelRequestParameters,
) -> Manifest:
    """What a model request was keyed by, in the words `explain` compares (made on misses only)."""
    items: dict[str, str] = {"model": model.model_id, "model class": qualname(type(model))}
    endpoint = _endpoint(model)
    if endpoint:
        items["model endpoint"] = endpoint
    items["model configuration"] = _digest(model)
    for name, value in sorted((key_settings(settings) or {}).items()):
        items[f"model_settings.{name}"] = _shown(name, value)
    for kind, tools in (("tool", parameters.function_tools), ("output tool", parameters.output_tools)):
        for tool in tools:
            items[f"{kind} `{tool.name}`: description"] = _digest(tool.description)
            items[f"{kind} `{tool.name}`: parameters schema"] = _digest(tool.parameters_json_schema)
    items["output mode"] = str(parameters.output_mode)
    items["output schema"] = _digest(parameters.output_object)
    items["instructions"] = _digest(getattr(parameters, "instruction_parts", None))
    items["native tools"] = _digest(parameters.native_tools)
    items["request parameters"] = _digest(_parameters_data(parameters))
    seen: dict[bytes, bytes] = {}
    digests = ["#" + hashlib.sha256(_renumbered(canonical_json(m), seen)).hexdigest()[:12] for m in messages]
    return {"items": items, "messages": [f"{message_kind(m)} {d}" for m, d in zip(messages, digests, strict=True)]}
