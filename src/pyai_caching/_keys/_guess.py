"""The agent's key material as it was on its last call: a guess at the next call's key, never the key.

A guess lets a store read start before the key is worked out (`Store.start_get`); the read is used only if the
key, derived in full meanwhile, is the guessed one. An agent changed since, or another agent at a reused address,
makes a wrong guess: one read wasted, never a wrong answer.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from ._agent import RUN_KWARGS_NOT_IN_KEY

__all__ = ("remember_agent_json", "remembered_agent_json")

_remembered: dict[int, tuple[weakref.ref[Any], bytes]] = {}


def remembered_agent_json(agent: Any, run_kwargs: Mapping[str, Any]) -> bytes | None:
    """`agent_json` of the agent's last plain call (one whose arguments do not shape the agent's key material),
    for another plain call; else None."""
    if not _plain(run_kwargs):
        return None
    found = _remembered.get(id(agent))
    if found is None or found[0]() is not agent:
        return None
    return found[1]


def remember_agent_json(agent: Any, run_kwargs: Mapping[str, Any], data: bytes) -> None:
    """Keep `agent_json` of a plain call (by the agent's identity; dropped with the agent)."""
    if not _plain(run_kwargs):
        return
    found = _remembered.get(id(agent))
    if found is not None and found[0]() is agent:
        if found[1] != data:
            _remembered[id(agent)] = (found[0], data)
        return
    if len(_remembered) >= 1024:  # agents made per request: forget, do not grow without bound
        _remembered.clear()
    key = id(agent)
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
