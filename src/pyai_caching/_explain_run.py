"""`explain` / `explain_sync`: whether a call would be answered from the cache, and if not, why not."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic_ai import messages as _messages
from pydantic_ai.agent import AbstractAgent

from . import _portal
from ._codec import decode
from ._config import resolve_namespace, resolve_store_spec
from ._explain import Explanation, explain_key
from ._keys import UnkeyableError
from ._registry import loop_state
from ._call import RunCall
from ._scope import active_scope
from .stores import Store

__all__ = ("explain", "explain_sync")


async def explain(
    agent: AbstractAgent[Any, Any],
    prompt: str | Sequence[_messages.UserContent] | None,
    task_name: str,
    *,
    message_history: Sequence[Any] | None = None,
    redis_url: str | None = None,
    store: Store | None = None,
    namespace: str | None = None,
    key_extra: Any = None,
    **agent_run_kwargs: Any,
) -> Explanation:
    """Whether `cached_agent_run` with the same arguments would find a recording, and if not, what differs from
    the nearest recording of the same task (`str()` of the result says it in words). Never calls the model.

    Arguments that do not change the key (`ttl`, `max_wait`, `expense_recorder`, ...) are accepted and ignored,
    so a call can be explained by adding one word in front of it; `mode` says whether an entry past its TTL
    still answers (in `replay`).

    Raises:
        ConfigurationError | ValueError | TypeError: as `cached_agent_run` for the same arguments.
    """
    mode = agent_run_kwargs.pop("mode", None)
    scope = active_scope()
    if scope is not None:
        store, mode = scope.store, mode if mode is not None else scope.mode
    call = RunCall.for_lookup(
        agent, prompt, task_name, mode=mode, message_history=message_history, key_extra=key_extra,
        run_kwargs=agent_run_kwargs,
    )
    namespace = resolve_namespace(namespace)
    spec = None if store is not None else resolve_store_spec(redis_url)
    try:
        key = call.key(namespace)
    except UnkeyableError as exc:
        return Explanation(task_name, "", recorded=False, note=f"this call cannot be cached, it runs without the cache: {exc}")
    cache = (await loop_state()).cache_for(spec, store)
    return await explain_key(
        cache.guarded.store,
        key,
        task_name,
        call.manifest(),
        decode=lambda data: decode(data, call.output_type, context=call.validation_context()),
        replay=call.mode == "replay",
    )


def explain_sync(
    agent: AbstractAgent[Any, Any], prompt: str | Sequence[_messages.UserContent] | None, task_name: str, **kwargs: Any
) -> Explanation:
    """Blocking `explain`, same arguments."""
    return _portal.run(explain(agent, prompt, task_name, **kwargs))

