"""The `Store` contract on every backend, `LocalStore` specifics, and the fail-open wrapper.

`TestStoreContract` runs once per backend (memory, local, fakeredis, real redis) through the
parametrized `store` fixture in conftest.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import logging
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest

from pyai_caching import CacheError, ConfigurationError, FixtureStore, LocalStore, MemoryStore, RedisStore, Store
from pyai_caching._failopen import FailOpen

LOGGER = "pyai_caching"

ODD_KEYS = [
    "pyai_caching:v1:my task:0123abcd",  # space
    "pyai_caching:v1:ünïcødé 日本語 🚀:0123abcd",
    "pyai_caching:v1:a/b/../../../escape:0123abcd",
    "pyai_caching:v1:..:..",
    "..:..:..:x",
    "../../../../tmp/escape",
    "/etc/passwd",
    "C:\\windows\\system32",
    ".",
    "",
    "::",
    "a::b",
    ".hidden:.also",
    "%2E%2E:%2F",
    "100%:%%",
    "a%3Ab",  # not the same key as "a:b"
    "a:b",
    "nul\x00byte:tab\tnew\nline",
    "x",
    "x.json:y",  # a directory named like x's file must not clash with key "x"
    "_counters:not-a-counter",
    "t:" + "long" * 100,  # 400 characters in one part
    "t:" + "長" * 100,  # 300 characters, 900 bytes of UTF-8, 2700 percent-encoded
]


class TestStoreContract:
    """What every backend promises (see `Store`)."""

    async def test_get_missing_is_none(self, store: Store) -> None:
        assert await store.get("pyai_caching:v1:t:missing") is None

    async def test_set_get_overwrite(self, store: Store) -> None:
        await store.set("ns:v1:t:k", b"first", 60)
        assert await store.get("ns:v1:t:k") == b"first"
        await store.set("ns:v1:t:k", b"second", 60)
        assert await store.get("ns:v1:t:k") == b"second"
        await store.set("ns:v1:t:k", b"third", None)  # overwriting may also change the TTL
        assert await store.get("ns:v1:t:k") == b"third"

    async def test_keys_are_independent(self, store: Store) -> None:
        await store.set("ns:v1:a:k", b"a", 60)
        await store.set("ns:v1:b:k", b"b", 60)
        assert await store.get("ns:v1:a:k") == b"a"
        assert await store.get("ns:v1:b:k") == b"b"
        assert await store.get("ns:v1:a") is None
        assert await store.get("ns:v1") is None

    async def test_delete(self, store: Store) -> None:
        await store.set("ns:v1:t:k", b"v", 60)
        assert await store.delete("ns:v1:t:k") is True
        assert await store.get("ns:v1:t:k") is None
        assert await store.delete("ns:v1:t:k") is False
        assert await store.delete("ns:v1:t:never-set") is False

    async def test_ttl_expiry(self, store: Store) -> None:
        await store.set("ns:v1:t:short", b"short", 0.2)
        await store.set("ns:v1:t:forever", b"forever", None)
        await store.set("ns:v1:t:long", b"long", 60)
        assert await store.get("ns:v1:t:short") == b"short"
        await asyncio.sleep(0.4)
        # recordings never expire: a FixtureStore ignores TTLs by design
        assert await store.get("ns:v1:t:short") == (b"short" if isinstance(store, FixtureStore) else None)
        assert await store.get("ns:v1:t:forever") == b"forever"
        assert await store.get("ns:v1:t:long") == b"long"

    async def test_expired_entry_is_gone_for_delete_too(self, store: Store) -> None:
        await store.set("ns:v1:t:short", b"short", 0.1)
        await asyncio.sleep(0.25)
        # as on Redis: an expired key does not exist (a recording does not expire)
        assert await store.delete("ns:v1:t:short") is isinstance(store, FixtureStore)

    async def test_set_refreshes_ttl(self, store: Store) -> None:
        await store.set("ns:v1:t:k", b"old", 0.2)
        await store.set("ns:v1:t:k", b"new", 60)
        await asyncio.sleep(0.35)
        assert await store.get("ns:v1:t:k") == b"new"

    async def test_binary_safe(self, store: Store) -> None:
        values = {
            "ns:v1:t:all-bytes": bytes(range(256)) * 8,
            "ns:v1:t:crlf-nul": b"\r\n\x00\r\n$-1\r\n*3\r\n",
            "ns:v1:t:not-utf8": b"\xff\xfe\xc3\x28\x80",
            "ns:v1:t:empty": b"",
            "ns:v1:t:big": bytes(range(256)) * 4096,  # 1 MiB
        }
        for key, value in values.items():
            await store.set(key, value, 60)
        for key, value in values.items():
            got = await store.get(key)
            assert isinstance(got, bytes)
            assert got == value, key

    async def test_odd_keys_round_trip_and_stay_distinct(self, store: Store, tmp_path: Path) -> None:
        for i, key in enumerate(ODD_KEYS):
            await store.set(key, f"value {i}".encode(), 60)
        for i, key in enumerate(ODD_KEYS):
            assert await store.get(key) == f"value {i}".encode(), repr(key)
        assert await store.delete("a:b") is True
        assert await store.get("a%3Ab") == f"value {ODD_KEYS.index('a%3Ab')}".encode()
        assert await store.get_counters("") == {}  # no entry is mistaken for a counter group

        if isinstance(store, LocalStore):
            root = store.root.resolve()
            for key in ODD_KEYS:
                assert store.path_for(key).resolve().is_relative_to(root), repr(key)
            for path in tmp_path.rglob("*"):  # nothing was written outside the root
                assert path.resolve() == root or path.resolve().is_relative_to(root), path
            for path in root.rglob("*"):
                assert path.is_dir() or path.suffix == ".json", path  # no leftover temp files

    async def test_keys_lists_entries_under_a_prefix_and_never_counters(self, store: Store) -> None:
        for key in ("ns:v2:a:1", "ns:v2:a:2", "ns:v2:ab:1", "other:v2:a:1", "ns:v2:a:" + "z" * 64):
            await store.set(key, b"v", 60)
        await store.add_counters("ns:stats:a", {"hits": 1})
        assert await store.keys("ns:v2:a:") == ["ns:v2:a:1", "ns:v2:a:2", "ns:v2:a:" + "z" * 64]
        assert await store.keys("ns:") == ["ns:v2:a:1", "ns:v2:a:2", "ns:v2:a:" + "z" * 64, "ns:v2:ab:1"]
        assert await store.keys("none:") == []

    async def test_odd_keys_are_listed_as_they_were_written(self, store: Store) -> None:
        for key in ODD_KEYS:  # the last two have parts too long for a file name: stores still list them
            await store.set(key, b"v", 60)
        assert await store.keys("") == sorted(ODD_KEYS)

    async def test_get_including_expired_never_removes(self, store: Store) -> None:
        await store.set("ns:v1:t:short", b"short", 0.1)
        await asyncio.sleep(0.25)
        kept = await store.get_including_expired("ns:v1:t:short")
        if isinstance(store, RedisStore):  # Redis drops expired keys: nothing to replay
            assert kept is None
        else:
            assert kept == b"short"
            assert await store.get_including_expired("ns:v1:t:short") == b"short"  # still there
            if not isinstance(store, FixtureStore):  # (recordings do not expire)
                assert await store.get("ns:v1:t:short") is None  # an ordinary read still sees it expired
        assert await store.get_including_expired("ns:v1:t:never-set") is None

    async def test_counters_add_up(self, store: Store) -> None:
        await store.add_counters("ns:stats:faq", {"hits": 1, "cost_saved": 0.25})
        await store.add_counters("ns:stats:faq", {"hits": 2, "misses": 1, "cost_saved": 0.5})
        groups = await store.get_counters("ns:stats:")
        assert groups == {"ns:stats:faq": {"hits": 3.0, "misses": 1.0, "cost_saved": pytest.approx(0.75)}}
        assert all(isinstance(v, float) for v in groups["ns:stats:faq"].values())

    async def test_get_counters_by_prefix(self, store: Store) -> None:
        for name in ("ns:stats:a", "ns:stats:b", "other:stats:a", "ns:statsX", "ns:stat", "n*:stats:a"):
            await store.add_counters(name, {"hits": 1})
        await store.set("ns:stats:entry", b"not a counter group", 60)
        assert set(await store.get_counters("ns:stats:")) == {"ns:stats:a", "ns:stats:b"}
        assert set(await store.get_counters("other:")) == {"other:stats:a"}
        assert set(await store.get_counters("n*:")) == {"n*:stats:a"}  # glob characters are literal
        assert await store.get_counters("nothing:") == {}

    async def test_counter_group_names_round_trip(self, store: Store) -> None:
        names = [
            "ns:stats:my task",
            "ns:stats:日本語 🚀",
            "ns:stats:../../x",
            "ns:stats:",
            "ns:stats:..",
            "ns:stats:" + "長" * 100,  # too long for a file name once encoded
            "ns:stats:" + "長" * 100 + "!",  # same head, another group
        ]
        for i, name in enumerate(names):
            await store.add_counters(name, {"hits": i + 1, "name": 1, "counters": 2})
        await store.add_counters(names[5], {"hits": 10})
        groups = await store.get_counters("ns:stats:")
        assert set(groups) == set(names)
        assert groups[names[5]] == {"hits": 16.0, "name": 1.0, "counters": 2.0}
        assert groups[names[6]]["hits"] == 7.0
        assert set(await store.get_counters("ns:stats:" + "長" * 50)) == {names[5], names[6]}

    async def test_get_counters_empty(self, store: Store) -> None:
        assert await store.get_counters("ns:stats:") == {}

    async def test_concurrent_add_counters_are_exact(self, store: Store) -> None:
        await asyncio.gather(*(store.add_counters("ns:stats:t", {"hits": 1, "time_saved": 0.5}) for _ in range(50)))
        assert await store.get_counters("ns:stats:") == {"ns:stats:t": {"hits": 50.0, "time_saved": 25.0}}

    async def test_concurrent_mixed_operations(self, store: Store) -> None:
        keys = [f"ns:v1:t:{i}" for i in range(30)]
        await asyncio.gather(*(store.set(k, k.encode(), 60) for k in keys))
        got = await asyncio.gather(*(store.get(k) for k in keys))
        assert got == [k.encode() for k in keys]
        deleted = await asyncio.gather(*(store.delete(k) for k in keys))
        assert deleted == [True] * len(keys)


class TestLocalStore:
    async def test_entry_is_readable_json_file_under_root(self, tmp_path: Path) -> None:
        store = LocalStore(tmp_path / "cache")
        assert not store.root.exists()  # created on first write
        await store.set("pyai_caching:v1:faq:abc", b'{"format": 1}', 60)
        path = tmp_path / "cache" / "pyai_caching" / "v1" / "faq" / "abc.json"
        assert store.path_for("pyai_caching:v1:faq:abc") == path
        header, _, entry = path.read_bytes().partition(b"\n")
        assert header.startswith(b"expires=") and float(header[len(b"expires=") :]) > time.time()
        assert json.loads(entry) == {"format": 1}

    async def test_entries_survive_a_checkout_that_resets_modification_times(self, tmp_path: Path) -> None:
        """A committed cache directory is cloned with fresh mtimes: expiry must not depend on them."""
        store = LocalStore(tmp_path)
        await store.set("t:forever", b"recorded", None)
        await store.set("t:day", b"recorded", 86_400)
        for key in ("t:forever", "t:day"):
            os.utime(store.path_for(key), (0, 0))  # as old as can be
        assert await store.get("t:forever") == b"recorded"
        assert await store.get("t:day") == b"recorded"

    async def test_a_file_that_is_not_an_entry_is_a_miss_and_is_replaced(self, tmp_path: Path) -> None:
        store = LocalStore(tmp_path)
        path = store.path_for("t:k")
        path.parent.mkdir(parents=True)
        path.write_bytes(b'{"hand": "written"}')
        assert await store.get("t:k") is None
        await store.set("t:k", b"v", None)
        assert await store.get("t:k") == b"v"

    async def test_expanduser(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.setenv("HOME", str(tmp_path))
        assert LocalStore("~/cache").root == tmp_path / "cache"  # type: ignore[arg-type]

    async def test_expired_file_is_removed_on_read(self, tmp_path: Path) -> None:
        store = LocalStore(tmp_path)
        await store.set("t:k", b"v", 0.05)
        await asyncio.sleep(0.15)
        assert await store.get("t:k") is None
        assert not store.path_for("t:k").exists()

    async def test_atomic_writes_under_concurrent_writers(self, tmp_path: Path) -> None:
        """Threads overwrite one key with large entries while others read: every read is whole."""
        store = LocalStore(tmp_path / "cache")
        key = "pyai_caching:v1:t:contended"
        payloads = {json.dumps({"writer": w, "data": str(w) * 200_000}).encode() for w in range(8)}
        errors: list[BaseException] = []
        seen: list[bytes] = []

        def writer(payload: bytes) -> None:
            try:
                for _ in range(5):
                    store._set(key, payload, 60)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        def reader() -> None:
            try:
                for _ in range(40):
                    data = store._get(key)
                    if data is not None:
                        seen.append(data)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
        threads += [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert errors == []
        assert seen, "readers never saw an entry"
        for data in seen:
            assert data in payloads  # never a partial or mixed file
            json.loads(data)
        assert await store.get(key) in payloads
        leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix != ".json"]
        assert leftovers == []  # temporary files were renamed into place

    async def test_concurrent_async_writers(self, tmp_path: Path) -> None:
        store = LocalStore(tmp_path)
        values = [json.dumps({"i": i, "pad": "x" * 50_000}).encode() for i in range(20)]
        results = await asyncio.gather(
            *(store.set("t:k", v, 60) for v in values), *(store.get("t:k") for _ in range(20))
        )
        for data in results[20:]:
            assert data is None or data in values
        assert await store.get("t:k") in values

    def test_counters_exact_across_instances_and_threads(self, tmp_path: Path) -> None:
        """Several stores on one root (as several processes would be) add up exactly."""

        def worker() -> None:
            store = LocalStore(tmp_path)

            async def main() -> None:
                await asyncio.gather(*(store.add_counters("ns:stats:t", {"hits": 1}) for _ in range(25)))

            asyncio.run(main())

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert asyncio.run(LocalStore(tmp_path).get_counters("ns:")) == {"ns:stats:t": {"hits": 100.0}}

    async def test_corrupt_counter_file_restarts_from_zero(self, tmp_path: Path) -> None:
        store = LocalStore(tmp_path)
        await store.add_counters("ns:stats:t", {"hits": 1})
        (counter_file,) = (tmp_path / "_counters").glob("*.json")
        counter_file.write_bytes(b"{not json")
        await store.add_counters("ns:stats:t", {"hits": 1})
        assert await store.get_counters("ns:") == {"ns:stats:t": {"hits": 1.0}}

    def test_root_is_a_file(self, tmp_path: Path) -> None:
        root = tmp_path / "cache"
        root.write_text("not a directory")
        with pytest.raises(ConfigurationError, match="not a directory"):
            LocalStore(root)

    async def test_unwritable_root_raises_cache_error(self, tmp_path: Path) -> None:
        blocker = tmp_path / "blocker"
        blocker.write_text("a file where the root's parent should be")
        store = LocalStore(blocker / "cache")  # mkdir must fail, even as root
        with pytest.raises(CacheError):
            await store.set("t:k", b"v", 60)
        with pytest.raises(CacheError):
            await store.add_counters("ns:stats:t", {"hits": 1})
        with pytest.raises(CacheError):
            await store.get("t:k")

    async def test_missing_root_reads_as_empty(self, tmp_path: Path) -> None:
        store = LocalStore(tmp_path / "does" / "not" / "exist")
        assert await store.get("t:k") is None
        assert await store.delete("t:k") is False
        assert await store.get_counters("") == {}
        assert not store.root.exists()  # reading never creates the root


# --- FailOpen -----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FlakyStore(Store):
    """A store that raises `error` while it is set, and counts every call that reaches it."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.calls = 0
        self.data: dict[str, bytes] = {}
        self.counters: dict[str, dict[str, float]] = {}

    def _enter(self) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error

    async def get(self, key: str) -> bytes | None:
        self._enter()
        return self.data.get(key)

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._enter()
        self.data[key] = value

    async def delete(self, key: str) -> bool:
        self._enter()
        return self.data.pop(key, None) is not None

    async def add_counters(self, name: str, counters: Mapping[str, float]) -> None:
        self._enter()
        group = self.counters.setdefault(name, {})
        for k, v in counters.items():
            group[k] = group.get(k, 0.0) + v

    async def get_counters(self, prefix: str) -> dict[str, dict[str, float]]:
        self._enter()
        return {k: dict(v) for k, v in self.counters.items() if k.startswith(prefix)}


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


