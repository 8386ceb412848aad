"""File layout shared by the directory stores: one file per key, key parts as path components."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote

from ..exceptions import CacheError

__all__ = ("COUNTERS_DIR", "component", "entry_keys", "entry_path", "off_loop", "write_atomic")

COUNTERS_DIR = "_counters"
_REFUSED_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT})
_MAX_COMPONENT = 200  # characters; file names are limited to 255 bytes and ".json" is appended

async def off_loop(fn, *args):  # type: ignore[no-untyped-def]
    """Run blocking file I/O in a worker thread; file errors become `CacheError`."""
    try:
        try:
            return await asyncio.to_thread(fn, *args)
        except RuntimeError:  # interpreter shutdown: no more worker threads, blocking is fine now
            return fn(*args)
    except OSError as exc:  # a full or read-only disk, or no permission, refuses writes only
        raise CacheError(f"store file I/O failed: {exc}", refused=exc.errno in _REFUSED_ERRNOS) from exc


def entry_path(root: Path, key: str) -> Path:
    """The file of `key` under `root`: each `:`-separated part of the key is one path component."""
    *dirs, name = (component(part) for part in key.split(":"))
    # a directory never ends in ".json", so key "x" (file x.json) and key "x.json:y" (directory x.json) can coexist
    dirs = [d[:-5] + "%2Ejson" if d.endswith(".json") else d for d in dirs]
    if dirs and dirs[0] == COUNTERS_DIR:  # entries stay out of the counters' directory
        dirs[0] = "%5F" + COUNTERS_DIR[1:]  # quote() never escapes "_", so this cannot collide
    return root.joinpath(*dirs, name + ".json")


def entry_keys(root: Path) -> Iterator[str]:
    """The keys of the entry files under `root` (`entry_path` reversed; shortened parts cannot be)."""
    if not root.is_dir():
        return
    for path in root.rglob("*.json"):
        parts = path.relative_to(root).parts
        if parts[0] == COUNTERS_DIR or any("%~" in p for p in parts):
            continue
        yield ":".join("" if p == "%" else unquote(p) for p in (*parts[:-1], parts[-1][:-5]))


_WINDOWS_DEVICES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10))})


def component(part: str) -> str:
    """One key part as a safe file name on every OS: percent-encoded, never empty, `.` or `..`, never a Windows
    device name (`con`, `aux.v1`) nor ending in a dot, never too long."""
    encoded = quote(part, safe="")
    if not encoded:
        return "%"  # quote() never yields a bare "%", so this cannot collide
    if encoded.strip(".") == "":
        return encoded.replace(".", "%2E")
    if encoded.split(".", 1)[0].upper() in _WINDOWS_DEVICES:
        encoded = f"%{ord(encoded[0]):02X}{encoded[1:]}"
    if encoded.endswith("."):
        encoded = encoded[:-1] + "%2E"
    if len(encoded) > _MAX_COMPONENT:  # readable head + digest of the whole part; quote() never yields "%~"
        head = encoded[:120]
        cut = head.find("%", len(head) - 2)  # do not split a %XX escape
        return (head if cut == -1 else head[:cut]) + "%~" + hashlib.sha256(part.encode()).hexdigest()
    return encoded


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write `data` to a temporary file renamed into place (readers never see half a file); `mode`: its
    permissions (default: the temporary file's 0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
