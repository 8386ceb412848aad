"""`ResponseCache`: each model request answered from the cache when that exact request was seen before.

A PydanticAI capability. Through its `get_wrapper_model` hook (before PydanticAI 2.62:
`before_model_request`) it wraps whichever model serves each request in a `CachingModel`, so the agent
loop runs as usual (tools execute, every run method works) and only the model call is skipped on a hit.
Keyed on what the model receives (`_keys.model_request_digest`); the engine does the rest: in-flight
requests first, then the store, one model call per key, stored before it is handed out.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import dataclasses
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import (
    CompletedStreamedResponse,
    Model,
    ModelRequestContext,
    ModelRequestParameters,
    StreamedResponse,
)
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings

from ._arguments import backoff, check_costs_and_recorder
from ._attempts import Attempts, RetryingModel, has_model_fallback
from ._config import (
    CacheMode,
    check_task_name,
    resolve_mode,
    resolve_namespace,
    resolve_store_spec,
    resolve_ttl,
)
from ._engine import Missing, Produced, fetch, read
from ._keys import UnkeyableError, format_key
from ._keys._requests import model_request_digest, model_request_manifest
from ._registry import loop_state
from ._request_accounting import (
    RequestCall,
    account_request,
    count_request,
    in_background,
    missing_request_error,
    report_request,
)
from ._responses import CachedResponse, decode_response, encode_response
from ._stream_recording import record_events
from .costs import ModelCosts, price_responses
from .recorders import ExpenseCallback, ExpenseRecorder
from .stores import Store

__all__ = ("CachingModel", "ResponseCache")

_HAS_WRAPPER_HOOK = hasattr(AbstractCapability, "get_wrapper_model")

_FALLBACK: contextvars.ContextVar[bool] = contextvars.ContextVar("pyai_caching_fallback", default=False)
"""Whether the model request being made belongs to a run with `ModelFallback` (set by the request's own hook)."""

MARK = "pyai_caching"
"""The key under which a response served from the cache says so in its `metadata`."""


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
        _FALLBACK.set(has_model_fallback(None, [getattr(ctx, "root_capability", None)]))
        if not _HAS_WRAPPER_HOOK and not _is_cached_by(request_context.model, self):  # PydanticAI 2.58 to 2.61
            request_context.model = CachingModel(request_context.model, self)
        return request_context

    def _attempts(self) -> Attempts:
        return Attempts(backoff(self.initial_wait, self.max_wait), retry=not _FALLBACK.get())

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
                digest = model_request_digest(_keyed_model(model), messages, settings, params)
                call.key = format_key(namespace, self.task_name, digest)
            except UnkeyableError as exc:
                call.unkeyable = exc
        return call


@dataclass(init=False)
class CachingModel(WrapperModel):
    """`wrapped`, with each request answered from the cache of `config` when it was seen before."""

    config: ResponseCache = field(repr=False, compare=False)

    def __init__(self, wrapped: Model, config: ResponseCache) -> None:
        super().__init__(wrapped)
        self.config = config

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        call = await self.config._request_call(self.wrapped, messages, model_settings, model_request_parameters)  # pyright: ignore[reportPrivateUsage]
        started = time.perf_counter()
        if call.key is None:  # `off`, or a request with no data form
            call.check_uncached()
            entry = await self._send(messages, model_settings, model_request_parameters)
            await account_request(call, entry, hit=False, errors=0, started=started)
            return entry.response
        manifest = _manifest(_keyed_model(self.wrapped), messages, model_settings, model_request_parameters)

        async def produce() -> Produced[CachedResponse]:
            entry = await self._send(messages, model_settings, model_request_parameters)
            return Produced(entry, _encoded(entry, manifest))

        async def orphaned(entry: CachedResponse) -> None:
            await account_request(call, entry, hit=False, errors=0, started=started)

        try:
            outcome = await fetch(
                call.flights,
                call.cache,
                call.key,
                mode=call.mode,
                ttl=call.ttl,
                decode=decode_response,
                copy=_copied,
                produce=produce,
                orphaned=orphaned,
            )
        except Missing as missing:
            raise await missing_request_error(call, missing, manifest) from missing.drift
        await account_request(call, outcome.value, hit=outcome.hit, errors=outcome.errors, started=started)
        return _served(outcome.value, call.key) if outcome.hit else outcome.value.response

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: Any = None,
    ) -> AsyncIterator[StreamedResponse]:
        """A hit replays the recorded events (the original chunking; one event per part for a response recorded
        without streaming); a miss streams live and is stored once the stream was read to its end."""
        call = await self.config._request_call(self.wrapped, messages, model_settings, model_request_parameters)  # pyright: ignore[reportPrivateUsage]
        started = time.perf_counter()
        manifest = None
        if call.key is None:
            call.check_uncached()
        else:
            manifest = _manifest(_keyed_model(self.wrapped), messages, model_settings, model_request_parameters)
            try:
                outcome = await read(call.flights, call.cache, call.key, mode=call.mode, decode=decode_response)
            except Missing as missing:
                raise await missing_request_error(call, missing, manifest) from missing.drift
            if outcome.value is not None:
                entry = outcome.value
                replay = entry.events if entry.events is not None else True
                await account_request(call, entry, hit=True, errors=outcome.errors, started=started)
                served = CompletedStreamedResponse(
                    _served(entry, call.key), model_request_parameters=model_request_parameters, replay_events=replay
                )
                outer = _recording_run(self.wrapped)
                if outer is not None:  # a whole-run stream around this run records what it replays, as if live
                    outer.streams.append(served)
                    outer.recordings.append(record_events(served, started))
                yield served
                return
        attempts = self.config._attempts()  # pyright: ignore[reportPrivateUsage]
        if run_context is not None and has_model_fallback(None, [getattr(run_context, "root_capability", None)]):
            attempts.retry = False  # (a stream is opened outside the request's own context: its hook's flag is not seen)
        retrying = RetryingModel(self.wrapped, attempts)
        opened: StreamedResponse | None = None
        try:
            async with retrying.request_stream(messages, model_settings, model_request_parameters, run_context) as stream:
                opened, recording = stream, record_events(stream, started)
                yield stream
        except BaseException as exc:  # the stream failed or was left: what came back was paid for, never stored
            if opened is not None:
                spent = self._priced(opened.get(), attempts, time.perf_counter() - started)
                count_request(call, spent, hit=False, errors=0, stored=False)
                report = report_request(call, spent, hit=False, started=started, failed=True)
                if isinstance(exc, GeneratorExit):  # a stream being closed may not wait: reported in the background
                    in_background(report)
                else:
                    await asyncio.shield(report)
            raise
        entry = self._priced(stream.get(), attempts, time.perf_counter() - started, recording.events, recording.offsets)
        complete = recording.complete and getattr(entry.response, "state", "complete") == "complete"
        if call.key is not None and complete:
            data = _encoded(entry, manifest)
            if data is not None:
                await call.cache.guarded.set(call.key, data, call.ttl)
        await account_request(call, entry, hit=False, errors=0, started=started, stored=complete)

    async def _send(
        self, messages: list[ModelMessage], settings: ModelSettings | None, params: ModelRequestParameters
    ) -> CachedResponse:
        """The request sent to the model, retried on its own under the call's backoff, and priced."""
        attempts = self.config._attempts()  # pyright: ignore[reportPrivateUsage]
        started = time.perf_counter()
        response = await RetryingModel(self.wrapped, attempts).request(messages, settings, params)
        return self._priced(response, attempts, time.perf_counter() - started)

    def _priced(
        self,
        response: ModelResponse,
        attempts: Attempts,
        latency: float,
        events: list[Any] | None = None,
        offsets: list[float] | None = None,
    ) -> CachedResponse:
        model, cost = price_responses([response], requested=self.wrapped.model_id, custom_costs=self.config.custom_costs)
        return CachedResponse(
            response=response,
            model=model,
            cost=cost,
            latency=latency,
            created=time.time(),
            events=events,
            offsets=offsets,
            failed_attempts=attempts.failed,
        )


