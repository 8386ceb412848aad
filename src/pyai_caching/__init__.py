"""pyai_caching: cache, price and replay PydanticAI agent runs.

`cached_agent_run` / `cached_agent_run_sync` are drop-in replacements for `agent.run` /
`agent.run_sync` that answer repeated runs from Redis (or an embedded local store).
"""

from . import costs, recorders, stats
from ._copying import copy_entries, copy_entries_sync
from ._explain import Explanation
from ._explain_run import explain, explain_sync
from ._reports import flush, get_stats, get_stats_sync
from ._result import CachedAgentRunResult
from ._run import cached_agent_run, cached_agent_run_sync
from .costs import DEFAULT_COSTS, ModelCosts, Price, price_usage
from ._config import CacheMode
from .exceptions import CacheDriftError, CacheError, CacheMissError, ConfigurationError, PyaiCachingError, UsageLimitExceeded
from .recorders import ExpenseCallback, ExpenseEvent, ExpenseRecorder
from .stats import StatsReport, TaskStats
from .stores import FixtureStore, LocalStore, MemoryStore, RedisStore, Store

__all__ = (
    "cached_agent_run",
    "cached_agent_run_sync",
    "CacheMode",
    "CachedAgentRunResult",
    "get_stats",
    "get_stats_sync",
    "flush",
    "copy_entries",
    "copy_entries_sync",
    "explain",
    "explain_sync",
    "Explanation",
    "ModelCosts",
    "DEFAULT_COSTS",
    "Price",
    "price_usage",
    "ExpenseEvent",
    "ExpenseRecorder",
    "ExpenseCallback",
    "TaskStats",
    "StatsReport",
    "Store",
    "RedisStore",
    "LocalStore",
    "FixtureStore",
    "MemoryStore",
    "PyaiCachingError",
    "ConfigurationError",
    "CacheError",
    "CacheMissError",
    "CacheDriftError",
    "UsageLimitExceeded",
)
