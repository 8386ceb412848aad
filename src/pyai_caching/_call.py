"""One validated whole-run call: what it keys (`_keys.request_material`) and stores (`_codec`), and how a
miss runs the agent (per-request retries, every response priced). The engine (`_engine.fetch`) does
the rest; `_accounting` counts and reports the outcome.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_ai import messages as _messages
from pydantic_ai import usage as _usage
from pydantic_ai.agent import AbstractAgent

from . import _telemetry as telemetry
from ._accounting import account, missing_error
from ._arguments import (
    check_costs_and_recorder,
    check_prompt,
    check_run_kwargs,
    is_empty,
)
from ._codec import CachedRun, decode, encode
from ._config import CacheMode, check_task_name, resolve_mode, resolve_ttl
from ._engine import Missing, Produced, fetch
from ._events import event_groups, replay_events
from ._history import to_messages
from ._identity import rebind
from ._keys import RunKey, UnkeyableError, request_manifest
from ._logs import logger, warn_once
from ._registry import Cache, LoopState
from ._result import CachedAgentRunResult
from ._retry import Backoff
from ._running import run_agent
from ._scope import Scope
from .costs import ModelCosts
from .exceptions import CacheMissError
from .recorders import ExpenseCallback, ExpenseRecorder
from .stats import stats_group

__all__ = ("RunCall", "warn_once")  # warn_once: re-exported for the modules that say things once



@dataclass(slots=True)
class RunCall:
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
    _key: RunKey | None = None

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
    ) -> RunCall:
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

    @classmethod
    def for_lookup(
        cls,
        agent: Any,
        prompt: Any,
        task_name: Any,
        *,
        mode: Any = None,
        message_history: Any = None,
        key_extra: Any = None,
        run_kwargs: dict[str, Any],
    ) -> RunCall:
        """A call as `cached_agent_run` would make it, to find its entry (explain, clear_entry): validated the same
        way; the arguments that do not change the key (`ttl`, `max_wait`, `expense_recorder`, ...) are dropped."""
        kwargs = {k: v for k, v in run_kwargs.items() if k not in _NOT_FOR_LOOKUP}
        return cls.prepare(
            None,
            agent,
            prompt,
            task_name,
            mode=mode,
            message_history=message_history,
            ttl=None,
            backoff=Backoff(initial_wait=1.0, max_wait=30.0),
            expense_recorder=None,
            custom_costs=None,
            key_extra=key_extra,
            run_kwargs=kwargs,
        )

    async def execute(self, state: LoopState, cache: Cache, namespace: str) -> CachedAgentRunResult[Any]:
        """Run the call: from the cache or the model, as its mode says; in an OpenTelemetry span when tracing."""
        if not telemetry.tracing():  # (the common case, without entering a span's context manager)
            return await self._execute(state, cache, namespace)
        with telemetry.run_span(self.task_name, self.mode, cache.guarded.store):
            return await self._execute(state, cache, namespace)

    async def _execute(self, state: LoopState, cache: Cache, namespace: str) -> CachedAgentRunResult[Any]:
        started = time.perf_counter()
        if self.mode == "off":
            return await self._uncached(cache, namespace, None, started)
        early = None  # the store read, sent while the key is worked out (when the key can be guessed)
        if self.mode == "read_write" and cache.guarded.store.starts_gets():
            guess = self.key_guess(namespace)
            early = None if guess is None else await cache.guarded.start_get(guess)
        try:
            key = self.key(namespace)
        except BaseException as exc:
            if early is not None:
                await early.discard()
            if not isinstance(exc, UnkeyableError):
                raise
            if self.mode == "replay":  # nothing could have been recorded: calling the model would leave the replay
                raise CacheMissError(
                    f"task {self.task_name!r} cannot be replayed: this run cannot be cached ({exc})",
                    key="",
                    task_name=self.task_name,
                ) from exc
            return await self._uncached(cache, namespace, exc, started)

        async def orphaned(entry: CachedRun[Any]) -> None:  # the leader was cancelled: its miss still counts
            await account(self, cache, namespace, key, entry, hit=False, errors=0, started=started)

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
                early=early,
            )
        except Missing as missing:
            telemetry.count(self.task_name, "replay_miss", spent=0.0, saved=0.0, errors=int(missing.store_failed))
            if self.scope is not None:
                self.scope.missing.add(key)
            cache.stats.add(stats_group(namespace, self.task_name), {"misses": 1, "errors": int(missing.store_failed)})
            raise await missing_error(self, cache, missing) from missing.drift
        handler = self.run_kwargs.get("event_stream_handler")
        if outcome.hit and handler is not None:
            await self.replay_events(handler, outcome.value)
        return await account(
            self, cache, namespace, key, outcome.value, hit=outcome.hit, errors=outcome.errors, started=started
        )

    async def replay_events(self, handler: Any, entry: CachedRun[Any]) -> None:
        """Give the handler the events recorded with the entry, as the run that made it gave them."""
        groups = event_groups(entry)
        if groups is None:
            warn_once(
                f"task {self.task_name!r}: this hit was recorded without an event_stream_handler (or its events "
                "could not be read), so the handler receives no events"
            )
            return
        run = entry.run
        model = self.run_kwargs.get("model") or self.agent.model
        await replay_events(
            handler, groups, entry.event_steps, deps=self.run_kwargs.get("deps"), model=model, run=run, prompt=self.prompt
        )

    # -- what a run keys and stores

    @property
    def material(self) -> dict[str, Any] | None:
        """What the key was made of (`_keys.request_material`), once `key` has made it."""
        return None if self._key is None else self._key.material

    def key(self, namespace: str) -> str:
        """The run's key (its material kept for the manifest).

        Raises:
            UnkeyableError: part of the run has no stable data form.
        """
        return self._run_key().derive(namespace, self.task_name)

    def key_guess(self, namespace: str) -> str | None:
        """A guess at the run's key, to send the store read early (`_keys.RunKey.guess`); `key` says what it is."""
        return self._run_key().guess(namespace, self.task_name)

    def _run_key(self) -> RunKey:
        if self._key is None:
            self._key = RunKey(self.agent, self.prompt, self.history, self.run_kwargs, self.key_extra)
        return self._key

    def manifest(self) -> Any:
        """The key's manifest (what it was made of, to explain misses), or None if it cannot be made."""
        if self.material is None:
            return None
        try:
            return request_manifest(self.material, self._key.agent_json if self._key is not None else None)
        except Exception as exc:  # noqa: BLE001 - an entry without a manifest is still an entry
            logger.debug("no manifest for task %r: %s", self.task_name, exc)
            return None

    def _decode(self, data: bytes) -> CachedRun[Any]:
        """A stored entry as this caller's own run: validated for its output type, with its identity."""
        entry = decode(data, self.output_type, context=self.validation_context())
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
        rebind(entry.run, history=history, run_kwargs=kwargs, agent=self.agent)
        caller_usage = self.run_kwargs.get("usage")
        if not isinstance(caller_usage, _usage.RunUsage):  # `conversation=`: a run starts from a copy of its usage
            carried = getattr(conversation, "usage", None)
            caller_usage = copy.copy(carried) if isinstance(carried, _usage.RunUsage) else None
        if caller_usage is not None:
            own = entry.run_usage
            caller_usage.incr(own)
            entry.run._state.usage = caller_usage  # pyright: ignore[reportPrivateUsage]
            object.__setattr__(entry, "usage", own)  # (this caller's own copy) the event reports what was saved

    def validation_context(self) -> Any:
        """The agent's validation context, for the output's validators on a hit (a function of the run context
        cannot be evaluated without a run: hits then validate without it, and the entry was checked to read back)."""
        context = getattr(self.agent, "_validation_context", None)
        return None if callable(context) else context

    async def _produce(self, cache: Cache, namespace: str) -> Produced[CachedRun[Any]]:
        """Call the model; the entry's bytes only if the output reads back as the agent produced it."""
        entry = await self._call_model(cache, namespace)
        return Produced(entry, self.encoded(entry))

    def encoded(self, entry: CachedRun[Any]) -> bytes | None:
        """The entry's bytes, or None when it must not be stored: its output does not read back as it was produced."""
        try:
            data: bytes | None = encode(entry, self.output_type, manifest=self.manifest())
            if self.output_type is str and type(entry.run.output) is str:  # reads back as itself (an output
                return data  # validator may have returned something else: that is checked below)
            if decode(data, self.output_type, context=self.validation_context()).run.output != entry.run.output:
                data = None
                warn_once(
                    f"the output of task {self.task_name!r} does not read back as the agent produced it (a validator "
                    "that changes its value on every pass?): such runs are answered, not cached"
                )
        except Exception as exc:  # noqa: BLE001 - an unencodable output is returned, just not cached
            logger.warning("cannot store the run of task %r, it will not be cached: %s", self.task_name, exc)
            data = None
        return data

    async def _call_model(self, cache: Cache, namespace: str) -> CachedRun[Any]:
        return await run_agent(self, cache, namespace)

    # -- accounting

    async def _uncached(
        self, cache: Cache, namespace: str, reason: Exception | None, started: float
    ) -> CachedAgentRunResult[Any]:
        if reason is not None:
            warn_once(f"this run cannot be cached, calling the model without the cache: {reason}")
        entry = await self._call_model(cache, namespace)
        return await account(self, cache, namespace, None, entry, hit=False, errors=0, started=started, uncached=True)


_NOT_FOR_LOOKUP = frozenset({"ttl", "max_wait", "initial_wait", "expense_recorder", "custom_costs", "mode"})
"""Arguments of `cached_agent_run` that say how to run, not what to ask: not needed to find an entry."""
