"""Shared fixtures: no model requests ever leave the process; a real redis-server for Redis tests.

The suite starts its own `redis-server` (private TCP port on 127.0.0.1 and a unix socket in a
temp dir) once per session and stops it afterwards. Without the binary, Redis tests are
skipped locally but fail when `PYAI_CACHING_REQUIRE_REDIS=1` (set by `.ci/run`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import fakeredis
import pytest
import redis
from pydantic_ai import models

from pyai_caching import FixtureStore, LocalStore, MemoryStore, RedisStore, Store

models.ALLOW_MODEL_REQUESTS = False

for var in ("LLM_CACHE_REDIS_URL", "LLM_CACHE_DIR", "LLM_CACHE_TTL", "LLM_CACHE_NAMESPACE", "LLM_CACHE_MODE"):
    os.environ.pop(var, None)


@dataclass(frozen=True)
class RedisServer:
    port: int
    unix_socket: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.unix_socket}?db=0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("PYAI_CACHING_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is required (PYAI_CACHING_REQUIRE_REDIS=1) but not installed")
        pytest.skip("redis-server not installed (install it to run the Redis integration tests)")
    directory = tmp_path_factory.mktemp("redis")
    server = RedisServer(port=_free_port(), unix_socket=directory / "redis.sock")
    process = subprocess.Popen(
        [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(server.port),
            "--unixsocket", str(server.unix_socket),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = server.client()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("redis-server did not start")
                time.sleep(0.02)
        yield server
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """URL of the real server, emptied before each test."""
    with redis_server.client() as client:
        client.flushall()
    yield redis_server.url


@pytest.fixture(params=["memory", "local", "fixtures", "fakeredis", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Every backend, for behaviour that must hold on all of them."""
    kind = request.param
    if kind == "memory":
        backend: Store = MemoryStore()
    elif kind == "local":
        backend = LocalStore(tmp_path / "cache")
    elif kind == "fixtures":
        backend = FixtureStore(tmp_path / "fixtures")
    elif kind == "fakeredis":
        backend = RedisStore(fakeredis.FakeAsyncRedis(), owns_client=True)
    else:
        request.getfixturevalue("redis_url")
        backend = RedisStore.from_url(request.getfixturevalue("redis_server").url)
    try:
        yield backend
    finally:
        await backend.aclose()


# The local fake OpenAI server (tests/openai_server.py), for tests that drive PydanticAI's real OpenAIChatModel
# and the openai SDK over HTTP: `openai_server` (per test: emptied, model requests allowed, SDK clients closed
# afterwards) wraps the session-wide `openai_server_session`. Build models with `openai_model(openai_server)`.
from openai_server import openai_server, openai_server_session  # noqa: E402, F401
# Redis Sentinel (a master, a replica, three sentinels) and a three-master Cluster from redis-server on private ports
# (tests/redis_topologies.py), started once per session when a test asks for them.
from redis_topologies import redis_cluster, redis_cluster_clean, redis_sentinel, redis_sentinel_clean  # noqa: E402, F401
