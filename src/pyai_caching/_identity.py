"""A hit's run identity is the caller's: content from the entry, ids and request times from this call.

An entry holds the run that first paid for the answer: its `run_id`, `conversation_id`, `metadata`,
trace context and the times its requests were made. Served to another caller as is, Bob's
follow-up would continue Alice's conversation. `rebind` gives a freshly decoded run (nobody
else holds it) the identity PydanticAI would have given this call's run.
"""

from __future__ import annotations

import datetime
import os
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic_ai import AgentRunResult
from pydantic_ai import messages as _messages

__all__ = ("rebind",)

_NEW_CONVERSATION = "new"  # `conversation_id="new"`: a fresh conversation, as in PydanticAI


def _uuid7() -> str:
    """A time-ordered UUIDv7 (RFC 9562), the kind of id PydanticAI gives runs and conversations."""
    h = "%032x" % ((time.time_ns() // 1_000_000) << 80 | _random.getrandbits(80) & _UUID7_CLEAR | _UUID7_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UUID7_CLEAR = ~(0xF << 76 | 0x3 << 62)
_UUID7_SET = 0x7 << 76 | 0x2 << 62  # version 7, variant 10
_random = random.Random(os.urandom(32))
"""Ids need to be unique, not secret: a generator seeded from the OS (a system call per id costs more than the
id), seeded again in a forked worker so that it never hands out its parent's ids."""
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))


def rebind(
    run: AgentRunResult[Any],
    *,
    history: Sequence[_messages.ModelMessage],
    run_kwargs: Mapping[str, Any],
    agent: Any,
) -> AgentRunResult[Any]:
    """Give `run` (decoded for this call only) this call's identity, in place, and return it.

    - `run_id`: the call's `run_id=`, else a new one; `conversation_id`: the call's, else the latest on its
      history, else a new one (PydanticAI's rules).
    - `metadata`: as PydanticAI resolves it: `agent.override(metadata=...)`, else the agent's merged under the
      call's `metadata=`; metadata computed by a function of the run context is not recomputed and reads as None.
    - The history part of the messages is the caller's own history; the new messages carry the new ids, and the
      new requests (and their parts) this call's time. Responses keep the times the provider answered.
    """
    state = run._state  # pyright: ignore[reportPrivateUsage]
    run_id = run_kwargs.get("run_id") or _uuid7()
    conversation_id = _conversation_id(run_kwargs.get("conversation_id"), history)
    metadata = _metadata(agent, run_kwargs.get("metadata", None))
    state.run_id = run_id
    state.conversation_id = conversation_id
    state.metadata = metadata

    start = run._new_message_index  # pyright: ignore[reportPrivateUsage]
    new_messages = state.message_history[start:]
    # the history is the caller's own (the key covers it by content); the new messages are the entry's
    state.message_history = [*history, *new_messages]
    run._new_message_index = start = len(history)  # pyright: ignore[reportPrivateUsage]
    messages = state.message_history
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    for message in messages[start:]:
        message.run_id = run_id
        message.conversation_id = conversation_id
        if isinstance(message, _messages.ModelRequest):
            message.timestamp = now
            for part in message.parts:
                if getattr(part, "timestamp", None) is not None:
                    part.timestamp = now  # type: ignore[union-attr]
    run._traceparent_value = None  # pyright: ignore[reportPrivateUsage] - the trace of the run that paid
    return run


def _metadata(agent: Any, run_metadata: Any) -> dict[str, Any] | None:
    """`Agent._get_metadata` without a run context: mappings only."""
    override = getattr(agent, "_override_metadata", None)
    chosen = override.get() if override is not None else None
    if chosen is not None:
        return dict(chosen.value) if isinstance(chosen.value, Mapping) else None
    base = getattr(agent, "_metadata", None)
    base = dict(base) if isinstance(base, Mapping) else None
    run = dict(run_metadata) if isinstance(run_metadata, Mapping) else None
    if base and run:
        return {**base, **run}
    return run or base


def _conversation_id(explicit: Any, history: Sequence[_messages.ModelMessage]) -> str:
    if isinstance(explicit, str) and explicit and explicit != _NEW_CONVERSATION:
        return explicit
    if explicit is None:
        for message in reversed(history):
            found = getattr(message, "conversation_id", None)
            if found is not None:
                return str(found)
    return _uuid7()
