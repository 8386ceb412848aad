"""Errors raised by pyai_caching.

Every error derives from `PyaiCachingError`. Store problems (`CacheError`) never reach the
caller of `cached_agent_run`: they are logged and the run goes to the model instead.
"""

from __future__ import annotations

__all__ = ("PyaiCachingError", "ConfigurationError", "CacheError", "UsageLimitExceeded")


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