def _manifest(model: Model, messages: list[ModelMessage], settings: Any, params: ModelRequestParameters) -> Any:
    try:
        return model_request_manifest(model, messages, settings, params)
    except Exception:
        return None


def _encoded(entry: CachedResponse, manifest: Any) -> bytes | None:
    """The entry's bytes, encoded before anyone holds the response (so nothing done to it later is stored)."""
    try:
        return encode_response(entry, manifest=manifest)
    except Exception:
        return None


def _copied(entry: CachedResponse) -> CachedResponse:
    return copy.deepcopy(entry)


def _served(entry: CachedResponse, key: str) -> ModelResponse:
    """A recorded response as this request's own: received now, and marked as answered from the cache."""
    response = entry.response
    metadata = {**(response.metadata or {}), MARK: {"cached": True, "key": key, "saved_cost": entry.cost}}
    return dataclasses.replace(response, metadata=metadata, timestamp=datetime.now(UTC))


def _recording_run(model: Model) -> Attempts | None:
    """The attempts of a whole-run stream (`cached_agent_run_stream`) whose retrying wrapper is below this one."""
    while isinstance(model, WrapperModel):
        if isinstance(model, RetryingModel) and model.attempts.record:
            return model.attempts
        model = model.wrapped
    return None


def _keyed_model(model: Model) -> Model:
    """The model a request is keyed by: our own wrappers (retries, another cache) change how it is sent, not what
    it answers."""
    while isinstance(model, (RetryingModel, CachingModel)):
        model = model.wrapped
    return model


def _is_cached_by(model: Model, config: ResponseCache) -> bool:
    while isinstance(model, WrapperModel):
        if isinstance(model, CachingModel) and model.config is config:
            return True
        model = model.wrapped
    return False
