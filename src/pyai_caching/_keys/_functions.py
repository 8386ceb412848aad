"""Functions as key material: name, code, default values, and the values they close over."""

from __future__ import annotations

import contextvars
import dataclasses
import dis
import enum
import hashlib
import json
import types
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic_ai.models import Model
from pydantic_ai.toolsets import AbstractToolset

from ._canonical import UnkeyableError, canonical_json, qualname

__all__ = ("function_data", "self_data", "in_model", "code_digest")

_code_digests: dict[int, tuple[types.CodeType, str]] = {}


def code_digest(code: types.CodeType) -> str:
    return _per_code(_code_digests, code, _code_digest_of)


T = TypeVar("T")
_globals_read: dict[int, tuple[types.CodeType, Any]] = {}
_rebound: dict[int, tuple[types.CodeType, Any]] = {}


def _per_code(cache: dict[int, tuple[types.CodeType, Any]], code: types.CodeType, compute: Callable[[types.CodeType], T]) -> T:
    """`compute(code)`, remembered by the code object's identity (hashing a code object hashes all of it)."""
    cached = cache.get(id(code))
    if cached is not None and cached[0] is code:
        return cached[1]  # type: ignore[no-any-return]
    value = compute(code)
    if len(cache) >= 4096:
        cache.clear()
    cache[id(code)] = (code, value)
    return value


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
    model_state = in_model.get() if model_state is None else model_state
    if fn.__closure__:
        data["closure"] = _closure_data(fn, model_state)
    if not model_state:
        read = _global_data(fn)
        if read:
            data["globals"] = read
    return data


def callable_data(fn: types.FunctionType) -> dict[str, Any]:
    """A function decorated with `@llm_cache`: as `function_data`, with the plain data it closes over (a settings
    dict) and the module-level plain data it reads keyed by value; the names it rebinds (`nonlocal`) and the other
    mutable objects it closes over (a client) are its own state, not what it answers."""
    data = function_data(fn, model_state=True)
    if fn.__closure__:
        data["closure"] = _closure_data(fn, True, keep_plain=True)
    read = _global_data(fn)
    if read:
        data["globals"] = read
    return data


_PLAIN = (str, int, float, bool, type(None))


def _global_data(fn: types.FunctionType) -> dict[str, Any] | None:
    """Module-level plain data the function reads (`LANGUAGE = "German"`, a dict of settings): a prompt built from
    it changes with it. Modules, functions, classes and other objects are not read; nor are globals the function
    assigns itself (`global calls`), which are its state."""
    names = _read_globals(fn.__code__)
    if not names:
        return None
    namespace = fn.__globals__
    found = {name: value for name in names if name in namespace and _is_plain_data(value := namespace[name])}
    return found or None


def _read_globals(code: types.CodeType) -> tuple[str, ...]:
    return _per_code(_globals_read, code, _compute_read_globals)


def _compute_read_globals(code: types.CodeType) -> tuple[str, ...]:
    """Names `code` (and the code nested in it) loads as globals, less those it stores."""
    loads: set[str] = set()
    stores: set[str] = set()
    stack = [code]
    while stack:
        current = stack.pop()
        for instruction in dis.get_instructions(current):
            if instruction.opname == "LOAD_GLOBAL":
                loads.add(str(instruction.argval))
            elif instruction.opname in ("STORE_GLOBAL", "DELETE_GLOBAL"):
                stores.add(str(instruction.argval))
        stack.extend(const for const in current.co_consts if isinstance(const, types.CodeType))
    return tuple(sorted(loads - stores))


def _is_plain_data(value: Any, depth: int = 0) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if depth > 4 or not isinstance(value, (list, tuple, dict, set, frozenset)):
        return False
    if isinstance(value, dict):
        return all(isinstance(k, _PLAIN) and _is_plain_data(v, depth + 1) for k, v in value.items())
    return all(_is_plain_data(v, depth + 1) for v in value)


def _closure_data(fn: types.FunctionType, model_state: bool, *, keep_plain: bool = False) -> dict[str, Any]:
    """The values `fn` closes over: scalars as they are, the rest encoded now (while `fn` is marked in progress,
    so a recursive closure ends). As model state, rebound names and mutable values are left out (`keep_plain`:
    but not mutable plain data)."""
    cells: dict[str, Any] = {}
    nested: list[tuple[str, Any]] = []
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell (not yet assigned)
            continue
        if model_state and (
            name in _rebound_names(fn.__code__)
            or not (_is_immutable(value) or (keep_plain and _is_plain_data(value)))
        ):
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


def _rebound_names(code: types.CodeType) -> frozenset[str]:
    return _per_code(_rebound, code, _compute_rebound_names)


def _compute_rebound_names(code: types.CodeType) -> frozenset[str]:
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
