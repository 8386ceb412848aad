"""Recorded answers as files to commit: a directory of pretty-printed, deterministic JSON entries.

Each entry is one file, `<root>/<namespace>/<key version>/<task>/<digest>.json` (mode 0644)::

    {
      "key": "pyai_caching:v2:support:3f2a...",
      "entry": {...the entry...}
    }

2-space indent, keys in a stable order (the order the entry was written in), a trailing newline:
a changed answer shows as a readable diff, and
an answer recorded again unchanged (equal but for timestamps and ids) leaves its file alone.
Recordings never expire (TTLs are ignored; record again with mode `refresh`), and counters live
in memory, so reading never changes anything under `root`: `git status` stays clean after a
replay.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._codec import same_answer
from ..exceptions import ConfigurationError
from ._base import Store
from ._counters import CounterGroups
from ._files import entry_path, off_loop, write_atomic

__all__ = ("FixtureStore",)

_FILE_MODE = 0o644


@dataclass
class FixtureStore(Store):
    """Entries as reviewable files under `root` (created on first write); see the module docstring."""

    root: Path
    _counters: CounterGroups = field(default_factory=CounterGroups, init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise ConfigurationError(f"fixture directory {str(self.root)!r} exists and is not a directory")

    def path_for(self, key: str) -> Path:
        return entry_path(self.root, key)

    async def get(self, key: str) -> bytes | None:
        return await off_loop(self._read, key)

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        await off_loop(self._write, key, value)

    async def delete(self, key: str) -> bool:
        return await off_loop(self._delete, key)

    async def is_expired(self, key: str) -> bool:
        return False  # recordings never expire

    async def keys(self, prefix: str) -> list[str]:
        """The keys recorded in the files under `root` (each file names its key; a file that is not where its key
        puts it, such as a recordings directory nested inside this one, is not listed)."""
        return await off_loop(lambda: sorted(k for k in self._recorded_keys() if k.startswith(prefix)))

    def _recorded_keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.rglob("*.json"):
            try:
                key = json.loads(path.read_bytes()).get("key")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(key, str) and self.path_for(key) == path:
                found.append(key)
        return found

    async def add_counters(self, name: str, counters: Mapping[str, float]) -> None:
        self._counters.add(name, counters)

    async def get_counters(self, prefix: str) -> dict[str, dict[str, float]]:
        return self._counters.read(prefix)

    def _read(self, key: str) -> bytes | None:
        try:
            raw = self.path_for(key).read_bytes()
        except FileNotFoundError:
            return None
        try:
            document = json.loads(raw)
        except ValueError:  # hand-edited or a merge conflict: handed on as is, it fails to decode (and says why)
            return raw
        if not isinstance(document, dict):
            return raw
        if document.get("key", key) != key:  # another key mapped to this file (case-insensitive file system)
            return None
        if "bytes" in document:
            return base64.b64decode(document["bytes"])
        return json.dumps(document.get("entry"), ensure_ascii=False, separators=(",", ":")).encode()

    def _write(self, key: str, value: bytes) -> bool:
        """Write the recording unless the file already records the same answer; True if the file changed."""
        document: dict[str, Any] = {"key": key}  # first: what the file is
        try:
            entry = json.loads(value)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            document["entry"] = entry
        else:  # not an entry of this library: kept byte for byte
            document["bytes"] = base64.b64encode(value).decode()
        path = self.path_for(key)
        with contextlib.suppress(FileNotFoundError, ValueError):
            old = json.loads(path.read_bytes())
            if isinstance(old, dict) and old.get("key") == key:
                if "entry" in document and "entry" in old and same_answer(old["entry"], document["entry"]):
                    return False
                if document.get("bytes") is not None and old.get("bytes") == document["bytes"]:
                    return False
        # in the order the entry was written (stable: PydanticAI's field order), not sorted: sorting would reorder
        # the keys of a dict output, which a replay must hand back as the model gave them
        text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text.encode(), _FILE_MODE)
        return True

    def _delete(self, key: str) -> bool:
        try:
            self.path_for(key).unlink()
        except FileNotFoundError:
            return False
        return True

