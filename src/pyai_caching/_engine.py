"""The cache protocol every front door shares. It knows nothing of agents.

`fetch` answers one key: a miss already in flight in this event loop first, then the store, then
one producer per key (concurrent callers wait for it), as the call's mode says (`replay` never
produces, `refresh` never reads the store). The producer's answer is written before
anyone gets it, so when a call returns its entry is in the store (or the write failed and was
logged): another process reading right after sees it. The leader gets the objects the producer
made; everyone else gets their own copy, decoded from the stored bytes. A front door may send the
store read before it knows its key for sure (`early`): what it reads is used only for that key, and
never over a flight in progress.
"""

from __future__ import annotations

import asyncio
import copy as _copy_module
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from . import _singleflight as singleflight
from ._codec import DecodeError
from ._config import CacheMode
from ._failopen import EarlyRead
from ._registry import Cache

__all__ = ("Missing", "Outcome", "Produced", "fetch", "read")

logger = logging.getLogger("pyai_caching")

E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class Produced(Generic[E]):
    """A producer's answer: the value, and its entry bytes (None: it must not be stored or shared as bytes)."""

    value: E
    data: bytes | None
    found: bool = False
    """Made by another process (read from the store after waiting for it): a hit, nothing was paid."""


@dataclass(frozen=True, slots=True)
class Outcome(Generic[E]):
    """What `fetch` found: the caller's own value, whether it came from the cache, and store errors on the way."""

    value: E
    hit: bool
    errors: int


class Missing(Exception):
    """`replay` found no usable entry for `key`: none stored, the store failed, or the entry no longer decodes
    (`drift`, the decode error). Nothing was produced."""

    def __init__(self, key: str, *, store_failed: bool = False, drift: DecodeError | None = None) -> None:
        super().__init__(key)
        self.key = key
        self.store_failed = store_failed
        self.drift = drift


async def fetch(
    flights: dict[Any, Any],
    cache: Cache,
    key: str,
    *,
    mode: CacheMode,
    ttl: float | None,
    decode: Callable[[bytes], E],
    copy: Callable[[E], E],
    produce: Callable[[], Awaitable[Produced[E]]],
    orphaned: Callable[[E], Awaitable[None]],
    early: EarlyRead | None = None,
) -> Outcome[E]:
    """The value for `key`: from a flight in progress, the store, or `produce` (called once per key at a time).

    Args:
        decode: Bytes to a new value for this caller; raises `DecodeError` for an unreadable entry (a miss).
        copy: The leader's value as a new value for this caller, when it has no bytes (it may raise: the caller
            then produces its own).
        produce: Makes the value; runs as its own task, so it finishes (and is stored) even if every caller
            waiting for it is cancelled.
        orphaned: Called by that task with the value when the caller that started it was cancelled before the
            answer came, so the answer is still accounted for.
        early: The store read of `key`, sent while the caller worked out that `key` is the one (`read_write`
            only): taken as the store read, or dropped for a flight in progress.

    Raises:
        Missing: in `replay` mode, when there is no entry to answer with.
    """
    errors = 0
    data: bytes | None = None
    in_flight = (cache, key)  # the same key on another store is another entry
    flight: _Flight[E] | None = flights.get(in_flight)
    if early is not None and (flight is not None or mode != "read_write" or early.key != key):
        await early.discard()
        early = None
    if flight is None and mode != "refresh":
        replay = mode == "replay"
        found, data, failed, errors = await _read_store(cache, key, replay, decode, early)
        if found is not None:
            return found
        flight = flights.get(in_flight)  # another caller may have started while we read
        if flight is None and replay:
            raise Missing(key, store_failed=bool(failed))
    if flight is not None:
        return await _follow(flight, decode, copy, produce, errors)
    shared = mode != "refresh"  # a refresh makes its own answer, whatever another process stored
    unreadable = data  # what the store held, if anything, did not decode: not an answer to wait for
    flight = _Flight.start(
        flights, in_flight, lambda f: _fly(f, cache, key, ttl, produce, orphaned, decode, shared, unreadable)
    )
    produced, stored = await flight.answer  # only the leader awaits it: cancelling it cancels no one else
    failed_write = produced.data is not None and not stored
    return Outcome(produced.value, hit=produced.found, errors=errors + failed_write)


