"""The front door: `cached_agent_run` and `cached_agent_run_sync`.

One short loop around pure parts: validate, derive the key, one store read, decode; on a miss
one model call per key at a time (others await it), price it, store it, record it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic_ai import AgentRunResult
from pydantic_ai import messages as _messages
from pydantic_ai.agent import AbstractAgent

from . import _portal
from ._codec import CachedRun, DecodeError, decode, encode
from ._config import check_task_name, resolve_namespace, resolve_store_spec, resolve_ttl
from ._history import to_messages
from ._keys import UnkeyableError, effective_model_name, format_key, request_digest
from ._registry import Cache, LoopState, loop_state
from ._result import CachedAgentRunResult
from ._retry import Backoff, call_with_backoff
from .costs import ModelCosts, price_usage
from .recorders import ExpenseCallback, ExpenseEvent, ExpenseRecorder, notify
from .stats import stats_group
from .stores import Store

__all__ = ("cached_agent_run", "cached_agent_run_sync")

logger = logging.getLogger("pyai_caching")

_RESERVED_KWARGS = frozenset({"user_prompt"})


async def cached_agent_run(
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
    **agent_run_kwargs: Any,
) -> CachedAgentRunResult[Any]:
    """Drop-in for `await agent.run(prompt, ...)` that answers repeated runs from the cache.

    Args:
        agent: The PydanticAI agent to run.
        prompt: The user prompt: a string or PydanticAI user content (text, images, documents).
            May be empty only when `message_history` is given.
        task_name: Groups entries and counters (`<namespace>:v1:<task_name>:<digest>`).
        message_history: Earlier messages: PydanticAI messages, their JSON dicts, or
            `{"role": ..., "content": ...}` dicts. Part of the key by content (not timestamps or ids).
        redis_url: Redis URL; defaults to `LLM_CACHE_REDIS_URL` (then `LLM_CACHE_DIR` for the embedded store).
        ttl: Entry lifetime in seconds or as a timedelta; defaults to `LLM_CACHE_TTL` or 15 days.
        max_wait: Total seconds to spend waiting on rate limits and transient provider errors.
        initial_wait: First backoff wait, in seconds; it doubles (with jitter) from there.
        expense_recorder: `recorder(model, task_name, cost)` function, or an object with `record(event)`.
        custom_costs: Prices by model name, overriding `DEFAULT_COSTS` and genai-prices.
        store: A `Store` to use instead of the configured one (for example `LocalStore(...)`).
        namespace: Key prefix; defaults to `LLM_CACHE_NAMESPACE` or `pyai_caching`.
        key_extra: JSON-able data you choose to add to the key, for what `deps` change about the answer.
        **agent_run_kwargs: Passed to `agent.run` (`model`, `model_settings`, `deps`, `usage_limits`, ...).

    Returns:
        A `CachedAgentRunResult`: a real `AgentRunResult` plus `.cost`, `.saved_cost`, `.model`, `.cached`.
        On a miss it returns as soon as the model has answered; the entry is written right after
        (concurrent identical calls meanwhile share the answer; `await flush()` waits for the write).

    Raises:
        ConfigurationError: no store is configured, or its URL is not a Redis URL.
        ValueError | TypeError: invalid arguments (checked before any model call).
        UsageLimitExceeded: the provider kept rate limiting until `max_wait` seconds were spent waiting.
    """
    call = _Call.prepare(
        agent,
        prompt,
        task_name,
        message_history=message_history,
        ttl=ttl,
        backoff=_backoff(initial_wait, max_wait),
        expense_recorder=expense_recorder,
        custom_costs=custom_costs,
        key_extra=key_extra,
        run_kwargs=agent_run_kwargs,
    )
    namespace = resolve_namespace(namespace)
    spec = None if store is not None else resolve_store_spec(redis_url)
    state = await loop_state()
    cache = state.cache_for(spec, store)
    return await call.execute(state, cache, namespace)


def cached_agent_run_sync(
    agent: AbstractAgent[Any, Any],
    prompt: str | Sequence[_messages.UserContent] | None,
    task_name: str,
    **kwargs: Any,
) -> CachedAgentRunResult[Any]:
    """Blocking `cached_agent_run`, same arguments. Works in scripts and inside a running event loop.

    Runs on one long-lived background event loop shared by every sync call, so its Redis
    connections are reused across calls and never bound to a loop that has closed. Unlike the
    async version, it returns only once a miss's entry is written.
    """
    return _portal.run(_stored(cached_agent_run(agent, prompt, task_name, **kwargs)))


async def _stored(run: Coroutine[Any, Any, CachedAgentRunResult[Any]]) -> CachedAgentRunResult[Any]:
    """`run`'s result once its entry is also written: a sync call returns with its answer stored."""
    result = await run
    flight = (await loop_state()).flights.get(result.cache_key) if result.cache_key else None
    if flight is not None:
        await asyncio.gather(asyncio.shield(flight.task), return_exceptions=True)
    return result


@dataclass(frozen=True, slots=True)
class _Call:
    """One validated call: what to run, how to key it, and what to do with the answer."""

    agent: AbstractAgent[Any, Any]
    prompt: str | Sequence[_messages.UserContent] | None
    task_name: str
    history: list[_messages.ModelMessage]
    ttl: float | None
    backoff: Backoff
    recorder: ExpenseRecorder | ExpenseCallback | None
    custom_costs: Mapping[str, ModelCosts] | None
    key_extra: Any
    run_kwargs: dict[str, Any]
    output_type: Any

    @classmethod
    def prepare(
        cls,
        agent: Any,
        prompt: Any,
        task_name: Any,
        *,
        message_history: Any,
        ttl: Any,
        backoff: Backoff,
        expense_recorder: Any,
        custom_costs: Any,
        key_extra: Any,
        run_kwargs: dict[str, Any],
    ) -> _Call:
        if not isinstance(agent, AbstractAgent):
            raise TypeError(f"agent must be a pydantic_ai Agent, not {type(agent).__name__}")
        check_task_name(task_name)
        _check_prompt(prompt)
        history = to_messages(message_history)
        if _is_empty(prompt) and not history:
            raise ValueError("prompt is empty and there is no message_history: nothing to ask the model")
        _check_run_kwargs(type(agent), run_kwargs)
        if custom_costs is not None and (
            not isinstance(custom_costs, Mapping)
            or not all(isinstance(k, str) and isinstance(v, ModelCosts) for k, v in custom_costs.items())
        ):
            raise TypeError("custom_costs must be a mapping of model name (str) to ModelCosts")
        if expense_recorder is not None and not (
            isinstance(expense_recorder, ExpenseRecorder) or callable(expense_recorder)
        ):
            raise TypeError("expense_recorder must be a function (model, task_name, cost) or have a record(event) method")
        return cls(
            agent=agent,
            prompt=prompt,
            task_name=task_name,
            history=history,
            ttl=resolve_ttl(ttl),
            backoff=backoff,
            recorder=expense_recorder,
            custom_costs=custom_costs,
            key_extra=key_extra,
            run_kwargs=run_kwargs,
            output_type=run_kwargs.get("output_type") or agent.output_type,
        )

    async def execute(self, state: LoopState, cache: Cache, namespace: str) -> CachedAgentRunResult[Any]:
        started = time.perf_counter()
        try:
            digest = request_digest(self.agent, self.prompt, self.history, self.run_kwargs, self.key_extra)
        except UnkeyableError as exc:
            return await self._uncached(cache, namespace, exc, started)
        key = format_key(namespace, self.task_name, digest)
        errors = 0

        data, failed = await cache.guarded.get(key)
        errors += failed
        if data is not None:
            try:
                entry = decode(data, self.output_type)
            except DecodeError as exc:
                errors += 1
                logger.warning("unreadable cache entry %s (calling the model and overwriting it): %s", key, exc)
            else:
                return await self._finish(cache, namespace, key, entry, hit=True, errors=errors, started=started)

        flight = state.flights.get(key)
        if flight is None:  # the leader: the model is called once for everyone asking meanwhile
            flight = _Flight.start(state.flights, key, lambda f: self._miss(cache, namespace, key, f, started))
            entry = await flight.answer  # only the leader awaits it: cancelling it cancels no one else
            return await self._finish(cache, namespace, key, entry, hit=False, errors=errors, started=started)
        entry, data = await asyncio.shield(flight.encoded)
        if data is not None:  # a follower gets its own copy of the leader's answer
            try:
                entry = decode(data, self.output_type)
            except DecodeError as exc:  # an output that does not read back: share the leader's
                errors += 1
                logger.warning("the answer for %s does not read back from its entry: %s", key, exc)
        return await self._finish(cache, namespace, key, entry, hit=True, errors=errors, started=started)

    async def _miss(self, cache: Cache, namespace: str, key: str, flight: _Flight, started: float) -> None:
        """Call the model (with backoff), hand the answer to the leader, then encode and store it.

        Runs as its own task, so it finishes even if every caller waiting on it is cancelled, and the
        leader does not wait for encoding and writing. A cancellation after the model answered (the
        end of `asyncio.run`, say) is held until the answer is stored: a paid response is always kept.
        If the leader was cancelled before the answer came, the miss is counted and recorded here.
        """
        try:
            entry = await self._call_model()
        except BaseException as exc:
            flight.fail(exc)
            raise
        leader_gone = flight.answer.done()  # cancelled by its caller while the model was working
        if not leader_gone:
            flight.answer.set_result(entry)
        cancelled = False
        try:
            await asyncio.sleep(0)  # let the leader return its answer before the encoding below
        except asyncio.CancelledError:
            cancelled = True
        try:
            data: bytes | None = encode(entry, self.output_type)
        except Exception as exc:  # noqa: BLE001 - an unencodable output is returned, just not cached
            logger.warning("cannot encode the run for %s, it will not be cached: %s", key, exc)
            data = None
        flight.encoded.set_result((entry, data))
        stored = False
        if data is not None:
            try:
                stored = await cache.guarded.set(key, data, self.ttl)
            except asyncio.CancelledError:
                cancelled = True
                stored = await cache.guarded.set(key, data, self.ttl)
        if not stored:
            cache.stats.add(stats_group(namespace, self.task_name), {"errors": 1})
        if leader_gone:
            try:
                await self._finish(cache, namespace, key, entry, hit=False, errors=0, started=started)
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError

    async def _call_model(self) -> CachedRun[Any]:
        started = time.perf_counter()
        run = await call_with_backoff(
            lambda: self.agent.run(self.prompt, message_history=self.history or None, **self.run_kwargs),
            self.backoff,
        )
        latency = time.perf_counter() - started
        try:
            model, cost = self._price(run)
        except Exception:  # noqa: BLE001 - pricing must never cost a paid answer
            logger.exception("pricing the run failed; its cost is reported as unknown")
            model, cost = effective_model_name(self.agent, self.run_kwargs.get("model")), None
        return CachedRun(run=run, model=model, cost=cost, latency=latency, created=time.time())

    def _price(self, run: AgentRunResult[Any]) -> tuple[str | None, float | None]:
        """The answering model's name and the run's price, summed over its model responses."""
        responses = [msg for msg in run.new_messages() if isinstance(msg, _messages.ModelResponse)]
        model = responses[-1].model_name if responses and responses[-1].model_name else None
        if model is None:
            model = effective_model_name(self.agent, self.run_kwargs.get("model"))
        total = 0.0
        for response in responses:
            name = response.model_name or model or ""
            price = price_usage(name, response.usage, custom_costs=self.custom_costs, provider=response.provider_name)
            if price is None:
                return model, None
            total += price.usd
        return model, total

    async def _finish(
        self,
        cache: Cache,
        namespace: str,
        key: str | None,
        entry: CachedRun[Any],
        *,
        hit: bool,
        errors: int,
        started: float,
        uncached: bool = False,
    ) -> CachedAgentRunResult[Any]:
        result = CachedAgentRunResult._wrap(
            entry.run,
            cost=0.0 if hit else entry.cost,
            saved_cost=entry.cost if hit else None,
            model=entry.model,
            cached=hit,
            cache_key=key,
            original_latency=entry.latency,
        )
        counters = (
            {"hits": 1, "cost_saved": entry.cost or 0.0, "time_saved": entry.latency}
            if hit
            else {"uncached" if uncached else "misses": 1, "cost_spent": entry.cost or 0.0}
        )
        counters["errors"] = errors
        cache.stats.add(stats_group(namespace, self.task_name), counters)
        if self.recorder is not None:
            await notify(
                self.recorder,
                ExpenseEvent(
                    model=entry.model,
                    task_name=self.task_name,
                    cost=result.cost,
                    saved=entry.cost if hit else 0.0,
                    cached=hit,
                    usage=entry.run.usage,
                    latency=time.perf_counter() - started,
                    key=key,
                ),
            )
        return result

    async def _uncached(
        self, cache: Cache, namespace: str, reason: Exception, started: float
    ) -> CachedAgentRunResult[Any]:
        _warn_once(f"this run cannot be cached, calling the model without the cache: {reason}")
        entry = await self._call_model()
        return await self._finish(
            cache, namespace, None, entry, hit=False, errors=0, started=started, uncached=True
        )


