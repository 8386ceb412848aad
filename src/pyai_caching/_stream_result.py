"""`CachedStreamedRunResult`: what `cached_agent_run_stream` yields, shaped like PydanticAI's `StreamedRunResult`.

On a miss it is the live `StreamedRunResult` (every method delegates to it). On a hit it replays the recorded final
response (`_stream_replay.Replay`) over the caller's own copy of the run: same deltas, snapshots and output, the
caller's run id and history. Either way it also says what the call cost and where the answer came from.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any, Generic

import pydantic_core
from pydantic import ValidationError
from pydantic_ai import messages as _messages
from pydantic_ai.exceptions import ModelRetry, UserError
from pydantic_ai.output import OutputDataT
from pydantic_ai.result import StreamedRunResult
from pydantic_ai.run import AgentRunResult
from pydantic_ai.usage import RunUsage

from ._codec import _output_type_adapter  # pyright: ignore[reportPrivateUsage]
from ._result import CachedAgentRunResult
from ._stream_replay import Replay

__all__ = ("CachedStreamedRunResult",)


class CachedStreamedRunResult(Generic[OutputDataT]):
    """A streamed run, live or replayed: `stream_text`, `stream_output`, `stream_response`, `get_output`, `usage`,
    `all_messages()`, `new_messages()`, `result`, ... as on `StreamedRunResult`, plus:

    Attributes:
        cached: True if the answer is replayed from the cache (no model call was made).
        cache_key: The entry's key, or None when the run could not be keyed.
        saved_cost: On a hit, the original price of the run; None otherwise.
    """

    def __init__(
        self,
        *,
        live: StreamedRunResult[Any, OutputDataT] | None = None,
        replay: Replay | None = None,
        run: CachedAgentRunResult[OutputDataT] | None = None,
        output_type: Any = None,
        cache_key: str | None,
        price: Callable[[], tuple[str | None, float | None]] | None = None,
        on_complete: Callable[[], None] | None = None,
        validators: Sequence[Any] = (),
        context: Callable[[], Any] | None = None,
    ) -> None:
        self._validators, self._context = list(validators), context
        self._live, self._replay, self._run, self._output_type, self._price = live, replay, run, output_type, price
        self._on_complete = on_complete
        self.cache_key = cache_key
        self.cached = run is not None
        self.saved_cost: float | None = run.saved_cost if run is not None else None
        # a run that ended on deferred tool calls had no final stream: live, it is settled at once
        self._complete = run is not None and type(run.output).__name__ == "DeferredToolRequests"
        self._cancelled = False
        self._settled = False

    # -- what the cache adds

    @property
    def cost(self) -> float | None:
        """USD this call cost: 0.0 on a hit; on a miss, what the responses received so far cost (None: no price)."""
        if self._run is not None:
            return self._run.cost
        return self._price()[1] if self._price is not None else None

    @property
    def model(self) -> str | None:
        """Name of the model that answered."""
        if self._run is not None:
            return self._run.model
        return self._price()[0] if self._price is not None else None

    # -- streaming

    async def stream_text(self, *, delta: bool = False, debounce_by: float | None = 0.1) -> AsyncIterator[str]:
        """The text as it streams: each chunk (`delta=True`) or the text so far, grouped by `debounce_by` seconds."""
        if self._live is not None:
            async for text in self._live.stream_text(delta=delta, debounce_by=debounce_by):
                yield text
            self._settle()
            return
        run, replay = self._replayed()
        if not _is_text_output(self._output_type):
            raise UserError("stream_text() can only be used with text responses")
        if self._complete:  # as a live stream read before: the whole text, once
            yield run.output
            return
        async for text in replay.text(delta=delta, debounce_by=debounce_by):
            if not delta:  # as live: the text so far goes through the output validators (not deltas)
                for validator in self._validators:
                    text = await validator.validate(text, self._partial_context())
            yield text
        self._complete = True

    async def stream_output(self, *, debounce_by: float | None = 0.1) -> AsyncIterator[OutputDataT]:
        """The output as it streams (partial outputs validated with the output type), the full output last."""
        if self._live is not None:
            async for output in self._live.stream_output(debounce_by=debounce_by):
                yield output
            self._settle()
            return
        run, replay = self._replayed()
        if not self._complete:
            last: list[Any] | None = None
            partials = _validates_partials(self._output_type)
            async for response in replay.responses(debounce_by=debounce_by):
                if response.parts == last or response is replay.final:
                    continue  # as live: a snapshot like the last one is skipped, and the final output comes last
                last = response.parts
                partial = self._partial_output(run, response) if partials else _NONE
                if partial is not _NONE:
                    try:
                        for validator in self._validators:
                            partial = await validator.validate(partial, self._partial_context())
                    except (ValidationError, ModelRetry):  # as live: a partial output that does not validate is skipped
                        continue
                    yield partial
            self._complete = True
        yield copy.deepcopy(run.output)

    async def stream_response(self, *, debounce_by: float | None = 0.1) -> AsyncIterator[_messages.ModelResponse]:
        """`ModelResponse` snapshots as the response streams; the final, complete response last."""
        if self._live is not None:
            last = None
            async for response in self._live.stream_response(debounce_by=debounce_by):
                last = self._own(response)
                yield last
            if last is not None and last is not self._live.response:  # stamped as live stamps the final snapshot
                last.run_id, last.conversation_id = self._live.run_id, self._live.conversation_id
            self._settle()
            return
        _, replay = self._replayed()
        if self._complete:  # as a live stream read before: the final response, once
            yield replay.final
            return
        async for response in replay.responses(debounce_by=debounce_by):
            yield response
        self._complete = True

    async def get_output(self) -> OutputDataT:
        """Read the stream to its end; the validated output."""
        if self._live is not None:
            output = await self._live.get_output()
            self._settle()
            return output
        self._complete = True
        return self._replayed()[0].output

    async def cancel(self) -> None:
        """Stop reading the stream. A live stream cancelled part-way is not stored."""
        if self._live is not None:
            await self._live.cancel()
            self._complete = True
        else:  # as live: the run did not finish, so it has no settled result
            self._cancelled = True

    def _settle(self) -> None:
        """The live stream was read to its end: let the front door take its entry before the caller continues."""
        if self._on_complete is not None:
            self._on_complete()
            self._settled = True

    def _own(self, value: Any) -> Any:
        """Until a live run's entry is taken, what the caller is handed is a copy: nothing it does to it can reach
        the entry (after that, the run's own objects, as PydanticAI hands them)."""
        return value if self._settled or self._on_complete is None else copy.deepcopy(value)

    @property
    def cancelled(self) -> bool:
        """Whether the stream was cancelled with `cancel()`."""
        if self._live is not None:
            return bool(getattr(self._live, "cancelled", False))
        return self._cancelled

    @property
    def workspace(self) -> Any:
        """The run's workspace (as on `StreamedRunResult`)."""
        return self._live.workspace if self._live is not None else self._replayed()[0].workspace

    async def validate_response_output(self, message: _messages.ModelResponse, *, allow_partial: bool = False) -> Any:
        """Validate a response as the run's output; on a hit, the recorded output for the final response."""
        if self._live is not None:
            return await self._live.validate_response_output(message, allow_partial=allow_partial)
        run, _ = self._replayed()
        if message.parts == run.response.parts:
            return copy.deepcopy(run.output)
        partial = self._partial_output(run, message)
        if partial is _NONE:
            raise UserError("this response does not validate as the run's output")
        return partial

    # -- the run

    @property
    def result(self) -> AgentRunResult[OutputDataT]:
        """The run as an `AgentRunResult` once the stream has finished (a `CachedAgentRunResult` on a hit)."""
        if self._live is not None:
            if self._live.is_complete or getattr(self._live, "_run_result", None) is not None:
                self._settle()  # (a run that ended without streaming, on deferred tools, is taken here)
            return self._live.result
        if not self._complete or self._cancelled:
            raise UserError(
                "The run is still streaming, so it has no settled result yet. Await `stream_output()`, `stream_text()`, "
                "`stream_response()` or `get_output()` first."
            )
        return self._replayed()[0]

    @property
    def is_complete(self) -> bool:
        return self._live.is_complete if self._live is not None else self._complete

    @property
    def usage(self) -> RunUsage:
        return self._live.usage if self._live is not None else self._replayed()[0].usage

    @property
    def response(self) -> _messages.ModelResponse:
        """The response so far (the final one once the stream was read)."""
        if self._live is not None:
            return self._own(self._live.response)
        run, replay = self._replayed()
        return run.response if self._complete else replay.handoff_snapshot()

    @property
    def run_id(self) -> str:
        return self._live.run_id if self._live is not None else self._replayed()[0].run_id

    @property
    def conversation_id(self) -> str:
        return self._live.conversation_id if self._live is not None else self._replayed()[0].conversation_id

    @property
    def metadata(self) -> dict[str, Any] | None:
        return self._live.metadata if self._live is not None else self._replayed()[0].metadata

    @property
    def timestamp(self) -> datetime:
        return self._live.timestamp if self._live is not None else self._replayed()[0].timestamp

    def all_messages(self, *, output_tool_return_content: str | None = None) -> list[_messages.ModelMessage]:
        if self._live is not None:
            return self._own(self._live.all_messages(output_tool_return_content=output_tool_return_content))
        return self._replayed_messages(output_tool_return_content, new=False)

    def new_messages(self, *, output_tool_return_content: str | None = None) -> list[_messages.ModelMessage]:
        if self._live is not None:
            return self._own(self._live.new_messages(output_tool_return_content=output_tool_return_content))
        return self._replayed_messages(output_tool_return_content, new=True)

    def _replayed_messages(self, output_tool_return_content: str | None, *, new: bool) -> list[_messages.ModelMessage]:
        """As a live stream's: without the final response until the stream was read (it is added then)."""
        if output_tool_return_content is not None:  # as `StreamedRunResult`
            raise NotImplementedError("Setting output tool return content is not supported for this result type.")
        run = self._replayed()[0]
        messages = run.new_messages() if new else run.all_messages()
        if self._complete:
            return messages
        last = max((i for i, m in enumerate(messages) if isinstance(m, _messages.ModelResponse)), default=None)
        return messages if last is None else messages[:last]

    def all_messages_json(self, *, output_tool_return_content: str | None = None) -> bytes:
        return _messages.ModelMessagesTypeAdapter.dump_json(self.all_messages(output_tool_return_content=output_tool_return_content))

    def new_messages_json(self, *, output_tool_return_content: str | None = None) -> bytes:
        return _messages.ModelMessagesTypeAdapter.dump_json(self.new_messages(output_tool_return_content=output_tool_return_content))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cached={self.cached!r}, cache_key={self.cache_key!r})"

    # -- replay helpers

    def _partial_context(self) -> Any:
        context = self._context() if self._context is not None else None
        return dataclasses.replace(context, partial_output=True) if context is not None else None

    def _replayed(self) -> tuple[CachedAgentRunResult[OutputDataT], Replay]:
        assert self._run is not None and self._replay is not None
        return self._run, self._replay

    def _partial_output(self, run: CachedAgentRunResult[Any], response: _messages.ModelResponse) -> Any:
        """The output so far, from a snapshot: its text, or the output tool's (partial) arguments validated."""
        if isinstance(run.output, str):
            return "".join(p.content for p in response.parts if isinstance(p, _messages.TextPart)) or _NONE
        tool_name = getattr(run, "_output_tool_name", None)
        raw: Any = None
        for part in response.parts:
            if isinstance(part, _messages.ToolCallPart) and part.tool_name == tool_name:
                raw = part.args
        if raw is None:
            raw = "".join(p.content for p in response.parts if isinstance(p, _messages.TextPart)) or None
        adapter = _output_type_adapter(self._output_type)
        if raw is None or adapter is None:
            return _NONE
        try:
            data = pydantic_core.from_json(raw, allow_partial=True) if isinstance(raw, (str, bytes)) else raw
            return adapter.validate_python(data, experimental_allow_partial=True)
        except (ValidationError, ValueError):
            return _NONE


