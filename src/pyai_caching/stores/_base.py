"""The `Store` contract every backend implements."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence

__all__ = ("PendingGet", "Store")


class PendingGet(ABC):
    """A read already sent (`Store.start_get`) whose answer is not read yet. Exactly one of `result` or
    `discard` must be awaited: until then the read holds a connection."""

    @abstractmethod
    async def result(self) -> bytes | None:
        """What `get` would have returned (and raises what it would have raised)."""

    @abstractmethod
    async def discard(self) -> None:
        """Drop the answer; nothing to do once `result` was awaited. Never raises but for a cancellation."""


class Store(ABC):
    """Bytes under string keys with a TTL, plus named counters. Backends own their eviction.

    Contract for implementations:
    - `get` returns `None` for a missing or expired key; it never returns stale data past the TTL (but
      `FixtureStore`, whose recordings never expire by design).
    - Any backend failure (unreachable, timeout, refused) raises `pyai_caching.exceptions.CacheError`;
      the caller decides to fail open.
    - Methods are safe to call concurrently from one event loop.
    """

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The bytes stored under `key`, or `None`."""

    def starts_gets(self) -> bool:
        """Whether `start_get` can send a read early (a network round trip the caller spends on other work).
        Default: False."""
        return False

    async def start_get(self, key: str) -> PendingGet | None:
        """Send a `get` of `key` and return before its answer arrives, where `starts_gets`; None: it cannot now,
        call `get`. Default: None."""
        return None

    @abstractmethod
    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store `value` under `key`, replacing any entry; it expires after `ttl` seconds (`None`: never)."""

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove `key`; `True` if it existed."""

    async def delete_many(self, keys: Sequence[str]) -> int:
        """Remove each of `keys`; how many existed. Default: `delete` one by one."""
        return sum([await self.delete(key) for key in keys])

    # -- cross-process single-flight (optional: a store without it lets each process make its own misses)

    async def claim(self, key: str, ttl: float) -> str | None:
        """Try to become the one caller, across processes, making the entry `key`: a token if this caller holds
        the claim now (it expires after `ttl` seconds unless renewed), None if another holds it.

        Raises:
            NotImplementedError: the store has no cross-process claims (the default).
        """
        raise NotImplementedError(f"{type(self).__name__} has no cross-process claims")

    async def claim_and_read(self, key: str, ttl: float) -> tuple[str | None, bytes | None]:
        """`claim`, and the entry under `key` read right after, in one round trip where the backend can.

        Raises:
            NotImplementedError: the store has no cross-process claims.
        """
        token = await self.claim(key, ttl)
        try:
            return token, await self.get(key)
        except BaseException:  # the claim must not outlive a failed read
            if token is not None:
                await self.release_claim(key, token)
            raise

    async def set_and_release(self, key: str, value: bytes, ttl: float | None, token: str) -> None:
        """`set`, then `release_claim`, in one round trip where the backend can. The claim is released even if the
        write fails (which raises after it)."""
        try:
            await self.set(key, value, ttl)
        finally:
            await self.release_claim(key, token)

    async def renew_claim(self, key: str, token: str, ttl: float) -> bool:
        """Extend a claim this caller holds by `ttl` seconds; False if it was lost (expired, taken over)."""
        return True

    async def release_claim(self, key: str, token: str) -> None:
        """Give up a claim this caller holds (after storing the entry, or failing to), waking its waiters."""

    async def wait_for_claim(self, key: str, timeout: float) -> None:
        """Return when the claim on `key` may have been released (or at once if none is held), at the latest
        after `timeout` seconds. The caller then reads the entry, or claims the key itself."""

    async def is_expired(self, key: str) -> bool:
        """Whether the entry under `key` (which `get_including_expired` returns) is past its TTL; never removes it.
        Default: `get` returns nothing for it."""
        return await self.get(key) is None

    async def get_including_expired(self, key: str) -> bytes | None:
        """The bytes under `key` even past their TTL, where the backend still holds them (`replay` mode: a
        recording does not expire). Never removes anything. Default: `get`."""
        return await self.get(key)

    async def keys(self, prefix: str) -> list[str]:
        """The keys of the entries (not counters) starting with `prefix`, sorted, expired ones included where the
        backend still holds them. Used to copy entries and to explain a miss.

        Raises:
            NotImplementedError: the backend cannot list its entries.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list its entries")

    @abstractmethod
    async def add_counters(self, name: str, counters: Mapping[str, float]) -> None:
        """Atomically add each value to the counter of that field in the group `name`."""

    @abstractmethod
    async def get_counters(self, prefix: str) -> dict[str, dict[str, float]]:
        """Every counter group whose name starts with `prefix`, by name."""

    async def aclose(self) -> None:
        """Write what is still buffered for this store (counters), then release it; not used afterwards.

        Backends release their connections and files in `_close`, not here.
        """
        for hook in self.__dict__.pop("_close_hooks", ()):
            with contextlib.suppress(Exception):
                await hook()
        await self._close()

    async def _close(self) -> None:  # noqa: B027 - optional hook
        """Backend hook: release connections and files."""

    def _add_close_hook(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run `hook` first when the store is closed (the cache registers its counter flush here)."""
        self.__dict__.setdefault("_close_hooks", []).append(hook)
