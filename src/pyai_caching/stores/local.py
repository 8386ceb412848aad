"""The embedded store: a directory of JSON entries, no server needed.

Each entry is one file, `<root>/<key parts>.json`, holding the entry's JSON as is (readable with
any editor). A file's modification time is its expiry time, so expiry costs no extra read.
Writes go to a temporary file and are renamed into place, so readers never see half an entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

from ..exceptions import CacheError, ConfigurationError
from ._base import Store

try:  # advisory locks keep counter updates from several processes exact (POSIX only)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ("LocalStore",)

_NEVER = float(2**32)  # mtime meaning "no expiry" (year 2106)
_COUNTERS_DIR = "_counters"


@dataclass
class LocalStore(Store):
    """Entries as files under `root` (created on first write). Safe across processes on one machine."""

    root: Path
    _lock_path: Path = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise ConfigurationError(f"cache directory {str(self.root)!r} exists and is not a directory")
        self._lock_path = self.root / _COUNTERS_DIR / ".lock"

    def path_for(self, key: str) -> Path:
        """The file holding `key`: each `:`-separated part of the key is one path component."""
        *dirs, name = (_component(part) for part in key.split(":"))
        return self.root.joinpath(*dirs, name + ".json")

    async def get(self, key: str) -> bytes | None:
        return await _off_loop(self._get, key)

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        await _off_loop(self._set, key, value, ttl)

    async def delete(self, key: str) -> bool:
        return await _off_loop(self._delete, key)

    async def add_counters(self, name: str, counters: Mapping[str, float]) -> None:
        await _off_loop(self._add_counters, name, counters)

    async def get_counters(self, prefix: str) -> dict[str, dict[str, float]]:
        return await _off_loop(self._get_counters, prefix)

    def _get(self, key: str) -> bytes | None:
        path = self.path_for(key)
        try:
            if path.stat().st_mtime <= time.time():
                path.unlink(missing_ok=True)
                return None
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def _set(self, key: str, value: bytes, ttl: float | None) -> None:
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        expires = _NEVER if ttl is None else time.time() + ttl
        _write_atomic(path, value, expires)

    def _delete(self, key: str) -> bool:
        try:
            self.path_for(key).unlink()
            return True
        except FileNotFoundError:
            return False

    def _add_counters(self, name: str, counters: Mapping[str, float]) -> None:
        path = self.root / _COUNTERS_DIR / (_component(name) + ".json")
        with self._locked():
            group = _read_counters(path)
            for counter, value in counters.items():
                group[counter] = group.get(counter, 0.0) + value
            _write_atomic(path, json.dumps(group, sort_keys=True).encode(), _NEVER)

    def _get_counters(self, prefix: str) -> dict[str, dict[str, float]]:
        directory = self.root / _COUNTERS_DIR
        if not directory.is_dir():
            return {}
        groups = {unquote(p.stem): p for p in directory.glob("*.json")}
        return {name: _read_counters(p) for name, p in sorted(groups.items()) if name.startswith(prefix)}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield


async def _off_loop(fn, *args):  # type: ignore[no-untyped-def]
    """Run blocking file I/O in a worker thread; file errors become `CacheError`."""
    try:
        try:
            return await asyncio.to_thread(fn, *args)
        except RuntimeError:  # interpreter shutdown: no more worker threads, blocking is fine now
            return fn(*args)
    except OSError as exc:
        raise CacheError(f"local store I/O failed: {exc}") from exc


def _component(part: str) -> str:
    """One key part as a safe file name: percent-encoded, never empty, `.` or `..`."""
    encoded = quote(part, safe="")
    if not encoded:
        return "%"  # quote() never yields a bare "%", so this cannot collide
    return encoded.replace(".", "%2E") if encoded.strip(".") == "" else encoded


def _write_atomic(path: Path, data: bytes, mtime: float) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.utime(tmp, (time.time(), mtime))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_counters(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except ValueError:  # a corrupt counter file restarts from zero rather than failing every run
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}
