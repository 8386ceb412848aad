"""pyai_caching: cache, price and replay PydanticAI agent runs.

`cached_agent_run` / `cached_agent_run_sync` / `cached_agent_run_stream` are drop-in replacements for
`agent.run` / `agent.run_sync` / `agent.run_stream` that answer repeated runs from Redis (or an embedded
local store); `ResponseCache` caches each model request as a PydanticAI capability (tools still run);
`@llm_cache` caches any function that calls an LLM.
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from . import costs, recorders, stats
from ._clearing import clear_cache, clear_cache_async, clear_entry, clear_entry_sync
from ._copying import copy_entries, copy_entries_sync
from ._decorator import llm_cache
from ._explain import Explanation
from ._explain_run import explain, explain_sync
from ._reports import flush, get_stats, get_stats_sync
from ._response_cache import ResponseCache
from ._result import CachedAgentRunResult
from ._run import cached_agent_run, cached_agent_run_sync
from ._stream_result import CachedStreamedRunResult
from ._stream_run import cached_agent_run_stream
from .costs import DEFAULT_COSTS, ModelCosts, Price, price_usage
from ._config import CacheMode
from .exceptions import CacheDriftError, CacheError, CacheMissError, ConfigurationError, PyaiCachingError, UsageLimitExceeded
from .recorders import ExpenseCallback, ExpenseEvent, ExpenseRecorder
from .stats import StatsReport, TaskStats
from .stores import FixtureStore, LocalStore, MemoryStore, RedisStore, Store

try:
    __version__ = _version("pyai-caching")
except _PackageNotFoundError:  # pragma: no cover - run from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = (
    "__version__",
    "cached_agent_run",
    "cached_agent_run_sync",
    "cached_agent_run_stream",
    "CachedStreamedRunResult",
    "llm_cache",
    "ResponseCache",
    "CacheMode",
    "CachedAgentRunResult",
    "get_stats",
    "get_stats_sync",
    "flush",
    "clear_cache",
    "clear_cache_async",
    "clear_entry",
    "clear_entry_sync",
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
