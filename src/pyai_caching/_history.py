"""Message history in: PydanticAI messages, their JSON form, or `{"role", "content"}` dicts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_ai import messages as m

__all__ = ("to_messages",)

_ROLE_PARTS: dict[str, Callable[[str], m.ModelMessage]] = {
    "user": lambda content: m.ModelRequest(parts=[m.UserPromptPart(content=content)]),
    "system": lambda content: m.ModelRequest(parts=[m.SystemPromptPart(content=content)]),
    "assistant": lambda content: m.ModelResponse(parts=[m.TextPart(content=content)]),
}


def to_messages(history: Sequence[Any] | None) -> list[m.ModelMessage]:
    """Normalize `history` to PydanticAI messages.

    Accepts `ModelRequest`/`ModelResponse` objects, their serialized dicts (as from
    `all_messages_json()`), and chat-style `{"role": "user" | "assistant" | "system", "content": str}`
    dicts, mixed freely.

    Raises:
        TypeError: `history` is not a sequence of messages.
        ValueError: an item is not a message in any accepted form.
    """
    if history is None:
        return []
    if isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Sequence):
        raise TypeError(f"message_history must be a sequence of messages, not {type(history).__name__}")
    messages: list[m.ModelMessage] = []
    for index, item in enumerate(history):
        if isinstance(item, (m.ModelRequest, m.ModelResponse)):
            messages.append(item)
        elif isinstance(item, Mapping) and "role" in item:
            messages.append(_from_chat(index, item))
        elif isinstance(item, Mapping) and "kind" in item:
            try:
                messages.extend(m.ModelMessagesTypeAdapter.validate_python([item]))
            except ValidationError as exc:
                raise ValueError(f"message_history[{index}] is not a valid PydanticAI message: {exc}") from exc
        else:
            raise ValueError(
                f"message_history[{index}] is a {type(item).__name__}; expected a ModelRequest/ModelResponse, "
                'its JSON dict, or a {"role": ..., "content": ...} dict'
            )
    return messages


def _from_chat(index: int, item: Mapping[str, Any]) -> m.ModelMessage:
    role, content = item.get("role"), item.get("content")
    make = _ROLE_PARTS.get(role) if isinstance(role, str) else None
    if make is None:
        raise ValueError(f"message_history[{index}] has role {role!r}; expected one of {sorted(_ROLE_PARTS)}")
    if not isinstance(content, str):
        raise ValueError(f"message_history[{index}] content must be a string, not {type(content).__name__}")
    return make(content)