_NONE: Any = object()


def _is_text_output(spec: Any) -> bool:
    """Whether `stream_text()` works for an output spec, as PydanticAI decides it (a text output schema)."""
    from pydantic_ai._output import TextOutputSchema  # noqa: PLC0415 - private: the exact live rule

    from ._keys._agent import _output_schema_for  # noqa: PLC0415  # pyright: ignore[reportPrivateUsage]

    try:
        return isinstance(_output_schema_for(spec), TextOutputSchema)
    except Exception:  # noqa: BLE001 - a spec PydanticAI would reject: as for any non-text output
        return False


def _validates_partials(spec: Any) -> bool:
    """Whether partial outputs of `spec` are its data validated (a type, or tool/native/prompted outputs of types):
    not with an output function or `TextOutput`, which a hit cannot run on partial data, so it yields only the
    final output."""
    from pydantic_ai import output as _output  # noqa: PLC0415

    if isinstance(spec, (list, tuple)):
        return all(_validates_partials(s) for s in spec)
    if isinstance(spec, _output.TextOutput):
        return False
    if isinstance(spec, _output.ToolOutput):
        return _validates_partials(spec.output)
    if isinstance(spec, (_output.NativeOutput, _output.PromptedOutput)):
        return _validates_partials(spec.outputs)
    return spec is None or isinstance(spec, type) or typing.get_origin(spec) is not None or not callable(spec)
