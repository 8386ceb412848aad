"""The front door: `cached_agent_run` and `cached_agent_run_sync`.

Resolves the store and the mode (the pytest plugin's scope first), validates the call
(`_call.RunCall.prepare`) and runs it: key, look up, on a miss run the agent with per-request
retries, price it, store it, give a hit the caller's identity, count it, record it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from pydantic_ai import messages as _messages
from pydantic_ai.agent import AbstractAgent

from . import _portal
from ._arguments import backoff
from ._call import RunCall
from ._config import CacheMode, resolve_namespace, resolve_store_spec
from ._registry import Cache, LoopState, loop_state
from ._result import CachedAgentRunResult
from ._scope import active_scope
from .costs import ModelCosts
from .recorders import ExpenseCallback, ExpenseRecorder
from .stores import Store

__all__ = ("cached_agent_run", "cached_agent_run_sync", "open_call")


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
    return await call.execute(state, cache, namespace)


async def open_call(
    agent: Any,
    prompt: Any,
    task_name: Any,
    *,
    store: Store | None,
    redis_url: str | None,
    namespace: str | None,
    mode: Any,
    message_history: Any,
    ttl: Any,
    max_wait: float,
    initial_wait: float,
    expense_recorder: Any,
    custom_costs: Any,
    key_extra: Any,
    run_kwargs: dict[str, Any],
) -> tuple[RunCall, LoopState, Cache, str]:
    """A whole-run call validated (before any model call) and the store it uses: the pytest plugin's scope first
    (its store, and its mode unless the call names one), else the call's store or URL, else the environment."""
    scope = active_scope()
    if scope is not None:
        store, mode = scope.store, mode if mode is not None else scope.mode
    call = RunCall.prepare(
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
        run_kwargs=run_kwargs,
    )
    spec = None if store is not None else resolve_store_spec(redis_url)
    state = await loop_state()
    return call, state, state.cache_for(spec, store), resolve_namespace(namespace)


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
