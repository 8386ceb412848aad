"""Store backends behind one small interface."""

from ._base import Store
from .fixtures import FixtureStore
from .local import LocalStore
from .memory import MemoryStore
from .redis import RedisStore

__all__ = ("Store", "FixtureStore", "LocalStore", "MemoryStore", "RedisStore")
