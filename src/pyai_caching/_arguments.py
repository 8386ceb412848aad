"""Checks of a call's arguments, before any model call: bad input is a clear error and costs nothing."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from ._retry import Backoff
from .costs import ModelCosts
from .recorders import ExpenseRecorder

__all__ = ("backoff", "check_prompt", "is_empty", "check_run_kwargs", "check_costs_and_recorder")

_RESERVED_KWARGS = frozenset({"user_prompt"})


def check_costs_and_recorder(custom_costs: Any, expense_recorder: Any) -> None:
    if custom_costs is not None and (
        not isinstance(custom_costs, Mapping)
        or not all(isinstance(k, str) and isinstance(v, ModelCosts) for k, v in custom_costs.items())
    ):
        raise TypeError("custom_costs must be a mapping of model name (str) to ModelCosts")
    if expense_recorder is not None and not (isinstance(expense_recorder, ExpenseRecorder) or callable(expense_recorder)):
        raise TypeError("expense_recorder must be a function (model, task_name, cost) or have a record(event) method")


def check_prompt(prompt: Any) -> None:
    """A prompt is None, a string, or a sequence of PydanticAI user content."""
    if prompt is None or isinstance(prompt, str):
        return
    if isinstance(prompt, (bytes, Mapping)) or not isinstance(prompt, Sequence):
        raise TypeError(f"prompt must be a string or a sequence of PydanticAI user content, not {type(prompt).__name__}")


def is_empty(prompt: Any) -> bool:
    if prompt is None:
        return True
    if isinstance(prompt, str):
        return not prompt.strip()
    return len(prompt) == 0


def backoff(initial_wait: float, max_wait: float) -> Backoff:
    try:
        return _cached_backoff(initial_wait, max_wait)
    except TypeError:  # unhashable arguments: let Backoff say what is wrong with them
        return Backoff(initial_wait=initial_wait, max_wait=max_wait)


@functools.lru_cache(maxsize=64)
def _cached_backoff(initial_wait: float, max_wait: float) -> Backoff:
    return Backoff(initial_wait=initial_wait, max_wait=max_wait)


@functools.lru_cache(maxsize=64)
def _run_parameters(agent_type: type) -> frozenset[str] | None:
    """Keyword names `agent_type.run` accepts; None if it takes `**kwargs`."""
    params = inspect.signature(agent_type.run).parameters.values()  # type: ignore[attr-defined]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL) - {"self"}


def check_run_kwargs(agent_type: type, run_kwargs: Mapping[str, Any]) -> None:
    """Every keyword is one `agent_type.run` accepts (and the prompt is not passed twice)."""
    if not run_kwargs:
        return
    reserved = _RESERVED_KWARGS.intersection(run_kwargs)
    if reserved:
        raise TypeError(f"pass the prompt as prompt=, not {', '.join(sorted(reserved))}=")
    accepted = _run_parameters(agent_type)
    unknown = [] if accepted is None else sorted(set(run_kwargs) - accepted)
    if unknown:
        raise TypeError(f"{agent_type.__name__}.run() got unexpected keyword argument(s): {', '.join(unknown)}")
