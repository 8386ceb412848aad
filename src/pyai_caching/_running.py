"""How a miss runs the agent: per-request retries (`_attempts`), the events an `event_stream_handler` is given
recorded (`_events`), and every response that came back priced, even when the run fails."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import time
from typing import TYPE_CHECKING, Any

from pydantic_ai import AgentRunResult
from pydantic_ai import messages as _messages
from pydantic_ai import usage as _usage

from ._accounting import account_failure, count_failure
from ._attempts import Attempts, RequestRetries, has_model_fallback
from ._caching_model import MARK
from ._codec import CachedRun, StreamRecord
from ._events import recording_handler
from ._keys import effective_model_name
from ._registry import Cache
from .costs import price_responses

if TYPE_CHECKING:
    from ._call import RunCall

__all__ = ("kwargs_with_retries", "make_entry", "run_agent", "usage_before")


async def run_agent(call: RunCall, cache: Cache, namespace: str) -> CachedRun[Any]:
    """Run the agent with per-request retries; every response that came back is priced, even if the run fails."""
    attempts = Attempts(call.backoff)
    kwargs = kwargs_with_retries(call, attempts)
    handler = call.run_kwargs.get("event_stream_handler")
    recording = None
    if handler is not None:  # the events it is given are recorded, for hits to replay
        kwargs["event_stream_handler"], recording = recording_handler(handler)
    before = usage_before(call)
    started = time.perf_counter()
    try:
        run = await call.agent.run(call.prompt, message_history=call.history or None, **kwargs)
    except asyncio.CancelledError:  # the responses that came back were paid for: count them, then stop
        count_failure(call, cache, namespace, attempts)
        raise
    except Exception:
        await account_failure(call, cache, namespace, attempts, time.perf_counter() - started)
        raise
    entry = make_entry(call, run, attempts, time.perf_counter() - started, before)
    if recording is None:
        return entry
    return dataclasses.replace(entry, events=recording.groups, event_steps=recording.steps if recording.groups is not None else None)


def kwargs_with_retries(call: RunCall, attempts: Attempts) -> dict[str, Any]:
    """The run's keyword arguments, with the capability retrying each request under `attempts`."""
    run_capabilities = list(call.run_kwargs.get("capabilities") or ())
    if has_model_fallback(call.agent, run_capabilities):  # with one, failures go to the fallback models at once
        attempts.retry = False
    return {**call.run_kwargs, "capabilities": [*run_capabilities, RequestRetries(attempts)]}


def usage_before(call: RunCall) -> _usage.RunUsage | None:
    """A copy of the usage object the run adds to (`usage=`, or the conversation's), before it runs."""
    caller_usage = call.run_kwargs.get("usage")
    if not isinstance(caller_usage, _usage.RunUsage):  # a run from `conversation=` starts from its usage
        caller_usage = getattr(call.run_kwargs.get("conversation"), "usage", None)
    return copy.deepcopy(caller_usage) if isinstance(caller_usage, _usage.RunUsage) else None


def make_entry(
    call: RunCall,
    run: AgentRunResult[Any],
    attempts: Attempts,
    latency: float,
    before: _usage.RunUsage | None,
    stream: StreamRecord | None = None,
) -> CachedRun[Any]:
    """A finished run as an entry: priced by every response that came back and was paid for (a response that a
    `ResponseCache` answered is not: it was paid for when it was recorded)."""
    responses = attempts.all_responses() or [m for m in run.new_messages() if isinstance(m, _messages.ModelResponse)]
    paid = [r for r in responses if not _served_from_cache(r)]
    requested = effective_model_name(call.agent, call.run_kwargs.get("model"))
    if paid or not responses:
        model, cost = price_responses(paid, requested=requested, custom_costs=call.custom_costs)
    else:
        model, cost = responses[-1].model_name or requested, 0.0
    return CachedRun(
        run=run,
        model=model,
        cost=cost,
        latency=latency,
        created=time.time(),
        failed_attempts=attempts.failed,
        usage=_minus(run.usage, before) if before is not None else None,
        stream=stream,
    )


def _served_from_cache(response: _messages.ModelResponse) -> bool:
    mark = (response.metadata or {}).get(MARK)
    return isinstance(mark, dict) and mark.get("cached") is True


def _minus(total: _usage.RunUsage, before: _usage.RunUsage) -> _usage.RunUsage:
    """What a run added to a usage object it was given (`total` is that object afterwards)."""
    own = _usage.RunUsage()
    for field in dataclasses.fields(own):
        value = getattr(total, field.name)
        if isinstance(value, int):
            setattr(own, field.name, value - getattr(before, field.name))
    own.details = {k: v - before.details.get(k, 0) for k, v in total.details.items() if v - before.details.get(k, 0)}
    return own