async def read(
    flights: dict[Any, Any],
    cache: Cache,
    key: str,
    *,
    mode: CacheMode,
    decode: Callable[[bytes], E],
) -> Outcome[E | None]:
    """The value for `key` without producing it, for callers that produce as they hand out (streams): a flight in
    progress first (its answer, once it is ready), then the store, as the mode says. A `value` of None is a miss:
    the caller produces the value itself and stores it when complete (streams are not collapsed: a stream is
    never held back waiting for another caller's).

    Raises:
        Missing: in `replay` mode, when there is no entry to answer with.
    """
    if mode in ("off", "refresh"):
        return Outcome(None, hit=False, errors=0)
    flight: _Flight[Any] | None = flights.get((cache, key))
    if flight is not None:
        try:
            produced, _ = await asyncio.shield(flight.shared)
            if produced.data is not None:
                return Outcome(decode(produced.data), hit=True, errors=0)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not flight.shared.cancelled() or (task is not None and task.cancelling()):
                raise  # this caller is being cancelled (not the flight it waited for)
        except Exception:  # noqa: BLE001 - the flight failed or its answer has no entry: read the store
            pass
    replay = mode == "replay"
    found, _, failed, errors = await _read_store(cache, key, replay, decode, None)
    if found is not None:
        return found
    if replay:
        raise Missing(key, store_failed=failed)
    return Outcome(None, hit=False, errors=errors)


async def _read_store(
    cache: Cache, key: str, replay: bool, decode: Callable[[bytes], E], early: EarlyRead | None
) -> tuple[Outcome[E] | None, bytes | None, bool, int]:
    """The store's entry for `key` as a hit, if it decodes; else None with the bytes read (if any), whether the read
    failed, and the store errors so far. `replay` reads entries past their TTL and raises for one that does not
    decode (`Missing` with the drift); otherwise such an entry is logged and left to be overwritten. `early`: the
    read, already sent."""
    if early is not None:
        data, failed = await early.result()
    else:
        data, failed = await (cache.guarded.get_including_expired(key) if replay else cache.guarded.get(key))
    errors = int(failed)
    if data is not None:
        try:
            return Outcome(decode(data), hit=True, errors=errors), data, bool(failed), errors
        except DecodeError as exc:
            if replay:
                raise Missing(key, drift=exc) from exc
            errors += 1
            logger.warning("unreadable cache entry %s (calling the model and overwriting it): %s", key, exc)
    return None, data, bool(failed), errors


async def _follow(
    flight: _Flight[E],
    decode: Callable[[bytes], E],
    copy: Callable[[E], E],
    produce: Callable[[], Awaitable[Produced[E]]],
    errors: int,
) -> Outcome[E]:
    """A caller that found the key in flight: its own copy of the leader's answer."""
    produced, _ = await asyncio.shield(flight.shared)
    if produced.data is not None:
        try:
            return Outcome(decode(produced.data), hit=True, errors=errors)
        except DecodeError as exc:  # pragma: no cover - producers only share bytes that read back
            logger.warning("the answer for %s does not read back from its entry: %s", flight.key[1], exc)
    if flight.template is not None:
        try:
            return Outcome(copy(flight.template), hit=True, errors=errors)
        except Exception:  # noqa: BLE001 - nothing to copy it with: this caller makes its own
            pass
    return Outcome((await produce()).value, hit=False, errors=errors)


