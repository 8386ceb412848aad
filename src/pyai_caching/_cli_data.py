"""What the `pyai-caching` command line (`_cli`) reads and changes in a store: durations, entries, copies and the
entries `prune` removes. No printing here (`_cli_output` does that); only the command line imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._clearing import matching_keys
from ._copying import copy_keys, current_prefix
from ._keys import KEY_VERSION
from .stores import Store

__all__ = (
    "PRUNE_REASONS",
    "Recording",
    "copy_with_progress",
    "entry_prefix",
    "environment",
    "parse_duration",
    "parse_envelope",
    "read_recording",
    "unreadable_entries",
)

_CONCURRENCY = 16
"""Store operations in flight at once when reading or copying many entries."""

PRUNE_REASONS = {
    "old_key_version": "entries of an older key version (no call reads them)",
    "unreadable": "values that are not an entry (not JSON, or no envelope format)",
}


# --- parsing ---------------------------------------------------------------------------------------------------

_DURATION = re.compile(r"(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `30s`, `15m`, `12h`, `7d` or `1h30m` (units largest first).

    Raises:
        ValueError: `text` is not such a duration.
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or not any(match.groupdict().values()):
        raise ValueError(
            f"{text!r} is not a duration: use whole numbers with units, largest first (30s, 15m, 12h, 7d, 1h30m)"
        )
    return float(sum(int(value) * _UNIT_SECONDS[unit] for unit, value in match.groupdict().items() if value))


def parse_envelope(data: bytes) -> dict[str, Any] | None:
    """The entry's JSON envelope, or None if `data` is not one (not JSON, or no `format` field)."""
    try:
        envelope = json.loads(data)
    except ValueError:
        return None
    return envelope if isinstance(envelope, dict) and "format" in envelope else None


def entry_prefix(namespace: str, task: str | None) -> str:
    """The keys calls read today: the current key version, of one task or all."""
    return current_prefix(namespace, task)


# --- reading and copying entries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    """A stored entry as `explain` shows it."""

    key: str
    expired: bool
    """Past its TTL: `get` no longer returns it, `get_including_expired` (replay) still does."""
    envelope: Mapping[str, Any] | None
    """The parsed envelope, or None if the bytes are not an entry of this library."""

    @property
    def manifest(self) -> Mapping[str, Any] | None:
        manifest = self.field("manifest")
        return manifest if isinstance(manifest, Mapping) else None

    @property
    def created(self) -> float | None:
        value = self.field("created")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def age(self) -> float | None:
        """Seconds since the entry was written."""
        return None if self.created is None else max(0.0, time.time() - self.created)

    def field(self, name: str) -> Any:
        """A field of the envelope (`model`, `cost`, `latency`, ...), or None."""
        return self.envelope.get(name) if self.envelope is not None else None

    def document(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "key": self.key,
            "exists": True,
            "expired": self.expired,
            "readable": self.envelope is not None,
            "created": self.created,
            "age_seconds": self.age,
            "model": self.field("model"),
            "cost": self.field("cost"),
            "latency": self.field("latency"),
            "manifest": self.manifest,
        }


async def read_recording(store: Store, key: str) -> Recording:
    """The entry under `key`, past its TTL or not.

    Raises:
        ValueError: there is no entry under `key`.
    """
    data = await store.get_including_expired(key)
    if data is None:
        raise ValueError(f"no entry under {key!r} in this store")
    return Recording(key, expired=await store.is_expired(key), envelope=parse_envelope(data))


async def unreadable_entries(store: Store, namespace: str) -> dict[str, list[str]]:
    """The entries no call can read, by `PRUNE_REASONS` key: another key version, or a value that is not an
    envelope. Entries past their TTL are readable (replay reads them)."""
    old: list[str] = []
    current: list[str] = []
    for key in await matching_keys(store, namespace):
        (current if key.split(":")[1] == KEY_VERSION else old).append(key)
    limit = asyncio.Semaphore(_CONCURRENCY)

    async def unreadable(key: str) -> bool:
        async with limit:
            data = await store.get_including_expired(key)
        return data is not None and parse_envelope(data) is None

    flags = await asyncio.gather(*(unreadable(key) for key in current))
    return {"old_key_version": old, "unreadable": [key for key, bad in zip(current, flags) if bad]}


async def copy_with_progress(
    source: Store,
    target: Store,
    prefix: str,
    ttl: float | None,
    progress: Callable[[int], contextlib.AbstractContextManager[Callable[[], None]]],
) -> int:
    """`copy_keys`, advancing `progress(total)`; how many entries were copied."""
    keys = await source.keys(prefix)
    with progress(len(keys)) as advance:
        return await copy_keys(source, target, keys, ttl, advance)


def _set_environment(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@contextlib.contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (a string) or unset (None) environment variables for the duration of the block."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            _set_environment(name, value)
        yield
    finally:
        for name, value in saved.items():
            _set_environment(name, value)
