"""Store backends behind one small interface."""

from ._base import Store
from .local import LocalStore
from .memory import MemoryStore
from .redis import RedisStore

__all__ = ("Store", "LocalStore", "MemoryStore", "RedisStore")
