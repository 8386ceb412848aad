"""A scope pointing every call at one store, with a default mode: what the pytest plugin's `llm_cache` sets.
It also collects which keys its calls were answered from, recorded, or missed in `replay`.

Process-wide rather than per context: `cached_agent_run_sync` runs its calls on a background
thread's loop, which no context variable of the test reaches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from ._config import CacheMode
from .stores import Store

__all__ = ("Scope", "active_scope", "scoped")


@dataclass(frozen=True, slots=True)
class Scope:
    store: Store
    """Every call in the scope uses it, whatever store or URL it names."""
    mode: CacheMode | None
    """The mode of calls that do not pass `mode=` (it wins over `LLM_CACHE_MODE`)."""
    hint: str | None = None
    """Added to the message of a `replay` miss (where the recordings are, how to record)."""
    replayed: set[str] = field(default_factory=set)
    """Keys of hits."""
    recorded: set[str] = field(default_factory=set)
    """Keys of misses whose answer was stored."""
    missing: set[str] = field(default_factory=set)
    """Keys that `replay` found no usable recording for."""


_scopes: list[Scope] = []


def active_scope() -> Scope | None:
    return _scopes[-1] if _scopes else None


@contextlib.contextmanager
def scoped(store: Store, mode: CacheMode | None = None, *, hint: str | None = None) -> Iterator[Scope]:
    scope = Scope(store, mode, hint)
    _scopes.append(scope)
    try:
        yield scope
    finally:
        _scopes.remove(scope)
