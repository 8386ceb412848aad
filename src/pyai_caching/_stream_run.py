"""The streaming front door: `cached_agent_run_stream`, shaped like `agent.run_stream`.

A hit replays the recorded final response (its deltas, in their chunks) over the caller's own copy of the run,
with no model call and no tool run. A miss streams live through `agent.run_stream`, with per-request retries,
recording the events as the caller reads them; the run is stored when the caller has read it to its end (a
stream left part-way, cancelled or failed is paid for and counted, never stored). Entries are shared with
`cached_agent_run` both ways: the same call has the same key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from pydantic_ai import messages as _messages
from pydantic_ai.agent import AbstractAgent
from pydantic_ai.exceptions import UserError

from . import _telemetry as telemetry
from ._accounting import account, account_failure, missing_error
from ._attempts import Attempts, processes_events
from ._call import RunCall
from ._codec import CachedRun, StreamRecord, stream_record
from ._config import CacheMode
from ._engine import Missing, Outcome, read
from ._events import recording_handler, run_context_for
from ._keys import UnkeyableError, effective_model_name
from ._logs import warn_once
from ._registry import Cache
from ._run import open_call
from ._running import kwargs_with_retries, make_entry, usage_before
from ._stream_replay import Replay
from ._stream_result import CachedStreamedRunResult
from .costs import ModelCosts, price_responses
from .exceptions import CacheMissError
from .recorders import ExpenseCallback, ExpenseRecorder
from .stats import stats_group
from .stores import Store

__all__ = ("cached_agent_run_stream",)


@asynccontextmanager
async def cached_agent_run_stream(
    agent: AbstractAgent[Any, Any],
    prompt: str | Sequence[_messages.UserContent] | None,
    task_name: str,
    *,
    message_history: Sequence[Any] | None = None,
    redis_url: str | None = None,
    ttl: float | timedelta | None = None,
    max_wait: float = 30.0,
    initial_wait: float = 1.0,
    expense_recorder: ExpenseRecorder | ExpenseCallback | None = None,
    custom_costs: Mapping[str, ModelCosts] | None = None,
    store: Store | None = None,
    namespace: str | None = None,
    key_extra: Any = None,
    mode: CacheMode | None = None,
    pace: float | None = None,
    **agent_run_kwargs: Any,
) -> AsyncIterator[CachedStreamedRunResult[Any]]:
    """Drop-in for `async with agent.run_stream(prompt, ...) as result:` that replays repeated runs from the cache.

    Takes the arguments of `cached_agent_run`, plus:

    Args:
        pace: On a hit, replay the deltas at their recorded times divided by `pace` (1.0: as they first arrived, for
            demos); None (default) replays at once.

    Yields:
        A `CachedStreamedRunResult`: `stream_text(delta=..., debounce_by=...)`, `stream_output()`,
        `stream_response()`, `get_output()`, `usage`, `all_messages()`, ... and `.cost`, `.saved_cost`, `.cached`.

    Raises:
        As `cached_agent_run` (bad arguments before any model call, `CacheMissError` in `replay`).
    """
    if pace is not None and (isinstance(pace, bool) or not isinstance(pace, (int, float)) or not pace > 0):
        raise ValueError(f"pace must be a positive number (1.0 replays at the recorded speed), not {pace!r}")
    call, state, cache, namespace = await open_call(
        agent,
        prompt,
        task_name,
        store=store,
        redis_url=redis_url,
        namespace=namespace,
        mode=mode,
        message_history=message_history,
        ttl=ttl,
        max_wait=max_wait,
        initial_wait=initial_wait,
        expense_recorder=expense_recorder,
        custom_costs=custom_costs,
        key_extra=key_extra,
        run_kwargs=agent_run_kwargs,
    )
    scope = call.scope
    with telemetry.run_span(call.task_name, call.mode, cache.guarded.store):
        started = time.perf_counter()
        key = _key(call, namespace)
        errors = 0
        write_key = key
        if key is not None:
            try:
                outcome, hit_key, write_key = await _lookup(state.flights, cache, call, key)
            except Missing as missing:
                cache.stats.add(stats_group(namespace, call.task_name), {"misses": 1, "errors": int(missing.store_failed)})
                if scope is not None:
                    scope.missing.add(key)
                raise await missing_error(call, cache, missing) from missing.drift
            errors = outcome.errors
            if outcome.value is not None:
                entry = outcome.value
                run = await account(call, cache, namespace, hit_key, entry, hit=True, errors=errors, started=started)
                handler = call.run_kwargs.get("event_stream_handler")
                if handler is not None:  # as live: the handler has the events up to the final result first
                    await call.replay_events(handler, entry)
                replay = Replay.of(run.response, stream_record(entry), pace)
                yield CachedStreamedRunResult(
                    replay=replay,
                    run=run,
                    output_type=call.output_type,
                    cache_key=hit_key,
                    validators=getattr(call.agent, "_output_validators", ()),
                    context=lambda: run_context_for(
                        deps=call.run_kwargs.get("deps"),
                        model=call.run_kwargs.get("model") or getattr(call.agent, "model", None),
                        run=run,
                        prompt=call.prompt,
                    ),
                )
                return

        attempts = Attempts(call.backoff, record=True)
        before = usage_before(call)

        def price() -> tuple[str | None, float | None]:
            requested = effective_model_name(call.agent, call.run_kwargs.get("model"))
            return price_responses(attempts.all_responses(), requested=requested, custom_costs=call.custom_costs)

        settled: list[tuple[CachedRun[Any], bytes | None]] = []
        try:
            kwargs = kwargs_with_retries(call, attempts)
            recording = None
            if kwargs.get("event_stream_handler") is not None:  # its events are recorded, for hits to replay
                kwargs["event_stream_handler"], recording = recording_handler(kwargs["event_stream_handler"])
            async with call.agent.run_stream(call.prompt, message_history=call.history or None, **kwargs) as live:

                def settle() -> None:
                    """The run as an entry, encoded the moment the stream is read to its end: before the caller
                    holds its output or final messages, so nothing it does to them is stored."""
                    finished = live.is_complete or getattr(live, "_run_result", None) is not None  # (ended unstreamed)
                    if settled or not finished or getattr(live, "cancelled", False) or getattr(live, "_completion_raised", False):
                        return
                    try:
                        run = live.result
                    except UserError:  # the run has no settled result (cancelled, or it stopped)
                        return
                    entry = make_entry(call, run, attempts, time.perf_counter() - started, before, _final_stream(attempts, run))
                    if recording is not None and recording.groups is not None:
                        entry = dataclasses.replace(entry, events=recording.groups, event_steps=recording.steps)
                    settled.append((entry, call.encoded(entry) if key is not None else None))
                    if key is not None and (write_key != key or not _either_way(entry, call.output_type)):
                        result.cache_key = _stream_only(key)  # kept apart from the runs' entries

                result = CachedStreamedRunResult(
                    live=live, output_type=call.output_type, cache_key=key, price=price, on_complete=settle
                )
                yield result
        except (Exception, asyncio.CancelledError):
            if settled:  # read to its end, then the caller's own code raised: the paid answer is still kept
                await asyncio.shield(_store(call, cache, namespace, key, write_key, settled[0], errors, started))
            else:  # paid for, counted, never stored
                await asyncio.shield(account_failure(call, cache, namespace, attempts, time.perf_counter() - started))
            raise
        if not settled:  # left part-way or cancelled: paid for, counted, never stored
            await account_failure(call, cache, namespace, attempts, time.perf_counter() - started)
            return
        await _store(call, cache, namespace, key, write_key, settled[0], errors, started)


async def _store(
    call: RunCall,
    cache: Cache,
    namespace: str,
    key: str | None,
    free_key: str | None,
    settled: tuple[CachedRun[Any], bytes | None],
    errors: int,
    started: float,
) -> None:
    """Store a stream read to its end, under the shared key if `agent.run` would answer alike and the lookup found it
    free (`free_key` is the key, else the stream's own), else under its own; then count it and report it. A refresh also removes what streams were answered from under the other key, so the
    new answer is not shadowed by the old one (a plain miss found nothing there to remove)."""
    entry, data = settled
    write_key = key
    if key is not None and data is not None:
        own = _stream_only(key)
        refresh = call.mode == "refresh"
        if _either_way(entry, call.output_type) and (free_key == key or refresh):
            if refresh:
                await cache.guarded.delete(own)
        else:
            write_key = own
            if refresh:
                shared, _ = await cache.guarded.get(key)
                if shared is not None and _shared_fits(call, shared):
                    await cache.guarded.delete(key)
        stored = await cache.guarded.set(write_key, data, call.ttl)
        errors += not stored
    await account(call, cache, namespace, write_key, entry, hit=False, errors=errors, started=started, uncached=key is None)


def _shared_fits(call: RunCall, data: bytes) -> bool:
    """Whether a shared entry is one a stream would be answered from."""
    try:
        return _either_way(call._decode(data), call.output_type)  # pyright: ignore[reportPrivateUsage]
    except Exception:  # noqa: BLE001 - an unreadable entry answers no one
        return False


async def _lookup(
    flights: dict[Any, Any], cache: Cache, call: RunCall, key: str
) -> tuple[Outcome[CachedRun[Any] | None], str, str]:
    """The entry a stream is answered from, the key it was found under, and the key a miss is stored under.

    `key` is shared with `cached_agent_run`, for the runs both would answer alike (`_either_way`): only those are
    read from it, and only those are written to it. Every other stream has its own key (`_stream_only`).

    Raises:
        Missing: in `replay` mode, when neither key has an entry for the stream.
    """
    own = _stream_only(key)
    # both keys at once: a hit on either costs one round trip
    shared, found = await asyncio.gather(
        read(flights, cache, key, mode=call.mode, decode=call._decode),  # pyright: ignore[reportPrivateUsage]
        read(flights, cache, own, mode=call.mode, decode=call._decode),  # pyright: ignore[reportPrivateUsage]
        return_exceptions=True,
    )
    for outcome in (shared, found):
        if isinstance(outcome, BaseException) and not isinstance(outcome, Missing):
            raise outcome
    if isinstance(shared, Outcome) and shared.value is not None and _either_way(shared.value, call.output_type):
        return shared, key, key
    if isinstance(found, Missing):
        raise (shared if isinstance(shared, Missing) else found) from None
    assert isinstance(found, Outcome)
    taken = isinstance(shared, Outcome) and shared.value is not None
    errors = found.errors + (shared.errors if isinstance(shared, Outcome) else 0)
    # a miss goes under the shared key only if it is free: an entry there that streams do not fit is a run's own
    return Outcome(found.value, hit=found.hit, errors=errors), own, own if taken else key


def _stream_only(key: str) -> str:
    """The key of a stream whose answer `agent.run` might not give: beside the shared one."""
    prefix, digest = key.rsplit(":", 1)
    return f"{prefix}:{hashlib.sha256(f'{digest}:run_stream'.encode()).hexdigest()}"


def _either_way(entry: CachedRun[Any], output_type: Any) -> bool:
    """Whether `agent.run` and `agent.run_stream` give this run alike: one model response, which is only text (and
    thinking) for a `str` output, or only the output tool's call (and thinking, no text). Anything else (tools
    called, text beside tool calls, retries, output functions, unions with text) can end differently in the two, so
    such runs are never shared between them."""
    responses = [m for m in entry.run.new_messages() if isinstance(m, _messages.ModelResponse)]
    if len(responses) != 1:
        return False
    parts = [p for p in responses[0].parts if not isinstance(p, _messages.ThinkingPart)]
    texts = [p for p in parts if isinstance(p, _messages.TextPart)]
    if output_type is str and parts and len(texts) == len(parts):
        return True
    calls = [p for p in parts if isinstance(p, _messages.ToolCallPart)]
    output_tool = getattr(entry.run, "_output_tool_name", None)
    return (
        isinstance(output_type, type)
        and output_type is not str
        and len(calls) == 1
        and calls[0].tool_name == output_tool
        and not any(t.content for t in texts)
        and len(calls) + len(texts) == len(parts)
    )


def _final_stream(attempts: Attempts, run: Any) -> StreamRecord | None:
    """The recorded stream of the run's final response: the last stream opened, if it was read to its end and the
    run has one response per stream (else the final response did not come from it: the entry then has no stream,
    and a hit replays the final response part by part). What the caller saw stream is what a hit replays, even where
    a capability changed the response afterwards."""
    responses = sum(isinstance(m, _messages.ModelResponse) for m in run.new_messages())
    if not attempts.recordings or len(attempts.recordings) != len(attempts.streams) or len(attempts.streams) != responses:
        return None
    recording = attempts.recordings[-1]
    if not recording.complete or recording.events is None or recording.offsets is None:
        return None
    return StreamRecord(events=recording.events, offsets=recording.offsets)


def _key(call: RunCall, namespace: str) -> str | None:
    """The run's key; None in mode `off` or when it cannot be keyed (then streamed uncached, except in `replay`)."""
    if call.mode == "off":
        return None
    try:
        if processes_events(call.agent, list(call.run_kwargs.get("capabilities") or ())):
            raise UnkeyableError(
                "a capability rewrites the run's event stream (ProcessEventStream): what it streams is not what the "
                "model sent, which is all a recording holds"
            )
        return call.key(namespace)
    except UnkeyableError as exc:
        if call.mode == "replay":
            raise CacheMissError(
                f"task {call.task_name!r} cannot be replayed: this run cannot be cached ({exc})", key="", task_name=call.task_name
            ) from exc
        warn_once(f"this run cannot be cached, streaming it without the cache: {exc}")
        return None
