"""The front door: `cached_agent_run` and `cached_agent_run_sync`.

Says what a whole run keys (`_keys.request_digest`) and stores (`_codec`), and hands the rest to
the engine (`_engine.fetch`): validate, key, look up, on a miss run the agent with per-request
retries, price it, store it, give a hit the caller's identity, count it, record it.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic_ai import messages as _messages
from pydantic_ai import usage as _usage
from pydantic_ai.agent import AbstractAgent

from . import _portal
from ._attempts import Attempts, RequestRetries, has_model_fallback
from ._codec import CachedRun, decode, encode
from ._config import CacheMode, check_task_name, resolve_mode, resolve_namespace, resolve_store_spec, resolve_ttl
from ._engine import Missing, Produced, fetch
from ._history import to_messages
from ._identity import rebind
from ._explain import explain_key
from ._keys import UnkeyableError, digest_of, effective_model_name, format_key, request_manifest, request_material
from ._registry import Cache, LoopState, loop_state
from ._result import CachedAgentRunResult
from ._retry import Backoff
from ._scope import Scope, active_scope
from ._arguments import backoff, check_costs_and_recorder, check_prompt, check_run_kwargs, is_empty
from .costs import ModelCosts, price_responses
from .exceptions import CacheDriftError, CacheMissError
from .recorders import ExpenseCallback, ExpenseEvent, ExpenseRecorder, notify
from .stats import stats_group
from .stores import Store

__all__ = ("cached_agent_run", "cached_agent_run_sync")

logger = logging.getLogger("pyai_caching")

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
    mode: CacheMode | None = None,
    **agent_run_kwargs: Any,
) -> CachedAgentRunResult[Any]:
    """Drop-in for `await agent.run(prompt, ...)` that answers repeated runs from the cache.

    Args:
        agent: The PydanticAI agent to run.
        prompt: The user prompt: a string or PydanticAI user content (text, images, documents).
            May be empty only when `message_history` is given.
        task_name: Groups entries and counters (`<namespace>:v2:<task_name>:<digest>`).
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
        mode: `read_write` (default), `replay` (cache only: a miss raises `CacheMissError`), `refresh` (call the
            model and overwrite) or `off`; defaults to `LLM_CACHE_MODE`.
        **agent_run_kwargs: Passed to `agent.run` (`model`, `model_settings`, `deps`, `usage_limits`, ...).

    Returns:
        A `CachedAgentRunResult`: a real `AgentRunResult` plus `.cost`, `.saved_cost`, `.model`, `.cached`.
        On a miss it returns once the answer is also stored (or the write failed and was logged), so a
        call made right after, in any process, hits. Concurrent identical calls share the one model call.

    Raises:
        ConfigurationError: no store is configured, its URL is not a Redis URL, or the mode is unknown.
        ValueError | TypeError: invalid arguments (checked before any model call).
        CacheMissError: in `replay` mode, no entry was recorded for this call (the message says what differs
            from the nearest recording); `CacheDriftError` when the recorded answer no longer validates.
        UsageLimitExceeded: the provider kept rate limiting until `max_wait` seconds were spent waiting.
    """
    scope = active_scope()
    if scope is not None:  # the pytest plugin's `llm_cache`: every call uses its store, its mode by default
        store, mode = scope.store, mode if mode is not None else scope.mode
    call = _Call.prepare(
        scope,
        agent,
        prompt,
        task_name,
        mode=mode,
        message_history=message_history,
        ttl=ttl,
        backoff=backoff(initial_wait, max_wait),
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
    connections are reused across calls and never bound to a loop that has closed.
    """
    result = _portal.run(cached_agent_run(agent, prompt, task_name, **kwargs))
    if not result.cached:  # the model's HTTP client was used on the background loop: let it stop first
        _portal.wait_until_stopped()
    return result