async def _fly(
    flight: _Flight[E],
    cache: Cache,
    key: str,
    ttl: float | None,
    produce: Callable[[], Awaitable[Produced[E]]],
    orphaned: Callable[[E], Awaitable[None]],
    decode: Callable[[bytes], E],
    shared: bool,
    unreadable: bytes | None,
) -> None:
    """Claim the key across processes (or take what another process stored meanwhile), produce, store, then
    answer. A cancellation after the answer exists is held until it is stored and answered: a paid response is
    always kept."""
    try:
        lifetime = singleflight.claim_ttl(cache.guarded)
        claimed = (
            await singleflight.claim(cache.guarded, key, lifetime, ignore=unreadable) if shared else singleflight.Claim()
        )
        if claimed.found is not None:
            try:
                flight.settle(Produced(decode(claimed.found), claimed.found, found=True), True)
                return
            except DecodeError as exc:
                logger.warning("unreadable cache entry %s (calling the model and overwriting it): %s", key, exc)
        async with singleflight.holding(cache.guarded, key, claimed.token, lifetime) as held:
            produced, stored, cancelled = await _produce_and_store(held, ttl, produce)
    except BaseException as exc:
        flight.fail(exc)
        raise
    leader_gone = flight.answer.done()  # cancelled by its caller while the model was working
    if produced.data is None:  # followers copy from a copy made before the leader can touch its answer
        try:
            flight.template = _copy_module.deepcopy(produced.value)
        except Exception:  # noqa: BLE001 - nothing to copy it with: followers make their own
            flight.template = None
    flight.settle(produced, stored)
    if leader_gone and not produced.found:
        try:
            await orphaned(produced.value)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


async def _produce_and_store(
    held: singleflight.Held, ttl: float | None, produce: Callable[[], Awaitable[Produced[E]]]
) -> tuple[Produced[E], bool, bool]:
    """The produced answer, whether it was stored, and whether a cancellation arrived while storing it."""
    produced = await produce()
    cancelled = False
    stored = False
    if produced.data is not None:
        try:
            stored = await held.store(produced.data, ttl)
        except asyncio.CancelledError:  # (a loop shutting down) the paid answer is written first, then we stop
            cancelled = True
            stored = await held.store(produced.data, ttl)
    return produced, stored, cancelled


@dataclass(eq=False)
class _Flight(Generic[E]):
    """One miss in flight: `answer` for the caller that started it, `shared` for the others, `task` doing the work."""

    flights: dict[Any, Any]
    key: tuple[Cache, str]
    """(the store's cache, the entry key): the same key on two stores is two flights."""
    answer: asyncio.Future[tuple[Produced[E], bool]]
    shared: asyncio.Future[tuple[Produced[E], bool]]
    task: asyncio.Task[None] | None = None
    template: E | None = None
    """A copy of an answer that has no entry bytes, made before anyone got it: what followers copy."""

    @classmethod
    def start(
        cls,
        flights: dict[Any, Any],
        key: tuple[Cache, str],
        work: Callable[[_Flight[E]], Awaitable[None]],
    ) -> _Flight[E]:
        loop = asyncio.get_running_loop()
        flight: _Flight[E] = cls(flights=flights, key=key, answer=loop.create_future(), shared=loop.create_future())
        flight.task = loop.create_task(work(flight))  # type: ignore[arg-type]
        flights[key] = flight
        for future in (flight.answer, flight.shared, flight.task):
            future.add_done_callback(_consume)
        flight.task.add_done_callback(lambda _: flight.forget())
        return flight

    def settle(self, produced: Produced[E], stored: bool) -> None:
        """The answer is ready (and stored, if it could be): hand it out and stop collecting followers."""
        self.forget()
        for future in (self.answer, self.shared):
            if not future.done():
                future.set_result((produced, stored))

    def fail(self, exc: BaseException) -> None:
        """The producer failed: forget the flight at once (a retry produces again); everyone waiting gets the error."""
        self.forget()
        for future in (self.answer, self.shared):
            if future.done():
                continue
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)

    def forget(self) -> None:
        if self.flights.get(self.key) is self:
            del self.flights[self.key]


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark a finished future's exception as retrieved (its callers saw it, or none was left waiting)."""
    if not future.cancelled():
        future.exception()
