"""An in-process store: a dict with expiry. For tests and single-process use."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ._base import Store
from ._counters import CounterGroups

__all__ = ("MemoryStore",)


@dataclass
class MemoryStore(Store):
    """Entries live in this process only and vanish with it."""

    clock: Callable[[], float] = time.monotonic
    _entries: dict[str, tuple[bytes, float | None]] = field(default_factory=dict, repr=False)
    _counters: CounterGroups = field(default_factory=CounterGroups, init=False, repr=False)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires is not None and expires <= self.clock():
            del self._entries[key]
            return None
        return value

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._entries[key] = (value, None if ttl is None else self.clock() + ttl)

    async def get_including_expired(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    async def is_expired(self, key: str) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry[1] is not None and entry[1] <= self.clock()

    async def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self._entries if k.startswith(prefix))

    async def delete(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        return entry is not None and (entry[1] is None or entry[1] > self.clock())  # expired: did not exist

    async def add_counters(self, name: str, counters: Mapping[str, float]) -> None:
        self._counters.add(name, counters)

    async def get_counters(self, prefix: str) -> dict[str, dict[str, float]]:
        return self._counters.read(prefix)
