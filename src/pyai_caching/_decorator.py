"""`@llm_cache(...)`: the cache for any function that calls an LLM (an SDK called directly), sync or async,
returning a value or yielding chunks.

Keyed on the function (qualified name, code digest, defaults and closures, as `_keys` keys functions) and its
arguments as canonical JSON, or on what `key=` returns for them. Values are stored as JSON through the
function's return annotation (a pydantic model is re-validated on read; never pickle); chunks of a generator
are recorded as the caller consumes them and stored only when it finished, then replayed in order.
Same stores, modes, counters and fail-open rules as `cached_agent_run`; values (not chunks) are
single-flight like runs.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import inspect
import json
import time
import types
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import TypeAdapter

from . import _portal
from ._codec import DecodeError
from ._config import CacheMode, check_task_name, resolve_mode, resolve_namespace, resolve_store_spec, resolve_ttl
from ._engine import Missing, Produced, fetch
from ._keys import UnkeyableError, canonical_json, format_key
from ._keys._functions import callable_data
from ._registry import Cache, loop_state
from ._scope import active_scope
from .exceptions import CacheMissError
from .stats import stats_group
from .stores import Store

__all__ = ("llm_cache",)

_FORMAT = 1


def llm_cache(
    task_name: str,
    *,
    ttl: float | timedelta | None = None,
    store: Store | None = None,
    redis_url: str | None = None,
    mode: CacheMode | None = None,
    namespace: str | None = None,
    key: Callable[..., Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Cache what the decorated function returns (or yields) for each distinct set of arguments.

    Args:
        task_name: Groups the entries and counters, as for `cached_agent_run`.
        ttl, store, redis_url, mode, namespace: As for `cached_agent_run` (else the environment).
        key: A function of the same arguments returning JSON-able key material, for arguments that have no JSON
            form (a client object, a connection); without it such arguments are a `TypeError` at call time.

    Raises:
        ValueError | TypeError | ConfigurationError: bad arguments, when decorating.
    """
    check_task_name(task_name)
    seconds = resolve_ttl(ttl)
    if mode is not None:
        resolve_mode(mode)
    if store is not None and not isinstance(store, Store):
        raise TypeError(f"store must be a pyai_caching Store, not {type(store).__name__}")
    if key is not None and not callable(key):
        raise TypeError("key must be a function of the decorated function's arguments")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        cached = _Cached(fn, task_name, seconds, store, redis_url, mode, namespace, key)
        if inspect.isasyncgenfunction(fn):

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                async for chunk in cached.async_generator(*args, **kwargs):
                    yield chunk

        elif inspect.isgeneratorfunction(fn):

            def wrapper(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
                yield from cached.generator(*args, **kwargs)

        elif inspect.iscoroutinefunction(fn):

            async def wrapper(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
                return await cached.coroutine(*args, **kwargs)

        else:

            def wrapper(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
                return cached.function(*args, **kwargs)

        return functools.wraps(fn)(wrapper)

    return decorate


@dataclass
class _Cached:
    fn: Callable[..., Any]
    task_name: str
    ttl: float | None
    store: Store | None
    redis_url: str | None
    mode: CacheMode | None
    namespace: str | None
    key_fn: Callable[..., Any] | None

    def __post_init__(self) -> None:
        self.signature = inspect.signature(self.fn)
        self.adapter: TypeAdapter[Any] = TypeAdapter(_data_type(self.fn))

    # -- the four kinds of function

    async def coroutine(self, *args: Any, **kwargs: Any) -> Any:
        return await self._value(lambda: self.fn(*args, **kwargs), args, kwargs)

    def function(self, *args: Any, **kwargs: Any) -> Any:
        async def call() -> Any:
            return await asyncio.to_thread(self.fn, *args, **kwargs)  # the loop keeps serving other calls

        return _portal.run(self._value(call, args, kwargs))

    async def async_generator(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        cache, key, mode = await self._lookup_context(args, kwargs)
        recorded = await self._recorded(cache, key, mode)
        if recorded is not None:
            for chunk in recorded:
                yield chunk
            return
        chunks, started = [], time.perf_counter()
        async for chunk in self.fn(*args, **kwargs):
            chunks.append(chunk)
            yield chunk
        await self._store(cache, key, mode, self._encode_chunks(chunks, time.perf_counter() - started))

    def generator(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        cache, key, mode = _portal.run(self._lookup_context(args, kwargs))
        recorded = _portal.run(self._recorded(cache, key, mode))
        if recorded is not None:
            yield from recorded
            return
        chunks, started = [], time.perf_counter()
        for chunk in self.fn(*args, **kwargs):
            chunks.append(chunk)
            yield chunk
        _portal.run(self._store(cache, key, mode, self._encode_chunks(chunks, time.perf_counter() - started)))

    # -- the cache around them

    async def _value(self, call: Callable[[], Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        cache, key, mode = await self._lookup_context(args, kwargs)
        if mode == "off":
            return await call()

        async def produce() -> Produced[Any]:
            started = time.perf_counter()
            value = await call()
            try:
                data: bytes | None = self._encode(
                    {"value": self.adapter.dump_python(value, mode="json")}, time.perf_counter() - started
                )
            except Exception:  # noqa: BLE001 - a value with no JSON form is returned, not stored
                data = None
            return Produced(value, data)

        async def orphaned(value: Any) -> None:
            pass

        try:
            outcome = await fetch(
                (await loop_state()).flights,
                cache,
                key,
                mode=mode,
                ttl=self.ttl,
                decode=self._decode_value,
                copy=copy.deepcopy,
                produce=produce,
                orphaned=orphaned,
            )
        except Missing as missing:
            raise self._missing(missing) from missing.drift
        counters = {"hits" if outcome.hit else "misses": 1, "errors": outcome.errors}
        cache.stats.add(stats_group(resolve_namespace(self.namespace), self.task_name), counters)
        _used(key, replayed=outcome.hit)
        return outcome.value

    async def _lookup_context(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Cache, str, CacheMode]:
        scope = active_scope()
        store, mode = (scope.store, self.mode or scope.mode) if scope is not None else (self.store, self.mode)
        resolved = resolve_mode(mode)
        namespace = resolve_namespace(self.namespace)
        spec = None if store is not None else resolve_store_spec(self.redis_url)
        cache = (await loop_state()).cache_for(spec, store)
        return cache, format_key(namespace, self.task_name, self._digest(args, kwargs)), resolved

    def _digest(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if self.key_fn is not None:
            material: Any = self.key_fn(*args, **kwargs)
        else:
            bound = self.signature.bind(*args, **kwargs)
            bound.apply_defaults()
            material = dict(bound.arguments)
        try:
            function = callable_data(self.fn) if isinstance(self.fn, types.FunctionType) else self.fn
            return hashlib.sha256(canonical_json({"function": function, "arguments": material})).hexdigest()
        except UnkeyableError as exc:
            raise TypeError(
                f"cannot key a call of {self.fn.__qualname__}: {exc}; pass key= to @llm_cache (a function of the same "
                "arguments returning JSON-able key material)"
            ) from exc

    async def _recorded(self, cache: Cache, key: str, mode: CacheMode) -> list[Any] | None:
        """The recorded chunks for a generator call, or None (a miss: the caller streams live)."""
        group = stats_group(resolve_namespace(self.namespace), self.task_name)
        if mode in ("off", "refresh"):
            return None
        data, _ = await (cache.guarded.get_including_expired(key) if mode == "replay" else cache.guarded.get(key))
        if data is not None:
            try:
                chunks = self._decode_chunks(data)
                cache.stats.add(group, {"hits": 1})
                _used(key, replayed=True)
                return chunks
            except DecodeError as exc:
                if mode == "replay":
                    raise self._missing(Missing(key, drift=exc)) from exc
        if mode == "replay":
            raise self._missing(Missing(key))
        cache.stats.add(group, {"misses": 1})
        return None

    async def _store(self, cache: Cache, key: str, mode: CacheMode, data: bytes | None) -> None:
        if mode != "off" and data is not None and await cache.guarded.set(key, data, self.ttl):
            _used(key, replayed=False)

    # -- entries: {"format": 1, "created": ..., "latency": ..., "value": ...} or {..., "chunks": [...]}

    def _encode(self, body: dict[str, Any], latency: float) -> bytes:
        entry = {"format": _FORMAT, "created": time.time(), "latency": latency, **body}
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode()

    def _encode_chunks(self, chunks: list[Any], latency: float) -> bytes | None:
        try:
            body = {"chunks": [self.adapter.dump_python(c, mode="json") for c in chunks]}
        except Exception:  # noqa: BLE001 - chunks with no JSON form are streamed, not stored
            return None
        return self._encode(body, latency)

    def _decode_value(self, data: bytes) -> Any:
        return self.adapter.validate_python(self._entry(data, "value")["value"])

    def _decode_chunks(self, data: bytes) -> list[Any]:
        return [self.adapter.validate_python(c) for c in self._entry(data, "chunks")["chunks"]]

    def _entry(self, data: bytes, field: str) -> dict[str, Any]:
        try:
            entry = json.loads(data)
            if not isinstance(entry, dict) or entry.get("format") != _FORMAT or field not in entry:
                raise ValueError(f"not a recorded {field}")
            return entry
        except Exception as exc:
            raise DecodeError(f"entry does not validate: {exc}") from exc

    def _missing(self, missing: Missing) -> CacheMissError:
        scope = active_scope()
        if scope is not None:
            scope.missing.add(missing.key)
        what = f"{self.fn.__qualname__} (task {self.task_name!r})"
        if missing.drift is not None:
            return CacheMissError(
                f"the recorded answer of {what} cannot be replayed: {missing.drift}", key=missing.key, task_name=self.task_name
            )
        return CacheMissError(
            f"no recorded answer for this call of {what} (mode 'replay' never calls it) [key {missing.key}]",
            key=missing.key,
            task_name=self.task_name,
        )


def _used(key: str, *, replayed: bool) -> None:
    """Tell the pytest plugin's scope (if any) which recording a call used, so it is never pruned as unused."""
    scope = active_scope()
    if scope is not None:
        (scope.replayed if replayed else scope.recorded).add(key)


def _data_type(fn: Callable[..., Any]) -> Any:
    """What a call's value (or each chunk, for a generator) is, from the return annotation; Any if none."""
    try:
        annotation = typing.get_type_hints(fn).get("return", Any)
    except Exception:  # noqa: BLE001 - unresolvable annotations: stored and read back as plain JSON data
        return Any
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        type_args = typing.get_args(annotation)
        return type_args[0] if type_args else Any
    return annotation