@dataclass(eq=False)
class _Flight:
    """One miss in flight: `answer` when the model has answered (the leader's), `encoded` when the entry's
    bytes are ready too (the followers'), `task` when it is also stored."""

    flights: dict[str, _Flight]
    key: str
    answer: asyncio.Future[CachedRun[Any]]
    encoded: asyncio.Future[tuple[CachedRun[Any], bytes | None]]
    task: asyncio.Task[None] | None = None

    @classmethod
    def start(
        cls,
        flights: dict[str, _Flight],
        key: str,
        work: Callable[[_Flight], Coroutine[Any, Any, None]],
    ) -> _Flight:
        loop = asyncio.get_running_loop()
        flight = cls(flights=flights, key=key, answer=loop.create_future(), encoded=loop.create_future())
        flight.task = loop.create_task(work(flight))
        flights[key] = flight
        for future in (flight.answer, flight.encoded, flight.task):
            future.add_done_callback(_consume)
        flight.task.add_done_callback(lambda _: flight.forget())
        return flight

    def fail(self, exc: BaseException) -> None:
        """The model call failed: forget the flight at once (a retry calls the model again), and everyone
        waiting gets its error (or is cancelled with it)."""
        self.forget()
        for future in (self.answer, self.encoded):
            if future.done():
                continue
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)

    def forget(self) -> None:
        if self.flights.get(self.key) is self:
            del self.flights[self.key]


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark a finished future's exception as retrieved (its callers saw it, or none was left waiting)."""
    if not future.cancelled():
        future.exception()


