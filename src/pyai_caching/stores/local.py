"""The embedded store: a directory of JSON entries, no server needed.

Each entry is one file, `<root>/<key parts>.json`: a first line saying when it expires
(`expires=never` or `expires=<unix seconds>`), then the entry's JSON as is (readable with any
editor, and reviewable in a pull request when the directory is committed). The expiry lives in
the file, not in its modification time, so a directory checked out by git keeps its entries.
Writes go to a temporary file and are renamed into place, so readers never see half an entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import quote, unquote

from ..exceptions import CacheError, ConfigurationError
from ._base import Store
from ._files import (
    COUNTERS_DIR,
    component,
    entry_keys,
    entry_path,
    off_loop,
    write_atomic,
)

try:  # advisory locks keep counter updates from several processes exact (POSIX only)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ("LocalStore",)

_NEVER = b"never"
_HEADER = b"expires="


@dataclass
class LocalStore(Store):
    """Entries as files under `root` (created on first write). Safe across processes on one machine."""

    root: Path
    claim_poll: float = 0.05
    """Seconds between looks at a claim held by another process (file locks wake no one)."""
    _lock_path: Path = field(init=False, repr=False)
    _claims: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    """Open lock files of the claims this store holds, by token."""

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise ConfigurationError(f"cache directory {str(self.root)!r} exists and is not a directory")
        self._lock_path = self.root / COUNTERS_DIR / ".lock"

    def path_for(self, key: str) -> Path:
        """The file holding `key`: each `:`-separated part of the key is one path component."""
        return entry_path(self.root, key)

    async def get(self, key: str) -> bytes | None:
        return await off_loop(self._get, key)

    async def get_including_expired(self, key: str) -> bytes | None:
        return await off_loop(self._get_any, key)

    async def is_expired(self, key: str) -> bool:
        def read() -> bool:
            try:
                return _parse_entry(self.path_for(key).read_bytes())[0] == "expired"
            except FileNotFoundError:
                return False

        return await off_loop(read)

    async def keys(self, prefix: str) -> list[str]:
        """Entry keys under `prefix` (an entry whose key had a part too long for a file name names its key in its
        first line)."""
        return await off_loop(lambda: sorted(k for k in self._all_keys() if k.startswith(prefix)))

    def _all_keys(self) -> list[str]:
        """`entry_keys`, plus the keys of entries whose path was shortened (their first line names them)."""
        keys = list(entry_keys(self.root))
        if self.root.is_dir():
            for path in self.root.rglob("*.json"):
                relative = path.relative_to(self.root).parts
                if relative[0] == COUNTERS_DIR or not any("%~" in part for part in relative):
                    continue
                try:
                    with open(path, "rb") as f:
                        header = f.readline()
                except OSError:
                    continue
                _, marker, quoted = header.rstrip(b"\n").partition(b" key=")
                if marker:
                    key = unquote(quoted.decode())
                    if self.path_for(key) == path:
                        keys.append(key)
        return keys

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        await off_loop(self._set, key, value, ttl)

    async def delete(self, key: str) -> bool:
        return await off_loop(self._delete, key)

    async def add_counters(self, name: str, counters: Mapping[str, float]) -> None:
        await off_loop(self._add_counters, name, counters)

    async def get_counters(self, prefix: str) -> dict[str, dict[str, float]]:
        return await off_loop(self._get_counters, prefix)

    # -- claims: an exclusive `flock` on `<root>/_counters/.claims/<sha256 of key>`, held while the entry is made;
    # the OS releases it if the process dies, so a crashed holder's miss is taken over at once

    async def claim(self, key: str, ttl: float) -> str | None:
        if fcntl is None:  # pragma: no cover - Windows
            raise NotImplementedError("LocalStore claims need POSIX file locks")
        # inline, not in a worker thread: a flock attempt never blocks (LOCK_NB), and a cancelled call must not leave
        # a lock taken by a thread under a token nobody holds
        try:
            return self._claim(key)
        except OSError as exc:
            raise CacheError(f"claim of {key} failed: {exc}") from exc

    async def release_claim(self, key: str, token: str) -> None:
        fd = self._claims.pop(token, None)
        if fd is not None:
            os.close(fd)  # closing the file releases its lock

    async def wait_for_claim(self, key: str, timeout: float) -> None:
        await asyncio.sleep(min(self.claim_poll, timeout))

    def _claim(self, key: str) -> str | None:
        path = self.root / COUNTERS_DIR / ".claims" / hashlib.sha256(key.encode()).hexdigest()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        token = secrets.token_hex(16)
        self._claims[token] = fd
        return token

    def _get(self, key: str) -> bytes | None:
        path = self.path_for(key)
        try:
            state, value = _parse_entry(path.read_bytes())
        except FileNotFoundError:
            return None
        if state == "expired":  # removed, to keep the directory small
            path.unlink(missing_ok=True)
        return value if state == "live" else None

    def _get_any(self, key: str) -> bytes | None:
        try:
            state, value = _parse_entry(self.path_for(key).read_bytes())
        except FileNotFoundError:
            return None
        return None if state == "invalid" else value

    def _set(self, key: str, value: bytes, ttl: float | None) -> None:
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        expires = _NEVER if ttl is None else repr(time.time() + ttl).encode()
        header = _HEADER + expires
        if "%~" in path.name or any("%~" in part for part in path.parent.relative_to(self.root).parts):
            header += b" key=" + quote(key, safe="").encode()  # a shortened path cannot be read back as the key
        write_atomic(path, header + b"\n" + value)

    def _delete(self, key: str) -> bool:
        path = self.path_for(key)
        try:
            state, _ = _parse_entry(path.read_bytes())
            path.unlink()
        except FileNotFoundError:
            return False
        return state == "live"  # an expired entry no longer existed

    def _add_counters(self, name: str, counters: Mapping[str, float]) -> None:
        path = self.root / COUNTERS_DIR / (component(name) + ".json")
        with self._locked():
            group = _read_counters(path)[1]
            for counter, value in counters.items():
                group[counter] = group.get(counter, 0.0) + value
            # a shortened file name cannot be decoded back to the group's name, so the file keeps it
            data = {"name": name, "counters": group} if unquote(path.stem) != name else group
            write_atomic(path, json.dumps(data, sort_keys=True).encode())

    def _get_counters(self, prefix: str) -> dict[str, dict[str, float]]:
        directory = self.root / COUNTERS_DIR
        if not directory.is_dir():
            return {}
        groups = {}
        for path in directory.glob("*.json"):
            name, counters = _read_counters(path)
            name = unquote(path.stem) if name is None else name
            if name.startswith(prefix):
                groups[name] = counters
        return dict(sorted(groups.items()))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _parse_entry(data: bytes) -> tuple[Literal["live", "expired", "invalid"], bytes]:
    """What the entry file `data` is (live, expired, or not an entry of this store), and its value."""
    header, newline, value = data.partition(b"\n")
    if not newline or not header.startswith(_HEADER):
        return "invalid", b""
    expires = header[len(_HEADER) :].split(b" ", 1)[0]
    if expires == _NEVER:
        return "live", value
    try:
        return ("live" if float(expires) > time.time() else "expired"), value
    except ValueError:
        return "invalid", b""


def _read_counters(path: Path) -> tuple[str | None, dict[str, float]]:
    """The group's name if the file records it, and its counters."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None, {}
    except ValueError:  # a corrupt counter file restarts from zero rather than failing every run
        return None, {}
    if not isinstance(data, dict):
        return None, {}
    name = None
    if isinstance(data.get("name"), str) and isinstance(data.get("counters"), dict):  # counters are never strings
        name, data = data["name"], data["counters"]
    return name, {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float))}
