"""Per-request retries: a failed model request is sent again, never the run around it.

`RequestRetries` is a PydanticAI capability added to each run the cache makes. Through its
`get_wrapper_model` hook (before PydanticAI 2.62: `before_model_request`) it wraps whichever
model serves each request in a `RetryingModel`, which retries that one request with the call's backoff (tools that already ran do not run
again, paid requests are not sent again) and records every response that came back, so the
run is priced even when a later request fails.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic_ai import capabilities as _capabilities
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.exceptions import ModelAPIError
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import (
    Model,
    ModelRequestContext,
    ModelRequestParameters,
    StreamedResponse,
)
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings

from ._retry import Backoff, Budget, call_with_backoff
from ._stream_recording import Recording, record_events

__all__ = ("Attempts", "RequestRetries", "RetryingModel", "has_model_fallback", "leaf_capabilities", "processes_events")

T = TypeVar("T")

_HAS_WRAPPER_HOOK = hasattr(AbstractCapability, "get_wrapper_model")
"""`get_wrapper_model` arrived in 2.62; before it, `before_model_request` may replace the request's model."""


@dataclass(eq=False)
class Attempts:
    """What one run's model requests did: the responses that came back and the attempts that failed."""

    backoff: Backoff
    budget: Budget = field(default_factory=Budget)
    responses: list[ModelResponse] = field(default_factory=list)
    """Every response received, in order, including ones a capability later rejected (all were paid)."""
    failed: int = 0
    """Attempts that raised (rate limits, server errors, timeouts), retried or not."""
    streams: list[StreamedResponse] = field(default_factory=list)
    """Streamed responses opened; their final responses are priced when the run ends."""
    retry: bool = True
    """Retry failed requests under `backoff`; off when PydanticAI's `ModelFallback` handles failures (each attempt is
    still recorded and priced)."""
    record: bool = False
    """Record each stream's events as it is read (`recordings`, in the order the streams were opened)."""
    recordings: list[Recording] = field(default_factory=list)

    def all_responses(self) -> list[ModelResponse]:
        """Responses received, streamed ones included (as far as they got)."""
        return [*self.responses, *(stream.get() for stream in self.streams)]

    async def send(self, fn: Callable[[], Awaitable[T]]) -> T:
        async def attempt() -> T:
            try:
                return await fn()
            except Exception:
                self.failed += 1
                raise

        if not self.retry:
            return await attempt()
        return await call_with_backoff(attempt, self.backoff, self.budget)


@dataclass(init=False)
class RetryingModel(WrapperModel):
    """`wrapped`, with each request retried on its own under the run's backoff budget."""

    attempts: Attempts = field(repr=False, compare=False)

    def __init__(self, wrapped: Model, attempts: Attempts) -> None:
        super().__init__(wrapped)
        self.attempts = attempts

    def _request_settings(self, model_settings: ModelSettings | None) -> ModelSettings | None:
        """While this backoff owns retries, the SDK's own (2 by default) are off unless the caller set them."""
        if self.attempts.backoff.max_wait <= 0 or not self.attempts.retry:
            return model_settings
        own = self.wrapped.settings or {}
        if (model_settings and "max_retries" in model_settings) or "max_retries" in own:
            return model_settings
        return {**(model_settings or {}), "max_retries": 0}

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        settings = self._request_settings(model_settings)
        response = await self.attempts.send(lambda: self.wrapped.request(messages, settings, model_request_parameters))
        self.attempts.responses.append(response)
        return response

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: Any = None,
    ) -> AsyncIterator[StreamedResponse]:
        """Opening the stream is retried; once events flow, a failure reaches the run (they were consumed), counted
        as a failed attempt when the provider raised it."""
        settings = self._request_settings(model_settings)

        async def open_stream() -> tuple[Any, StreamedResponse]:
            context = self.wrapped.request_stream(messages, settings, model_request_parameters, run_context)
            return context, await context.__aenter__()

        sent = time.perf_counter()
        context, stream = await self.attempts.send(open_stream)
        self.attempts.streams.append(stream)
        if self.attempts.record:
            self.attempts.recordings.append(record_events(stream, sent))
        failed = False
        try:
            yield stream
        except BaseException as exc:
            failed = True
            if isinstance(exc, ModelAPIError):
                self.attempts.failed += 1
            if not await context.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        finally:
            if not failed:
                await context.__aexit__(None, None, None)


@dataclass
class RequestRetries(AbstractCapability[Any]):
    """Wraps the model serving each request of one run in a `RetryingModel` sharing `attempts`."""

    attempts: Attempts = field(repr=False)

    def get_wrapper_model(self, model: Model) -> Model | None:
        return RetryingModel(model, self.attempts)

    async def before_model_request(self, ctx: Any, request_context: ModelRequestContext) -> ModelRequestContext:
        # the run's capabilities as resolved for this request (a dynamic `ModelFallback` too): with one, no retries
        if has_model_fallback(None, [getattr(ctx, "root_capability", None)]):
            self.attempts.retry = False
        if not _HAS_WRAPPER_HOOK and not _is_retrying(request_context.model):  # PydanticAI 2.58 to 2.61
            request_context.model = RetryingModel(request_context.model, self.attempts)
        return request_context


def _is_retrying(model: Model) -> bool:
    while isinstance(model, WrapperModel):
        if isinstance(model, RetryingModel):
            return True
        model = model.wrapped
    return False


def leaf_capabilities(agent: Any, run_capabilities: list[Any]) -> list[Any]:
    """The capabilities a run of `agent` uses (its own and the run's), unwrapped: combined ones and wrappers
    (`WrapperCapability`) are opened up and left out, their members are in."""
    root = getattr(agent, "_effective_root_capability", None) if agent is not None else None
    stack = [*(([root()] if callable(root) else [])), *(c for c in run_capabilities if c is not None)]
    leaves: list[Any] = []
    while stack:
        capability = stack.pop()
        inner = [*(getattr(capability, "capabilities", None) or ())]
        wrapped = getattr(capability, "wrapped", None)
        if isinstance(wrapped, AbstractCapability):
            inner.append(wrapped)
        if inner:
            stack.extend(inner)
        else:
            leaves.append(capability)
    return leaves


def processes_events(agent: Any, run_capabilities: list[Any]) -> bool:
    """Whether the run has a capability rewriting its event stream (`ProcessEventStream`, a redaction): what its
    streams show is then not the model's events, which is all a stream's recording holds."""
    base = AbstractCapability.wrap_run_event_stream
    return any(
        getattr(type(c), "wrap_run_event_stream", base) is not base for c in leaf_capabilities(agent, run_capabilities)
    )


def has_model_fallback(agent: Any, run_capabilities: list[Any]) -> bool:
    """Whether the run uses PydanticAI's `ModelFallback` capability: it moves a failed request to the next model,
    which retrying the failed model first would defeat, so the cache then leaves failures to it."""
    fallback = getattr(_capabilities, "ModelFallback", None)
    return fallback is not None and any(isinstance(c, fallback) for c in leaf_capabilities(agent, run_capabilities))
