"""Redis URLs: one server, a Sentinel-monitored master, a Cluster; malformed ones are a clear error that never
shows the password."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from pyai_caching import ConfigurationError, RedisStore


async def test_a_sentinel_url_names_its_sentinels_service_db_and_the_masters_credentials() -> None:
    store = RedisStore.from_url("redis+sentinel://app:s%40cret@10.0.0.1:26379,10.0.0.2:26380/mymaster/3", timeout=0.5)
    try:
        client = store.client
        assert isinstance(client, Redis)
        pool = client.connection_pool
        assert pool.service_name == "mymaster"  # type: ignore[attr-defined]
        assert pool.connection_kwargs["db"] == 3
        assert pool.connection_kwargs["username"] == "app" and pool.connection_kwargs["password"] == "s@cret"
        sentinels = pool.sentinel_manager.sentinels  # type: ignore[attr-defined]
        assert [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"]) for s in sentinels] == [
            ("10.0.0.1", 26379),
            ("10.0.0.2", 26380),
        ]
        assert sentinels[0].connection_pool.connection_kwargs["socket_timeout"] == 0.5
    finally:
        await store.aclose()


async def test_a_cluster_url_names_its_startup_nodes() -> None:
    store = RedisStore.from_url("redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001")
    try:
        assert isinstance(store.client, RedisCluster)
        nodes = [(n.host, n.port) for n in store.client.nodes_manager.startup_nodes.values()]
        assert sorted(nodes) == [("127.0.0.1", 7000), ("127.0.0.1", 7001)]
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://u:topsecret@h:26379", "the path must be /service_name"),
        ("redis+sentinel://u:topsecret@h:26379/mymaster/db1", "the path must be /service_name"),
        ("redis+sentinel://u:topsecret@h/mymaster", "is not host:port"),
        ("redis+cluster://u:topsecret@h:7000/2", "only database 0"),
        ("redis+cluster://u:topsecret@h:7000,:7001", "is not host:port"),
        ("memcached://h:11211", "unsupported Redis URL"),
    ],
)
def test_malformed_urls_are_configuration_errors_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        RedisStore.from_url(url)
    assert "topsecret" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://topsecret@h1:26379",  # a lone password
        "redis+sentinel://user:top@secret@word@h1:26379",  # @ inside the password
        "redis+cluster://topsecret@h1:7000,nohost",
    ],
)
def test_no_form_of_credentials_reaches_an_error_message(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisStore.from_url(url)
    assert "topsecret" not in str(info.value) and "top@secret" not in str(info.value) and "secret" not in str(info.value)


def test_query_options_on_sentinel_and_cluster_urls_are_refused_clearly() -> None:
    for url in ("redis+sentinel://h1:26379/mymaster/0?ssl_cert_reqs=none", "redis+cluster://h1:7000?ssl_cert_reqs=none"):
        with pytest.raises(ConfigurationError, match=r"take no \?options; pass client options"):
            RedisStore.from_url(url)
