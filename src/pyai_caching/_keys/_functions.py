"""Functions as key material: name, code, default values, and the values they close over."""

from __future__ import annotations

import contextvars
import dataclasses
import dis
import enum
import functools
import hashlib
import json
import types
from typing import Any

from pydantic import BaseModel
from pydantic_ai.models import Model
from pydantic_ai.toolsets import AbstractToolset

from ._canonical import UnkeyableError, canonical_json, qualname

__all__ = ("function_data", "self_data", "in_model", "code_digest")

_code_digests: dict[int, tuple[types.CodeType, str]] = {}


def code_digest(code: types.CodeType) -> str:
    """`_code_digest_of(code)`, remembered by identity (hashing a code object hashes all of it)."""
    cached = _code_digests.get(id(code))
    if cached is not None and cached[0] is code:
        return cached[1]
    digest = _code_digest_of(code)
    if len(_code_digests) >= 4096:
        _code_digests.clear()
    _code_digests[id(code)] = (code, digest)
    return digest


def _code_digest_of(code: types.CodeType) -> str:
    """A digest of a function's body (bytecode, constants, names), so two lambdas of one scope differ
    and editing a function changes the key. It changes with the Python version too (a miss, not a wrong hit)."""
    consts = [_const_data(c) for c in code.co_consts]
    material = canonical_json([code.co_code.hex(), consts, code.co_names, code.co_varnames])
    return hashlib.sha256(material).hexdigest()[:32]


def _const_data(const: Any) -> Any:
    """A code constant as stable data (frozenset order and `repr` of code objects vary by process)."""
    if isinstance(const, types.CodeType):
        return {"code": code_digest(const)}
    if isinstance(const, (tuple, frozenset)):
        items = [_const_data(c) for c in const]
        return items if isinstance(const, tuple) else sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    if const is None or isinstance(const, (str, int, float, bool)):
        return const
    if isinstance(const, bytes):
        return {"bytes": const.hex()}
    return {"repr": repr(const)}


_in_progress: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar("_in_progress", default=frozenset())
in_model: contextvars.ContextVar[bool] = contextvars.ContextVar("in_model", default=False)
"""True while keying a model's own functions: their mutable closure values and instances are the model's
state (a test double's call counter), not its identity, and are left out."""


def function_data(fn: types.FunctionType, model_state: bool | None = None) -> dict[str, Any]:
    """A function by name, body, defaults and the values it closes over (`make_prompt("German")` differs
    from `make_prompt("French")`). A value with no data form makes the function unkeyable."""
    data: dict[str, Any] = {"__callable__": qualname(fn), "code": code_digest(fn.__code__)}
    if fn.__defaults__:
        data["defaults"] = fn.__defaults__
    if fn.__kwdefaults__:
        data["kwdefaults"] = fn.__kwdefaults__
    if fn.__closure__:
        data["closure"] = _closure_data(fn, in_model.get() if model_state is None else model_state)
    return data


def _closure_data(fn: types.FunctionType, model_state: bool) -> dict[str, Any]:
    """The values `fn` closes over: scalars as they are, the rest encoded now (while `fn` is marked in progress,
    so a recursive closure ends)."""
    cells: dict[str, Any] = {}
    nested: list[tuple[str, Any]] = []
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell (not yet assigned)
            continue
        if model_state and (name in _rebound_names(fn.__code__) or not _is_immutable(value)):
            continue
        if value is None or type(value) in (str, int, float, bool):
            cells[name] = value
        else:
            nested.append((name, value))
    if not nested:
        return cells
    seen = _in_progress.get()
    if id(fn) in seen:  # a recursive closure: its body is keyed already
        return {"recursive": True}
    token = _in_progress.set(seen | {id(fn)})
    state = in_model.set(model_state)
    try:
        for name, value in nested:
            cells[name] = canonical_json(value)  # bytes: keyed by their digest
    except UnkeyableError as exc:
        raise UnkeyableError(f"{qualname(fn)} closes over a value with no data form ({exc})") from None
    finally:
        in_model.reset(state)
        _in_progress.reset(token)
    return cells


def self_data(obj: Any) -> Any:
    """The instance a bound method is bound to: its data (a dataclass, a pydantic model, a model or toolset),
    or its class when the method is a classmethod; other objects have no data form."""
    if isinstance(obj, type):
        return {"__class__": qualname(obj)}
    if in_model.get() and not _is_immutable(obj):
        return {"__class__": qualname(type(obj))}
    if dataclasses.is_dataclass(obj) or isinstance(obj, (BaseModel, Model, AbstractToolset)):
        return obj
    raise UnkeyableError(
        f"a method of a {type(obj).__qualname__} object is keyed by that object's data, and it has none "
        "(make it a dataclass or a pydantic model, or use a plain function)"
    )


@functools.lru_cache(maxsize=1024)
def _rebound_names(code: types.CodeType) -> frozenset[str]:
    """Closure variables `code` assigns to (`nonlocal calls; calls += 1`): state, not configuration."""
    return frozenset(i.argval for i in dis.get_instructions(code) if i.opname in ("STORE_DEREF", "DELETE_DEREF"))


def _is_immutable(value: Any) -> bool:
    """Whether `value` cannot change after it is made (so it is a model's configuration, not its state)."""
    if value is None or isinstance(value, (str, bytes, int, float, complex, enum.Enum, type, types.FunctionType)):
        return True
    if isinstance(value, (tuple, frozenset)):
        return all(_is_immutable(v) for v in value)
    if dataclasses.is_dataclass(value):
        params = getattr(type(value), "__dataclass_params__", None)
        return bool(params is not None and params.frozen)
    if isinstance(value, BaseModel):
        return bool(type(value).model_config.get("frozen"))
    return False
