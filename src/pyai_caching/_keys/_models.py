"""A model's identity as key material, and model settings without what only changes how a request is sent."""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Mapping
from typing import Any

from pydantic_ai.models import Model
from pydantic_ai.models.instrumented import InstrumentedModel

from ._canonical import canonical_json, instance_extras, qualname
from ._functions import function_data, in_model

__all__ = ("model_data", "key_settings")

# Settings that change how a request is sent, not what comes back.
_SETTINGS_NOT_IN_KEY = frozenset(
    {"timeout", "request_timeout", "first_event_timeout", "max_retries", "parallel_tool_calls_timeout"}
)

# Header names (lowercase) that authenticate or trace a request: never key material (`extra_headers` are keyed
# otherwise, since headers such as `anthropic-beta` change what the provider does).
_SECRET_HEADER_WORDS = ("auth", "key", "token", "secret", "cookie", "session", "signature", "credential")
_TRACE_HEADERS = frozenset({"traceparent", "tracestate", "baggage", "x-request-id", "x-stainless-retry-count"})


def model_data(model: Model) -> dict[str, Any]:
    """A model's identity: its class (the API flavour), `provider:name`, endpoint, settings, profile, and the
    public fields it was built with (a `FunctionModel`'s function, a `TestModel`'s scripted output).

    The provider's client (API keys, auth headers) is never read. An `InstrumentedModel` (OpenTelemetry only) is
    keyed as the model it wraps.
    """
    while isinstance(model, InstrumentedModel):
        model = model.wrapped
    name, has_client, fields = _model_class(model.__class__)  # (a proxy's is what it stands for: read through it)
    data: dict[str, Any] = {"__model__": name, "id": model.model_id, "settings": key_settings(model.settings)}
    try:
        base_url = model.base_url
    except Exception:  # noqa: BLE001 - a provider that cannot say: the model id and class must do
        base_url = None
    if base_url:
        data["base_url"] = str(base_url)
    profile = getattr(model, "_profile", None)
    if profile is not None:
        data["profile"] = profile
    client_config = _client_config(model) if has_client else None
    if client_config:
        data["client"] = client_config
    if fields is not None:
        extras = instance_extras(model)  # attributes a subclass sets in `__init__`
        for f in (*fields, *sorted(extras)) if extras else fields:
            value = getattr(model, f, None)
            if value is None or type(value) in (str, int, float, bool):
                data[f] = value
            elif isinstance(value, types.FunctionType):
                data[f] = function_data(value, model_state=True)
            else:  # encoded now, while what it holds is keyed as model state
                token = in_model.set(True)
                try:
                    data[f] = canonical_json(value)
                finally:
                    in_model.reset(token)
    return data


@functools.lru_cache(maxsize=None)
def _model_class(cls: type) -> tuple[str, bool, tuple[str, ...] | None]:
    """A model class's name, whether it has an SDK client, and (a dataclass) the public fields it is built from
    (not state such as `TestModel.last_model_request_parameters`)."""
    fields = None
    if dataclasses.is_dataclass(cls):
        fields = tuple(f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_"))
    return qualname(cls), hasattr(cls, "client"), fields


def _client_config(model: Model) -> dict[str, Any] | None:
    """Headers and query parameters set on the provider's SDK client (`OpenAI-Beta`, Azure's `api-version`): they
    change what the endpoint does. Authentication headers are left out; nothing else of the client is read."""
    try:
        client = model.client  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a model without a built client
        return None
    headers = getattr(client, "_custom_headers", None)  # the Stainless SDKs: OpenAI, Anthropic, Groq
    query = getattr(client, "_custom_query", None)
    config: dict[str, Any] = {}
    if isinstance(headers, Mapping):
        kept = {str(k).lower(): str(v) for k, v in headers.items() if not _is_secret_header(str(k))}
        if kept:
            config["headers"] = kept
    if isinstance(query, Mapping) and query:
        config["query"] = {str(k): str(v) for k, v in query.items() if not _is_secret_header(str(k))}
    return config or None


def key_settings(settings: Any) -> Any:
    """Model settings as key material: transport-only settings and secret headers left out."""
    if settings is None or (type(settings) is not dict and not isinstance(settings, Mapping)):
        return settings
    keyed = {k: v for k, v in settings.items() if k not in _SETTINGS_NOT_IN_KEY}
    headers = keyed.get("extra_headers")
    if headers is not None and isinstance(headers, Mapping):
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
