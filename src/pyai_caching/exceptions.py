"""Errors raised by pyai_caching.

Every error derives from `PyaiCachingError`. Store problems (`CacheError`) never reach the
caller of `cached_agent_run`: they are logged and the run goes to the model instead.
"""

from __future__ import annotations

__all__ = ("PyaiCachingError", "ConfigurationError", "CacheError", "CacheMissError", "CacheDriftError", "UsageLimitExceeded")


class PyaiCachingError(Exception):
    """Root of every error this library raises."""


class ConfigurationError(PyaiCachingError, ValueError):
    """Missing or malformed configuration (store URL, TTL, cache directory, ...).

    Always raised before any model call, so a bad configuration never costs a paid response.
    """


class CacheError(PyaiCachingError):
    """A store could not read or write an entry (unreachable, timed out, refused).

    Stores raise it; `cached_agent_run` catches it, logs it and calls the model (fail open).

    Attributes:
        refused: The store answered but refused this kind of operation (out of memory with `noeviction`,
            a read-only replica, a full disk): other kinds (reads, when writes are refused) keep being used.
    """

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class UsageLimitExceeded(PyaiCachingError):
    """The provider kept rate limiting (or failing transiently) until `max_wait` seconds were spent waiting.

    Chained (`__cause__`) to the last provider error. Not to be confused with PydanticAI's own
    `pydantic_ai.exceptions.UsageLimitExceeded`, a local budget check that is never retried.
    """


class CacheMissError(PyaiCachingError):
    """In `replay` mode, the call has no recorded entry; the model was not called.

    The message says what differs from the nearest recording of the same task, when there is one.

    Attributes:
        key: The key the call looked up.
        task_name: The call's task.
        explanation: Why it missed (`str()` of it is the text in the message), or None.
    """

    def __init__(self, message: str, *, key: str, task_name: str, explanation: object = None) -> None:
        super().__init__(message)
        self.key = key
        self.task_name = task_name
        self.explanation = explanation


class CacheDriftError(CacheMissError):
    """In `replay` mode, the recorded answer no longer validates against the agent's output type and validators
    (the schema drifted since it was recorded); the model was not called. The message names what fails."""