@dataclass(slots=True)
class _Call:
    """One validated call: what to run, how to key it, and what to do with the answer."""

    scope: Scope | None
    agent: AbstractAgent[Any, Any]
    prompt: str | Sequence[_messages.UserContent] | None
    task_name: str
    mode: CacheMode
    history: list[_messages.ModelMessage]
    ttl: float | None
    backoff: Backoff
    recorder: ExpenseRecorder | ExpenseCallback | None
    custom_costs: Mapping[str, ModelCosts] | None
    key_extra: Any
    run_kwargs: dict[str, Any]
    output_type: Any
    material: dict[str, Any] | None = None
    """What the key was made of (`_keys.request_material`), once `key` has made it."""

    @classmethod
    def prepare(
        cls,
        scope: Scope | None,
        agent: Any,
        prompt: Any,
        task_name: Any,
        *,
        mode: Any,
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
        resolved_mode = resolve_mode(mode)
        check_prompt(prompt)
        history = to_messages(message_history)
        if is_empty(prompt) and not history and run_kwargs.get("conversation") is None:
            raise ValueError("prompt is empty and there is no message_history: nothing to ask the model")
        check_run_kwargs(type(agent), run_kwargs)
        check_costs_and_recorder(custom_costs, expense_recorder)
        return cls(
            scope=scope,
            agent=agent,
            prompt=prompt,
            task_name=task_name,
            mode=resolved_mode,
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
        if self.mode == "off":
            return await self._uncached(cache, namespace, None, started)
        try:
            key = self.key(namespace)
        except UnkeyableError as exc:
            if self.mode == "replay":  # nothing could have been recorded: calling the model would leave the replay
                raise CacheMissError(
                    f"task {self.task_name!r} cannot be replayed: this run cannot be cached ({exc})",
                    key="",
                    task_name=self.task_name,
                ) from exc
            return await self._uncached(cache, namespace, exc, started)

        async def orphaned(entry: CachedRun[Any]) -> None:  # the leader was cancelled: its miss still counts
            await self._account(cache, namespace, key, entry, hit=False, errors=0, started=started)

        try:
            outcome = await fetch(
                state.flights,
                cache,
                key,
                mode=self.mode,
                ttl=self.ttl,
                decode=self._decode,
                copy=self._copy,
                produce=lambda: self._produce(cache, namespace),
                orphaned=orphaned,
            )
        except Missing as missing:
            if self.scope is not None:
                self.scope.missing.add(key)
            cache.stats.add(stats_group(namespace, self.task_name), {"misses": 1, "errors": int(missing.store_failed)})
            raise await self._missing(cache, missing) from missing.drift
        return await self._account(
            cache, namespace, key, outcome.value, hit=outcome.hit, errors=outcome.errors, started=started
        )

    # -- what a run keys and stores

    def key(self, namespace: str) -> str:
        """The run's key (its material kept for the manifest).

        Raises:
            UnkeyableError: part of the run has no stable data form.
        """
        self.material = request_material(self.agent, self.prompt, self.history, self.run_kwargs, self.key_extra)
        return format_key(namespace, self.task_name, digest_of(self.material))

    def manifest(self) -> Any:
        """The key's manifest (what it was made of, to explain misses), or None if it cannot be made."""
        if self.material is None:
            return None
        try:
            return request_manifest(self.material)
        except Exception as exc:  # noqa: BLE001 - an entry without a manifest is still an entry
            logger.debug("no manifest for task %r: %s", self.task_name, exc)
            return None

    def _decode(self, data: bytes) -> CachedRun[Any]:
        """A stored entry as this caller's own run: validated for its output type, with its identity."""
        entry = decode(data, self.output_type, context=self._validation_context())
        self._rebind(entry)
        return entry

    def _copy(self, entry: CachedRun[Any]) -> CachedRun[Any]:
        """The leader's answer as this caller's own run, when it has no entry bytes."""
        own = copy.deepcopy(entry)
        self._rebind(own)
        return own

    def _rebind(self, entry: CachedRun[Any]) -> None:
        """The caller's identity on its own copy of a run; a `usage=` it passed gets this run's usage added, as
        `agent.run` does (the delegation pattern `usage=ctx.usage`)."""
        conversation = self.run_kwargs.get("conversation")
        history = [*self.history, *getattr(conversation, "messages", ())] if conversation is not None else self.history
        kwargs = self.run_kwargs
        if conversation is not None and kwargs.get("conversation_id") is None:
            kwargs = {**kwargs, "conversation_id": getattr(conversation, "conversation_id", None)}
        rebind(entry.run, history=history, run_kwargs=kwargs, agent_metadata=getattr(self.agent, "_metadata", None))
        caller_usage = self.run_kwargs.get("usage")
        if not isinstance(caller_usage, _usage.RunUsage):  # `conversation=`: a run starts from a copy of its usage
            carried = getattr(conversation, "usage", None)
            caller_usage = copy.copy(carried) if isinstance(carried, _usage.RunUsage) else None
        if caller_usage is not None:
            own = entry.run_usage
            caller_usage.incr(own)
            entry.run._state.usage = caller_usage  # pyright: ignore[reportPrivateUsage]
            object.__setattr__(entry, "usage", own)  # (this caller's own copy) the event reports what was saved

    def _validation_context(self) -> Any:
        """The agent's validation context, for the output's validators on a hit (a function of the run context
        cannot be evaluated without a run: hits then validate without it, and the entry was checked to read back)."""
        context = getattr(self.agent, "_validation_context", None)
        return None if callable(context) else context

    async def _produce(self, cache: Cache, namespace: str) -> Produced[CachedRun[Any]]:
        """Call the model; the entry's bytes only if the output reads back as the agent produced it."""
        entry = await self._call_model(cache, namespace)
        try:
            data: bytes | None = encode(entry, self.output_type, manifest=self.manifest())
            if decode(data, self.output_type, context=self._validation_context()).run.output != entry.run.output:
                data = None
                _warn_once(
                    f"the output of task {self.task_name!r} does not read back as the agent produced it (a validator "
                    "that changes its value on every pass?): such runs are answered, not cached"
                )
        except Exception as exc:  # noqa: BLE001 - an unencodable output is returned, just not cached
            logger.warning("cannot store the run of task %r, it will not be cached: %s", self.task_name, exc)
            data = None
        return Produced(entry, data)

    async def _call_model(self, cache: Cache, namespace: str) -> CachedRun[Any]:
        """Run the agent with per-request retries; every response that came back is priced, even if the run fails."""
        attempts = Attempts(self.backoff)
        run_capabilities = list(self.run_kwargs.get("capabilities") or ())
        kwargs = dict(self.run_kwargs)
        if not has_model_fallback(self.agent, run_capabilities):  # with one, failures go to the fallback models
            kwargs["capabilities"] = [*run_capabilities, RequestRetries(attempts)]
        caller_usage = self.run_kwargs.get("usage")
        if not isinstance(caller_usage, _usage.RunUsage):  # a run from `conversation=` starts from its usage
            caller_usage = getattr(self.run_kwargs.get("conversation"), "usage", None)
        before = copy.deepcopy(caller_usage) if isinstance(caller_usage, _usage.RunUsage) else None
        started = time.perf_counter()
        try:
            run = await self.agent.run(self.prompt, message_history=self.history or None, **kwargs)
        except asyncio.CancelledError:  # the responses that came back were paid for: count them, then stop
            self._count_failure(cache, namespace, attempts)
            raise
        except Exception:
            await self._account_failure(cache, namespace, attempts, time.perf_counter() - started)
            raise
        latency = time.perf_counter() - started
        responses = attempts.all_responses() or [m for m in run.new_messages() if isinstance(m, _messages.ModelResponse)]
        model, cost = price_responses(
            responses, requested=effective_model_name(self.agent, self.run_kwargs.get("model")), custom_costs=self.custom_costs
        )
        return CachedRun(
            run=run,
            model=model,
            cost=cost,
            latency=latency,
            created=time.time(),
            failed_attempts=attempts.failed,
            usage=_minus(run.usage, before) if before is not None else None,
        )

    # -- accounting

    def _count_failure(self, cache: Cache, namespace: str, attempts: Attempts) -> tuple[str | None, float | None]:
        """A run that raised or was cancelled: what its responses cost is still spent."""
        model, cost = price_responses(
            attempts.all_responses(),
            requested=effective_model_name(self.agent, self.run_kwargs.get("model")),
            custom_costs=self.custom_costs,
        )
        cache.stats.add(stats_group(namespace, self.task_name), {"cost_spent": cost or 0.0, "failed": 1})
        return model, cost

    async def _account_failure(self, cache: Cache, namespace: str, attempts: Attempts, latency: float) -> None:
        """A run that raised: what its responses cost is still spent, and reported."""
        responses = attempts.all_responses()
        if not responses and not attempts.failed:
            return
        model, cost = self._count_failure(cache, namespace, attempts)
        if self.recorder is not None:
            await notify(
                self.recorder,
                ExpenseEvent(
                    model=model,
                    task_name=self.task_name,
                    cost=cost,
                    saved=0.0,
                    cached=False,
                    usage=sum((r.usage for r in responses), _usage.RunUsage()) if responses else _usage.RunUsage(),
                    latency=latency,
                    key=None,
                    failed_attempts=attempts.failed,
                    failed=True,
                ),
            )

    async def _account(
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
        if self.scope is not None and key is not None:
            (self.scope.replayed if hit else self.scope.recorded).add(key)
        if self.recorder is not None:
            await notify(
                self.recorder,
                ExpenseEvent(
                    model=entry.model,
                    task_name=self.task_name,
                    cost=result.cost,
                    saved=entry.cost if hit else 0.0,
                    cached=hit,
                    usage=entry.run_usage,
                    latency=time.perf_counter() - started,
                    key=key,
                    failed_attempts=0 if hit else entry.failed_attempts,
                ),
            )
        return result

    async def _missing(self, cache: Cache, missing: Missing) -> CacheMissError:
        """The error a `replay` miss raises: what was missing, and what differs from the nearest recording."""
        key, task = missing.key, self.task_name
        if missing.drift is not None:
            return CacheDriftError(
                f"the recorded answer of task {task!r} cannot be replayed: {missing.drift} (if the agent's output type "
                f"or its validators changed since it was recorded, record it again with mode 'refresh') [key {key}]",
                key=key,
                task_name=task,
            )
        if missing.store_failed:
            return CacheMissError(
                f"replay of task {task!r} failed: the cache store could not be read [key {key}]", key=key, task_name=task
            )
        explanation = await explain_key(cache.guarded.store, key, task, self.manifest())
        return CacheMissError(
            f"no recorded answer for this call of task {task!r} (mode 'replay' never calls the model; record it with "
            f"mode 'read_write') [key {key}]\n{explanation}" + (f"\n{self.scope.hint}" if self.scope and self.scope.hint else ""),
            key=key,
            task_name=task,
            explanation=explanation,
        )

    async def _uncached(
        self, cache: Cache, namespace: str, reason: Exception | None, started: float
    ) -> CachedAgentRunResult[Any]:
        if reason is not None:
            _warn_once(f"this run cannot be cached, calling the model without the cache: {reason}")
        entry = await self._call_model(cache, namespace)
        return await self._account(cache, namespace, None, entry, hit=False, errors=0, started=started, uncached=True)


def _minus(total: _usage.RunUsage, before: _usage.RunUsage) -> _usage.RunUsage:
    """What a run added to a usage object it was given (`total` is that object afterwards)."""
    own = _usage.RunUsage()
    for field in dataclasses.fields(own):
        value = getattr(total, field.name)
        if isinstance(value, int):
            setattr(own, field.name, value - getattr(before, field.name))
    own.details = {k: v - before.details.get(k, 0) for k, v in total.details.items() if v - before.details.get(k, 0)}
    return own


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)