def _check_prompt(prompt: Any) -> None:
    if prompt is None or isinstance(prompt, str):
        return
    if isinstance(prompt, (bytes, Mapping)) or not isinstance(prompt, Sequence):
        raise TypeError(f"prompt must be a string or a sequence of PydanticAI user content, not {type(prompt).__name__}")


def _is_empty(prompt: Any) -> bool:
    if prompt is None:
        return True
    if isinstance(prompt, str):
        return not prompt.strip()
    return len(prompt) == 0


def _backoff(initial_wait: float, max_wait: float) -> Backoff:
    try:
        return _cached_backoff(initial_wait, max_wait)
    except TypeError:  # unhashable arguments: let Backoff say what is wrong with them
        return Backoff(initial_wait=initial_wait, max_wait=max_wait)


@functools.lru_cache(maxsize=64)
def _cached_backoff(initial_wait: float, max_wait: float) -> Backoff:
    return Backoff(initial_wait=initial_wait, max_wait=max_wait)


@functools.lru_cache(maxsize=64)
def _run_parameters(agent_type: type) -> frozenset[str] | None:
    """Keyword names `agent_type.run` accepts; None if it takes `**kwargs`."""
    params = inspect.signature(agent_type.run).parameters.values()  # type: ignore[attr-defined]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL) - {"self"}


def _check_run_kwargs(agent_type: type, run_kwargs: Mapping[str, Any]) -> None:
    if not run_kwargs:
        return
    reserved = _RESERVED_KWARGS.intersection(run_kwargs)
    if reserved:
        raise TypeError(f"pass the prompt as prompt=, not {', '.join(sorted(reserved))}=")
    accepted = _run_parameters(agent_type)
    unknown = [] if accepted is None else sorted(set(run_kwargs) - accepted)
    if unknown:
        raise TypeError(f"{agent_type.__name__}.run() got unexpected keyword argument(s): {', '.join(unknown)}")


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)
