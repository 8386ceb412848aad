"""One background event loop for every sync call, so sync code can run async code anywhere.

`asyncio.run()` cannot be used inside a running loop (Jupyter, FastAPI handlers) and would
bind Redis clients to a loop that closes after each call. A single daemon thread running one
loop forever avoids both: connections are reused across calls and closed at interpreter exit.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ("run",)

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _start() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=_serve, args=(loop,), name="pyai_caching-sync", daemon=True)
            thread.start()
            _loop, _thread = loop, thread
            atexit.register(_stop)
        return _loop


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()
    # stopped, as `asyncio.run` ends: cancel what is left (writes of paid answers finish first), then
    # finalize async generators (this closes the stores opened on this loop), then close
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def _stop() -> None:
    global _loop, _thread
    with _lock:
        loop, thread, _loop, _thread = _loop, _thread, None, None
    if loop is not None and thread is not None and thread.is_alive():
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the background loop and block until it finishes; re-raises its exception.

    Raises:
        RuntimeError: called from code already running on the background loop (it would deadlock).
    """
    loop = _start()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError("cached_agent_run_sync cannot be called from inside a cached run; await cached_agent_run")
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise
