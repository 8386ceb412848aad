"""`CachingModel`: the model wrapper `ResponseCache` puts around whichever model serves a request.

A request is keyed by what the model receives; the engine answers it (in-flight first, then the store, one model
call per key, stored before it is handed out). A streamed request replays its recorded events on a hit
(`CompletedStreamedResponse`), and on a miss streams live, recorded, and is stored once read to its end.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import (
    CompletedStreamedResponse,
    Model,
    ModelRequestParameters,
    StreamedResponse,
)
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings

from ._attempts import Attempts, RetryingModel, has_model_fallback
from ._engine import Missing, Produced, fetch, read
from ._keys._requests import model_request_manifest
from ._request_accounting import (
    account_request,
    count_request,
    in_background,
    missing_request_error,
    report_request,
)
from ._responses import CachedResponse, decode_response, encode_response
from ._stream_recording import record_events
from .costs import price_responses

if TYPE_CHECKING:
    from ._response_cache import ResponseCache

__all__ = ("FALLBACK", "MARK", "CachingModel", "keyed_model")

FALLBACK: contextvars.ContextVar[bool] = contextvars.ContextVar("pyai_caching_fallback", default=False)
"""Whether the model request being made belongs to a run with `ModelFallback` (set by the request's own hook)."""

MARK = "pyai_caching"
"""The key under which a response served from the cache says so in its `metadata`."""


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
        manifest = _manifest(keyed_model(self.wrapped), messages, model_settings, model_request_parameters)

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
            manifest = _manifest(keyed_model(self.wrapped), messages, model_settings, model_request_parameters)
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


def keyed_model(model: Model) -> Model:
    """The model a request is keyed by: our own wrappers (retries, another cache) change how it is sent, not what
    it answers."""
    while isinstance(model, (RetryingModel, CachingModel)):
        model = model.wrapped
    return model
