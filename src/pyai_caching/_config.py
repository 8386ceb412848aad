"""Configuration from arguments and the environment, validated before any model call."""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, get_args

from .exceptions import ConfigurationError

__all__ = (
    "ENV_REDIS_URL",
    "ENV_DIR",
    "ENV_TTL",
    "ENV_NAMESPACE",
    "ENV_MODE",
    "CacheMode",
    "resolve_mode",
    "DEFAULT_TTL",
    "DEFAULT_NAMESPACE",
    "StoreSpec",
    "resolve_ttl",
    "resolve_namespace",
    "resolve_store_spec",
    "check_task_name",
    "env",
)

ENV_REDIS_URL = "LLM_CACHE_REDIS_URL"
ENV_DIR = "LLM_CACHE_DIR"
ENV_TTL = "LLM_CACHE_TTL"
ENV_NAMESPACE = "LLM_CACHE_NAMESPACE"
ENV_MODE = "LLM_CACHE_MODE"

CacheMode = Literal["read_write", "replay", "refresh", "off"]
"""How a call uses the cache:

- `read_write` (default): answer from the cache, else call the model and store the answer;
- `replay`: answer from the cache only (entries past their TTL too, where the store still holds them); a miss
  raises `CacheMissError` and never calls the model;
- `refresh`: always call the model and store the answer (an unchanged answer leaves the entry as it is);
- `off`: call the model; no reads, no writes.
"""
_MODES: tuple[str, ...] = get_args(CacheMode)

DEFAULT_TTL = timedelta(days=15).total_seconds()
DEFAULT_NAMESPACE = "pyai_caching"

_HOW_TO_CONFIGURE = (
    f"set {ENV_REDIS_URL} (for example redis://localhost:6379/0, rediss://user:password@host:6380/0 "
    f"or unix:///run/redis/redis.sock?db=0), pass redis_url=..., or use the embedded store with "
    f"{ENV_DIR}=.pyai_cache or store=LocalStore('.pyai_cache')"
)


def env(name: str) -> str | None:
    """`os.environ.get(name)`, without the `KeyError` that reading an unset name raises inside `os.environ` (most
    of the microsecond each of the settings read on every call would cost)."""
    environ, data, encode, decode = _ENVIRON
    if data is None or os.environ is not environ:  # another implementation, or `os.environ` replaced (a test's mock)
        return os.environ.get(name)
    value = data.get(encode(name))
    return None if value is None else decode(value)


def _environ_access() -> tuple[Any, Any, Any, Any]:
    environ = os.environ
    try:  # CPython's `os._Environ`: the OS mapping it reads and writes through, and its key and value codecs
        return environ, environ._data, environ.encodekey, environ.decodevalue  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover - another implementation
        return environ, None, None, None


_ENVIRON = _environ_access()


@dataclass(frozen=True)
class StoreSpec:
    """Which configured store to open: a Redis URL or a local directory."""

    kind: str  # "redis" | "local"
    location: str


def resolve_store_spec(redis_url: str | None) -> StoreSpec:
    """`redis_url`, else `LLM_CACHE_REDIS_URL`, else `LLM_CACHE_DIR`.

    Raises:
        ConfigurationError: nothing is configured, or the URL is not a Redis URL.
    """
    from .stores.redis import REDIS_SCHEMES  # noqa: PLC0415 - keep config free of backend imports at load

    url = redis_url if redis_url is not None else env(ENV_REDIS_URL) or None
    if url is not None:
        if not isinstance(url, str) or not url.startswith(REDIS_SCHEMES):
            source = "redis_url" if redis_url is not None else ENV_REDIS_URL
            raise ConfigurationError(
                f"{source}={url!r} is not a Redis URL; expected redis://, rediss://, unix://, redis+sentinel:// "
                "or redis+cluster://. "
                f"To configure the cache, {_HOW_TO_CONFIGURE}"
            )
        return StoreSpec("redis", url)
    directory = env(ENV_DIR)
    if directory:
        return StoreSpec("local", directory)
    raise ConfigurationError(f"no cache store configured: {_HOW_TO_CONFIGURE}")


def resolve_ttl(ttl: float | timedelta | None) -> float | None:
    """Seconds an entry lives: `ttl`, else `LLM_CACHE_TTL`, else 15 days. `0` in the env means no expiry.

    Raises:
        ValueError: `ttl` is negative, zero or not finite.
        ConfigurationError: `LLM_CACHE_TTL` is not a non-negative number of seconds.
    """
    if ttl is None:
        raw = env(ENV_TTL)
        if not raw:
            return DEFAULT_TTL
        try:
            seconds = float(raw)
        except ValueError:
            raise ConfigurationError(f"{ENV_TTL}={raw!r} is not a number of seconds") from None
        if not math.isfinite(seconds) or seconds < 0:
            raise ConfigurationError(f"{ENV_TTL}={raw!r} must be a finite number of seconds >= 0")
        return seconds or None
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise TypeError(f"ttl must be seconds or a timedelta, not {type(ttl).__name__}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    return seconds


def resolve_mode(mode: str | None) -> CacheMode:
    """`mode`, else `LLM_CACHE_MODE`, else `read_write`.

    Raises:
        ConfigurationError: the mode is not one of `read_write`, `replay`, `refresh`, `off`.
    """
    if mode is None:
        raw = env(ENV_MODE)
        if not raw:
            return "read_write"
        if raw.strip().lower() not in _MODES:
            raise ConfigurationError(f"{ENV_MODE}={raw!r} is not a cache mode; expected one of {', '.join(_MODES)}")
        return raw.strip().lower()  # type: ignore[return-value]
    if mode not in _MODES:
        raise ConfigurationError(f"mode={mode!r} is not a cache mode; expected one of {', '.join(_MODES)}")
    return mode  # type: ignore[return-value]


def resolve_namespace(namespace: str | None) -> str:
    """`namespace`, else `LLM_CACHE_NAMESPACE`, else `pyai_caching`.

    Raises:
        ValueError: the namespace is empty or contains whitespace or `:`.
    """
    value = namespace if namespace is not None else env(ENV_NAMESPACE) or DEFAULT_NAMESPACE
    if not isinstance(value, str) or not _valid_namespace(value):
        raise ValueError(f"namespace must be a non-empty string without ':' or whitespace, got {value!r}")
    return value


@functools.lru_cache(maxsize=64)
def _valid_namespace(value: str) -> bool:
    return bool(value) and ":" not in value and not any(c.isspace() for c in value)


def check_task_name(task_name: Any) -> None:
    """Check that `task_name` can be one part of a key.

    Raises:
        ValueError: `task_name` is empty, or holds `:`, whitespace or control characters.
    """
    if not isinstance(task_name, str) or not task_name.strip():
        raise ValueError("task_name must be a non-empty string")
    if not _plain_task_name(task_name):
        raise ValueError(f"task_name {task_name!r} must not contain ':', whitespace or control characters")


@functools.lru_cache(maxsize=256)
def _plain_task_name(task_name: str) -> bool:
    return ":" not in task_name and not any(c.isspace() or not c.isprintable() for c in task_name)
