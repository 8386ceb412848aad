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

from ._canonical import UnkeyableError, canonical_json  # first: it completes the handlers it dispatches to
from ._agent import (
    KEY_VERSION,
    RUN_KWARGS_NOT_IN_KEY,
    digest_of,
    effective_model_name,
    format_key,
    request_digest,
    request_material,
)
from ._run_key import RunKey, agent_json, digest_of_parts, rest_json
from ._manifest import request_manifest

__all__ = (
    "KEY_VERSION",
    "UnkeyableError",
    "RUN_KWARGS_NOT_IN_KEY",
    "canonical_json",
    "effective_model_name",
    "request_digest",
    "request_material",
    "digest_of",
    "agent_json",
    "rest_json",
    "digest_of_parts",
    "RunKey",
    "request_manifest",
    "format_key",
)