class TestFailOpen:
    async def test_healthy_store_passes_through(self) -> None:
        guarded = FailOpen(FlakyStore())
        assert await guarded.get("k") == (None, False)
        assert await guarded.set("k", b"v", 60) is True
        assert await guarded.get("k") == (b"v", False)
        assert await guarded.add_counters("g", {"hits": 1}) is True
        assert guarded.errors == 0

    @pytest.mark.parametrize(
        "error", [CacheError("down"), OSError("refused"), RuntimeError("custom store bug"), TimeoutError()]
    )
    async def test_failures_become_misses(self, error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
        store = FlakyStore(error)
        store.data["k"] = b"v"
        guarded = FailOpen(store, clock=FakeClock())
        assert await guarded.get("k") == (None, True)
        assert await guarded.set("k", b"v", 60) is False
        assert await guarded.add_counters("g", {"hits": 1}) is False
        assert guarded.errors == 3

    async def test_one_warning_per_outage_and_breaker_skips_the_store(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger=LOGGER)
        clock = FakeClock()
        store = FlakyStore(CacheError("connection refused"))
        guarded = FailOpen(store, cooldown=5.0, clock=clock)

        for _ in range(10):
            assert await guarded.get("k") == (None, True)
            assert await guarded.set("k", b"v", 60) is False
        assert store.calls == 1  # only the first call reached the store: the breaker is open
        assert guarded.errors == 20
        assert not guarded.available
        assert len(_warnings(caplog)) == 1
        assert "connection refused" in _warnings(caplog)[0]

        clock.now += 4.9  # still cooling down
        assert await guarded.get("k") == (None, True)
        assert store.calls == 1

        clock.now += 0.2  # cooldown over: one probe, still failing, breaker re-opens, no new warning
        assert guarded.available
        assert await guarded.get("k") == (None, True)
        assert await guarded.get("k") == (None, True)
        assert store.calls == 2
        assert len(_warnings(caplog)) == 1

    async def test_recovery_is_logged_once(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.WARNING, logger=LOGGER)
        clock = FakeClock()
        store = FlakyStore(CacheError("down"))
        guarded = FailOpen(store, cooldown=5.0, clock=clock)
        assert await guarded.get("k") == (None, True)

        store.error = None  # back up, but the breaker is still open
        assert await guarded.set("k", b"v", 60) is False
        assert store.calls == 1

        clock.now += 5.0
        assert await guarded.set("k", b"v", 60) is True
        assert await guarded.get("k") == (b"v", False)
        messages = _warnings(caplog)
        assert len(messages) == 2
        assert "reachable again" in messages[1]

        store.error = CacheError("down again")  # a new outage warns again
        assert await guarded.get("k") == (None, True)
        assert len(_warnings(caplog)) == 3

    async def test_get_reports_only_its_own_failure(self) -> None:
        """A read that succeeds is not reported failed because another operation failed meanwhile."""
        release = asyncio.Event()

        class Store2(FlakyStore):
            async def get(self, key: str) -> bytes | None:
                await release.wait()
                return b"v"

        store = Store2()
        guarded = FailOpen(store, clock=FakeClock())
        slow_read = asyncio.create_task(guarded.get("k"))
        await asyncio.sleep(0)  # the read is now waiting on the store
        store.error = CacheError("down")
        assert await guarded.set("other", b"x", 60) is False  # fails while the read is in flight
        release.set()
        assert await slow_read == (b"v", False)

    async def test_operation_in_flight_during_a_failure_is_not_a_recovery(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Partial failures (some operations fail, others already under way succeed) log one warning, no flapping."""
        caplog.set_level(logging.WARNING, logger=LOGGER)
        clock = FakeClock()
        release = asyncio.Event()

        class SlowThenFine(FlakyStore):
            async def get(self, key: str) -> bytes | None:
                await release.wait()
                return b"v"

        store = SlowThenFine()
        guarded = FailOpen(store, cooldown=5.0, clock=clock)
        in_flight = [asyncio.create_task(guarded.get("k")) for _ in range(3)]
        await asyncio.sleep(0)
        clock.now += 0.01
        store.error = CacheError("too many connections")
        assert await guarded.set("k", b"v", 60) is False
        release.set()
        assert await asyncio.gather(*in_flight) == [(b"v", False)] * 3
        assert len(_warnings(caplog)) == 1  # no "reachable again" from reads that started before the failure
        assert not guarded.available

        store.error = None
        clock.now += 5.0
        assert await guarded.get("k") == (b"v", False)  # a real probe after the cooldown
        messages = _warnings(caplog)
        assert len(messages) == 2 and "reachable again" in messages[1]

    async def test_cancellation_is_not_a_store_failure(self) -> None:
        class Hanging(FlakyStore):
            async def get(self, key: str) -> bytes | None:
                await asyncio.Event().wait()
                return None

        guarded = FailOpen(Hanging(), clock=FakeClock())
        task = asyncio.create_task(guarded.get("k"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert guarded.errors == 0
        assert guarded.available

    async def test_wraps_real_backends(self, tmp_path: Path) -> None:
        for backend in (MemoryStore(), LocalStore(tmp_path)):
            guarded = FailOpen(backend)
            assert await guarded.set("ns:v1:t:k", b"v", 60) is True
            assert await guarded.get("ns:v1:t:k") == (b"v", False)

    async def test_local_store_failure_fails_open(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.WARNING, logger=LOGGER)
        (tmp_path / "blocker").write_text("")
        guarded = FailOpen(LocalStore(tmp_path / "blocker" / "cache"))
        assert await guarded.set("t:k", b"v", 60) is False
        assert await guarded.get("t:k") == (None, True)
        assert len(_warnings(caplog)) == 1
