"""Why a call misses: its key's manifest next to the nearest recording of the same task, in words."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._codec import DecodeError, read_manifest
from .stores import Store

__all__ = ("Explanation", "differences", "explain_key")

logger = logging.getLogger("pyai_caching")

_MAX_COMPARED = 1000
"""Recordings of one task read to find the nearest (the newest keys first would need timestamps; sorted keys do)."""


@dataclass(frozen=True)
class Explanation:
    """Whether a call has a recording and, if not, how it differs from the nearest one. `str()` says it in words."""

    task_name: str
    key: str
    recorded: bool
    """An entry is stored under `key`: the call is answered from it, unless `problem` says otherwise."""
    nearest: str | None = None
    """Key of the recording of the same task that differs least, if any was found."""
    differences: tuple[str, ...] = ()
    """What differs from `nearest`, one item each (`model_settings.temperature 0.0 -> 0.7`)."""
    compared: int = 0
    """Recordings of the task that were compared."""
    note: str | None = None
    """Why no comparison could be made (the store cannot list entries, none has a manifest)."""
    problem: str | None = None
    """Why the entry under `key` would not answer the call (past its TTL, no longer validates)."""

    def __str__(self) -> str:
        if self.recorded and self.problem:
            return f"task {self.task_name!r}: recorded under {self.key}, but {self.problem}"
        if self.recorded:
            return f"task {self.task_name!r}: recorded under {self.key}; this call is answered from it"
        head = f"task {self.task_name!r}: no recording for this call"
        if self.nearest is None:
            reason = self.note or "the task has no recordings in this store"
            return f"{head} ({reason})"
        lines = [f"{head}; the nearest of {self.compared} recording(s), {self.nearest}, differs in:"]
        lines += [f"  - {d}" for d in self.differences] or ["  - nothing in its manifest (an older key version?)"]
        return "\n".join(lines)


async def explain_key(
    store: Store,
    key: str,
    task_name: str,
    manifest: Mapping[str, Any] | None,
    *,
    decode: Callable[[bytes], object] | None = None,
    replay: bool = False,
) -> Explanation:
    """Compare `manifest` (the call's) with the manifests of the task's recordings in `store`. An entry under `key`
    itself is checked as the call would use it: past its TTL (unless `replay`), and read back with `decode`.

    Store failures become a note: explaining never raises for them.
    """
    prefix = key.rsplit(":", 1)[0] + ":"
    try:
        data = await store.get_including_expired(key)
        if data is not None:
            return Explanation(task_name, key, recorded=True, problem=await _problem(store, key, data, decode, replay))
        keys = (await store.keys(prefix))[:_MAX_COMPARED]
    except NotImplementedError:
        return Explanation(task_name, key, recorded=False, note=f"a {type(store).__name__} cannot list its recordings")
    except Exception as exc:  # noqa: BLE001 - a store problem: say so rather than fail the explanation
        return Explanation(task_name, key, recorded=False, note=f"the store could not be read: {exc}")
    if manifest is None:
        return Explanation(task_name, key, recorded=False, note="this call's key could not be summarized")
    best: tuple[int, str, list[str]] | None = None
    compared = 0
    for other in keys:
        try:
            data = await store.get_including_expired(other)
        except Exception:  # noqa: BLE001 - skip what cannot be read
            continue
        recorded = read_manifest(data) if data is not None else None
        if not isinstance(recorded, Mapping):
            continue
        compared += 1
        found = differences(manifest, recorded)
        if best is None or len(found) < best[0]:
            best = (len(found), other, found)
    if best is None:
        note = f"none of its {len(keys)} recording(s) has a manifest" if keys else None
        return Explanation(task_name, key, recorded=False, note=note)
    return Explanation(task_name, key, recorded=False, nearest=best[1], differences=tuple(best[2]), compared=compared)


async def _problem(
    store: Store, key: str, data: bytes, decode: Callable[[bytes], object] | None, replay: bool
) -> str | None:
    if not replay and await store.is_expired(key):
        return "it is past its TTL: replay answers from it, other modes call the model again"
    if decode is not None:
        try:
            decode(data)
        except DecodeError as exc:
            return f"it cannot be used: {exc} (the model is called again; replay raises CacheDriftError)"
    return None


def differences(current: Mapping[str, Any], recorded: Mapping[str, Any]) -> list[str]:
    """What differs between two manifests, from the recording to the call: one phrase per item."""
    now, then = dict(current.get("items") or {}), dict(recorded.get("items") or {})
    found: list[str] = []
    tools_now, tools_then = _tools(now), _tools(then)
    for tool in sorted(tools_then - tools_now):
        found.append(f"tool `{tool}` removed")
    for tool in sorted(tools_now - tools_then):
        found.append(f"tool `{tool}` added")
    changed_tools = tools_now ^ tools_then
    model_changed = now.get("model") != then.get("model")  # then its configuration differs too, obviously
    for name in [*then, *(n for n in now if n not in then)]:
        if _tool_of(name) in changed_tools or (model_changed and name == "model configuration"):
            continue
        old, new = then.get(name), now.get(name)
        if old == new:
            continue
        found.append(_phrase(name, old, new))
    found += _message_differences(list(current.get("messages") or ()), list(recorded.get("messages") or ()))
    return found


def _phrase(name: str, old: str | None, new: str | None) -> str:
    if old is None:
        return f"{name} added" + ("" if _is_digest(new) else f" ({new})")
    if new is None:
        return f"{name} removed" + ("" if _is_digest(old) else f" (was {old})")
    if _is_digest(old) or _is_digest(new):
        return f"{name} changed"
    return f"{name} {old} -> {new}"


def _message_differences(now: list[str], then: list[str]) -> list[str]:
    found = []
    if len(now) != len(then):
        found.append(f"message history: {len(then)} message(s) recorded, {len(now)} now")
    for index, (a, b) in enumerate(zip(now, then), start=1):
        if a != b:
            kind = a.rsplit(" ", 1)[0]
            found.append(f"message {index} ({kind}) differs")
    return found


def _tools(items: Mapping[str, Any]) -> set[str]:
    return {tool for name in items if (tool := _tool_of(name)) is not None}


def _tool_of(name: str) -> str | None:
    if name.startswith("tool `") and "`:" in name:
        return name[len("tool `") : name.index("`:")]
    return None


def _is_digest(value: str | None) -> bool:
    return isinstance(value, str) and value.startswith("#")
