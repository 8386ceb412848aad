"""One background event loop for every sync call, so sync code can run async code anywhere.

`asyncio.run()` cannot be used inside a running loop (Jupyter, FastAPI handlers) and would
bind Redis clients to a loop that closes after each call. A daemon thread owning one loop
avoids both: connections are reused across calls and closed at interpreter exit.

The loop runs only while sync calls are in progress. Between calls it is stopped, not closed:
PydanticAI replaces a provider's HTTP client when the loop it was last used on is no longer
running, so `agent.run_sync(...)` or `asyncio.run(agent.run(...))` after a sync call work as
they would without this library.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ("run", "add_idle_hook", "wait_until_stopped")

T = TypeVar("T")


class _Portal:
    """The loop, its thread, and how many sync calls are running on it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stopped = threading.Condition(self.lock)
        self.driving = False  # inside `run_until_complete`: the loop reports itself running
        self.loop = asyncio.new_event_loop()
        self.wake = threading.Event()
        self.active = 0  # calls submitted and not finished
        self.running = False  # the thread is driving the loop
        self.stopping = False
        self.changed = asyncio.Event()  # only used on the loop's thread
        self.thread = threading.Thread(target=self._serve, name="pyai_caching-sync", daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule `coro` (it starts when the loop runs; this starts the loop if it is stopped)."""
        with self.lock:
            self.active += 1
            future = asyncio.run_coroutine_threadsafe(self._tracked(coro), self.loop)
            if not self.running:
                self.running = True
                self.wake.set()
        return future

    def wait_until_stopped(self, timeout: float) -> None:
        """Block until the loop has stopped (or another call keeps it running): what the sync call did with a
        provider's HTTP client is then on a loop that is not running, and PydanticAI moves it elsewhere."""
        with self.stopped:
            self.stopped.wait_for(lambda: not self.driving or self.active > 0, timeout=timeout)

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
        self.wake.set()
        self.thread.join(timeout=5)

    async def _tracked(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            return await coro
        finally:
            with self.lock:
                self.active -= 1
            self.changed.set()

    async def _while_active(self) -> None:
        """Run until no sync call is in progress, then return: the loop stops until the next one.

        Before it stops, the idle hooks run (buffered counters are written: no timer fires while it is stopped).
        """
        while True:
            self.changed.clear()
            with self.lock:
                idle = self.active == 0
            if idle:
                for hook in _idle_hooks:
                    with contextlib.suppress(Exception):
                        await hook()
                with self.lock:
                    if self.active == 0:
                        self.running = False
                        return
                continue
            await self.changed.wait()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        while True:
            self.wake.wait()
            self.wake.clear()
            with self.lock:
                if self.stopping:
                    break
                self.driving = True
            try:
                self.loop.run_until_complete(self._while_active())
            finally:
                with self.lock:
                    self.driving = False
                    self.stopped.notify_all()
        # as `asyncio.run` ends: cancel what is left (writes of paid answers finish first), then finalize async
        # generators (this closes the stores opened on this loop), then close
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


_lock = threading.Lock()
_portal: _Portal | None = None
_idle_hooks: list[Callable[[], Awaitable[None]]] = []


def add_idle_hook(hook: Callable[[], Awaitable[None]]) -> None:
    """Run `hook` on the background loop each time its sync calls are done, before it stops."""
    _idle_hooks.append(hook)


def _get() -> _Portal:
    global _portal
    with _lock:
        if _portal is None or not _portal.thread.is_alive():
            _portal = _Portal()
            atexit.register(_stop)
        return _portal


def _stop() -> None:
    global _portal
    with _lock:
        portal, _portal = _portal, None
    if portal is not None and portal.thread.is_alive():
        portal.stop()


def wait_until_stopped(timeout: float = 1.0) -> None:
    """After a sync call that used a model: return once the background loop has stopped (see `_Portal`)."""
    portal = _portal
    if portal is not None and threading.current_thread() is not portal.thread:
        portal.wait_until_stopped(timeout)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the background loop and block until it finishes; re-raises its exception.

    Raises:
        RuntimeError: called from code already running on the background loop (it would deadlock).
    """
    portal = _get()
    if threading.current_thread() is portal.thread:
        coro.close()
        raise RuntimeError("cached_agent_run_sync cannot be called from inside a cached run; await cached_agent_run")
    future = portal.submit(coro)
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise
