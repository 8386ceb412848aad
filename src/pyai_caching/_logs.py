"""The library's logger, and warnings said once per process."""

from __future__ import annotations

import logging

__all__ = ("logger", "warn_once")

logger = logging.getLogger("pyai_caching")

_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Log `message` as a warning the first time it is said."""
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)
