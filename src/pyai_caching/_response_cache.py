"""`ResponseCache`: each model request answered from the cache when that exact request was seen before.

A PydanticAI capability. Through its `get_wrapper_model` hook (before PydanticAI 2.62:
`before_model_request`) it wraps whichever model serves each request in a `CachingModel`, so the agent
loop runs as usual (tools execute, every run method works) and only the model call is skipped on a hit.
Keyed on what the model receives (`_keys.model_request_digest`); the engine does the rest: in-flight
requests first, then the store, one model call per key, stored before it is handed out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from datetime import timedelta
from typing import Any

from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models import (
    Model,
    ModelRequestContext,
)
from pydantic_ai.models.wrapper import WrapperModel

from ._arguments import backoff, check_costs_and_recorder
from ._attempts import Attempts, has_model_fallback
from ._caching_model import FALLBACK, CachingModel, keyed_model
from ._config import (
    CacheMode,
    check_task_name,
    resolve_mode,
    resolve_namespace,
    resolve_store_spec,
    resolve_ttl,
)
from ._keys import UnkeyableError, format_key
from ._keys._requests import model_request_digest
from ._registry import loop_state
from ._request_accounting import (
    RequestCall,
)
from .costs import ModelCosts
from .recorders import ExpenseCallback, ExpenseRecorder
from .stores import Store

__all__ = ("ResponseCache",)

_HAS_WRAPPER_HOOK = hasattr(AbstractCapability, "get_wrapper_model")



@dataclass
class ResponseCache(AbstractCapability[Any]):
    """Cache each model request of the agent's runs (`Agent(model, capabilities=[ResponseCache(task_name=...)])`).

    Arguments are resolved as for `cached_agent_run`: the argument, else the environment (`LLM_CACHE_REDIS_URL`,
    `LLM_CACHE_DIR`, `LLM_CACHE_TTL`, `LLM_CACHE_MODE`, `LLM_CACHE_NAMESPACE`); inside the pytest plugin's
    `llm_cache`, its store and mode. A hit returns the recorded response (a stream replays its recorded events)
    with `metadata["pyai_caching"] = {"cached": True, "key": ..., "saved_cost": ...}`; the run's usage still counts
    the recorded usage, while stats and the expense recorder count it as saved, never spent.
    """

    _: KW_ONLY
    task_name: str
    store: Store | None = None
    redis_url: str | None = None
    ttl: float | timedelta | None = None
    mode: CacheMode | None = None
    namespace: str | None = None
    expense_recorder: ExpenseRecorder | ExpenseCallback | None = field(default=None, repr=False)
    custom_costs: Mapping[str, ModelCosts] | None = field(default=None, repr=False)
    max_wait: float = 30.0
    initial_wait: float = 1.0

    _pyai_caching_key_fields = ()
    """Nothing here changes an answer: a whole-run key over an agent with this capability ignores it."""

    def __post_init__(self) -> None:
        check_task_name(self.task_name)
        resolve_ttl(self.ttl)
        if self.mode is not None:
            resolve_mode(self.mode)
        if self.store is not None and not isinstance(self.store, Store):
            raise TypeError(f"store must be a pyai_caching Store, not {type(self.store).__name__}")
        check_costs_and_recorder(self.custom_costs, self.expense_recorder)
        backoff(self.initial_wait, self.max_wait)

    @classmethod
    def get_serialization_name(cls) -> str | None:
        return "ResponseCache"

    def get_wrapper_model(self, model: Model) -> Model | None:
        return None if _is_cached_by(model, self) else CachingModel(model, self)

    async def before_model_request(self, ctx: Any, request_context: ModelRequestContext) -> ModelRequestContext:
        # a run using PydanticAI's `ModelFallback` moves a failed request to the next model: no retries of our own
        FALLBACK.set(has_model_fallback(None, [getattr(ctx, "root_capability", None)]))
        if not _HAS_WRAPPER_HOOK and not _is_cached_by(request_context.model, self):  # PydanticAI 2.58 to 2.61
            request_context.model = CachingModel(request_context.model, self)
        return request_context

    def _attempts(self) -> Attempts:
        return Attempts(backoff(self.initial_wait, self.max_wait), retry=not FALLBACK.get())

    async def _request_call(self, model: Model, messages: list[ModelMessage], settings: Any, params: Any) -> RequestCall:
        from ._scope import active_scope

        scope = active_scope()
        store, mode = (scope.store, self.mode or scope.mode) if scope is not None else (self.store, self.mode)
        namespace = resolve_namespace(self.namespace)
        spec = None if store is not None else resolve_store_spec(self.redis_url)
        state = await loop_state()
        call = RequestCall(
            task_name=self.task_name,
            mode=resolve_mode(mode),
            namespace=namespace,
            ttl=resolve_ttl(self.ttl),
            cache=state.cache_for(spec, store),
            flights=state.flights,
            scope=scope,
            recorder=self.expense_recorder,
        )
        if call.mode != "off":
            try:
                digest = model_request_digest(keyed_model(model), messages, settings, params)
                call.key = format_key(namespace, self.task_name, digest)
            except UnkeyableError as exc:
                call.unkeyable = exc
        return call


def _is_cached_by(model: Model, config: ResponseCache) -> bool:
    while isinstance(model, WrapperModel):
        if isinstance(model, CachingModel) and model.config is config:
            return True
        model = model.wrapped
    return False
