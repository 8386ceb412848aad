"""A run's key as a front door derives it: in full, or first guessed from the agent's key material as it was on its
last call, then derived in full.

A guess lets a store read start before the key is worked out (`Store.start_get`); the read is used only if the
key, derived in full meanwhile, is the guessed one. An agent changed since, or another agent at a reused address,
makes a wrong guess: one read wasted, never a wrong answer.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._agent import RUN_KWARGS_NOT_IN_KEY, format_key, request_material
from ._canonical import UnkeyableError, canonical_json

__all__ = ("RunKey", "agent_json", "digest_of_parts", "rest_json")


@dataclass(slots=True)
class RunKey:
    """The key of one run: `derive` it, after a `guess` if its store can use one."""

    agent: Any
    prompt: Any
    history: Sequence[Any]
    run_kwargs: Mapping[str, Any]
    key_extra: Any
    material: dict[str, Any] | None = None
    """What the key is made of (`request_material`), once made."""
    agent_json: bytes | None = None
    """`agent_json(material)`, once `derive` has made it (the manifest's agent items are memoised by it)."""
    _rest: bytes = b""
    _guessed: tuple[bytes, str] | None = None
    """(the agent's material the guess was made from, the key guessed)"""
    _remember: bool = False
    """`derive` keeps the agent's material for the next call's guess (a guess was asked for)."""

    def guess(self, namespace: str, task_name: str) -> str | None:
        """The key this run would have with the agent as it was on its last call (the agent's part of the material
        is not encoded), or None. Only a guess; `derive` says what the key is, and remembers the agent's part for
        the next call's guess."""
        self._remember = True
        remembered = _remembered_agent_json(self.agent, self.run_kwargs)
        if remembered is None:
            return None
        try:
            material = self._material()
            self._rest = rest_json(material)
        except UnkeyableError:  # `derive` raises it
            return None
        self.material = material
        guessed = format_key(namespace, task_name, digest_of_parts(remembered, self._rest))
        self._guessed = (remembered, guessed)
        return guessed

    def derive(self, namespace: str, task_name: str) -> str:
        """The run's key, from its whole material.

        Raises:
            UnkeyableError: part of the run has no stable data form.
        """
        guessed = self._guessed
        if guessed is None or self.material is None:
            self.material = self._material()
        agent = agent_json(self.material)
        if guessed is not None and guessed[0] == agent:  # (remembered already)
            self.agent_json = guessed[0]  # (the object remembered: its hash is worked out once)
            return guessed[1]
        self.agent_json = agent
        if self._remember:
            _remember_agent_json(self.agent, self.run_kwargs, agent)
        rest = self._rest if guessed is not None else rest_json(self.material)
        return format_key(namespace, task_name, digest_of_parts(agent, rest))

    def _material(self) -> dict[str, Any]:
        return request_material(self.agent, self.prompt, self.history, self.run_kwargs, self.key_extra)


def agent_json(material: Mapping[str, Any]) -> bytes:
    """The canonical JSON of the agent's part of `request_material` (most of the work of a key).

    Raises:
        UnkeyableError: part of it has no stable data form.
    """
    return canonical_json(material["agent"])


def rest_json(material: Mapping[str, Any]) -> bytes:
    """The canonical JSON of the rest of `request_material` (prompt, history, `key_extra`).

    Raises:
        UnkeyableError: part of it has no stable data form.
    """
    return canonical_json({k: v for k, v in material.items() if k != "agent"})


def digest_of_parts(agent: bytes, rest: bytes) -> str:
    """`digest_of(material)` from `agent_json(material)` and `rest_json(material)`: the same bytes hashed (`"agent"`
    sorts first among the material's keys)."""
    return hashlib.sha256(b'{"agent":' + agent + b"," + rest[1:]).hexdigest()


_remembered: dict[int, tuple[weakref.ref[Any], bytes]] = {}


def _remembered_agent_json(agent: Any, run_kwargs: Mapping[str, Any]) -> bytes | None:
    """`agent_json` of the agent's last plain call (one whose arguments do not shape the agent's key material),
    for another plain call; else None."""
    if not _plain(run_kwargs):
        return None
    found = _remembered.get(id(agent))
    if found is None or found[0]() is not agent:
        return None
    return found[1]


def _remember_agent_json(agent: Any, run_kwargs: Mapping[str, Any], data: bytes) -> None:
    """Keep `agent_json` of a plain call (by the agent's identity; dropped with the agent)."""
    if not _plain(run_kwargs):
        return
    key = id(agent)
    found = _remembered.get(key)
    if found is not None and found[0]() is agent:
        if found[1] != data:
            _remembered[key] = (found[0], data)
        return
    if len(_remembered) >= 1024:  # agents made per request: forget, do not grow without bound
        _remembered.clear()
    try:
        ref = weakref.ref(agent, lambda _: _forget(key, ref))
    except TypeError:  # not weakly referenceable: no guesses for it
        return
    _remembered[key] = (ref, data)


def _forget(key: int, ref: weakref.ref[Any]) -> None:
    found = _remembered.get(key)
    if found is not None and found[0] is ref:
        del _remembered[key]


def _plain(run_kwargs: Mapping[str, Any]) -> bool:
    """No `model=`, `model_settings=`, `output_type=` or other keyed run argument: the agent's material is its own."""
    return all(v is None or k in RUN_KWARGS_NOT_IN_KEY for k, v in run_kwargs.items())
