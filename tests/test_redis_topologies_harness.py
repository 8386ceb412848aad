"""The Sentinel and Cluster harness of tests/redis_topologies.py, driven with plain (sync) redis-py.

These check the harness itself: that the topologies really are what they claim (replication, sentinel discovery,
failover, slots spread over three nodes, node restart), so tests of the library can build on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from redis_topologies import ClusterSetup, SentinelSetup, sentinel_topology  # fixtures come from conftest

pytestmark = pytest.mark.redis_server

HOST = "127.0.0.1"


def direct(port: int) -> redis.Redis:
    """A plain client of one node; no retries (redis-py's default backoff makes a refused connection take seconds)."""
    return redis.Redis(host=HOST, port=port, decode_responses=True, socket_timeout=5, retry=Retry(NoBackoff(), 0))


@contextmanager
def sentinel_clients(setup: SentinelSetup) -> Iterator[tuple[Sentinel, redis.Redis]]:
    """A redis-py Sentinel manager and its `master_for` client, all connections closed afterwards."""
    sentinel = Sentinel(setup.sentinel_addresses, socket_timeout=5, decode_responses=True)
    master = sentinel.master_for(setup.service_name, socket_timeout=5, decode_responses=True)
    try:
        yield sentinel, master
    finally:
        master.connection_pool.disconnect()
        master.close()
        for client in sentinel.sentinels:
            client.close()


@contextmanager
def cluster_client(setup: ClusterSetup) -> Iterator[RedisCluster]:
    nodes = [ClusterNode(host, port) for host, port in setup.startup_nodes]
    client = RedisCluster(startup_nodes=nodes, decode_responses=True, socket_timeout=5)
    try:
        yield client
    finally:
        client.close()


def other_data_port(setup: SentinelSetup, port: int) -> int:
    (other,) = {setup.master_port, setup.replica_port} - {port}
    return other


# --- sentinel ------------------------------------------------------------------------------------------------------


def test_sentinel_setup_replicates_and_is_discoverable(redis_sentinel_clean: SentinelSetup) -> None:
    setup = redis_sentinel_clean
    p1, p2, p3 = setup.sentinel_ports
    assert setup.service_name == "mymaster"
    assert setup.url == f"redis+sentinel://127.0.0.1:{p1},127.0.0.1:{p2},127.0.0.1:{p3}/mymaster/0"
    assert len({p1, p2, p3, setup.master_port, setup.replica_port}) == 5

    master_address = setup.master_address()
    replica_port = other_data_port(setup, master_address[1])
    assert setup.replica_addresses() == [(HOST, replica_port)]
    with sentinel_clients(setup) as (sentinel, master):
        assert sentinel.discover_master("mymaster") == master_address
        assert sentinel.discover_slaves("mymaster") == [(HOST, replica_port)]
        assert master.set("greeting", "hello")
        assert master.get("greeting") == "hello"
        assert master.wait(1, 5000) == 1
    with direct(replica_port) as replica:
        assert replica.info("replication")["role"] == "slave"
        assert replica.get("greeting") == "hello"
        with pytest.raises(redis.ReadOnlyError):
            replica.set("greeting", "from the replica")


def test_sentinel_flushall_empties_master_and_replica(redis_sentinel: SentinelSetup) -> None:
    with sentinel_clients(redis_sentinel) as (_, master):
        master.set("doomed", "1")
        assert master.wait(1, 5000) == 1
    for port in (redis_sentinel.master_port, redis_sentinel.replica_port):
        with direct(port) as client:
            assert client.get("doomed") == "1"
    redis_sentinel.flushall()
    for port in (redis_sentinel.master_port, redis_sentinel.replica_port):
        with direct(port) as client:
            assert client.dbsize() == 0


def test_sentinel_failover_moves_the_master(redis_sentinel_clean: SentinelSetup) -> None:
    setup = redis_sentinel_clean
    old = setup.master_address()
    [former_replica] = setup.replica_addresses()
    with sentinel_clients(setup) as (sentinel, master):
        master.set("before", "1")
        assert master.wait(1, 5000) == 1

        new = setup.failover()

        assert new == former_replica != old
        assert setup.master_address() == new
        assert sentinel.discover_master("mymaster") == new
        # The same master_for client follows the switch. Its pooled connection still points at the demoted master:
        # the first write there gets READONLY, which redis-py (8.x, no retries on sentinel-managed connections)
        # raises as ConnectionError after dropping the connection; the next command asks the sentinels again.
        try:
            assert master.set("after", "2")
        except redis.ConnectionError:
            assert master.set("after", "2")
        assert master.get("before") == "1"
        assert master.get("after") == "2"
        assert master.connection_pool.get_master_address() == new
        assert master.wait(1, 5000) == 1
    assert setup.replica_addresses() == [old]
    with direct(new[1]) as promoted:
        assert promoted.info("replication")["role"] == "master"
    with direct(old[1]) as demoted:
        info = demoted.info("replication")
        assert (info["role"], info["master_port"], info["master_link_status"]) == ("slave", new[1], "up")
        assert demoted.get("after") == "2"


def test_kill_master_promotes_the_replica_and_teardown_stops_everything(tmp_path: Path) -> None:
    # A private topology: after kill_master the old master is gone, which the shared one must not suffer.
    with sentinel_topology(tmp_path) as setup:
        old = setup.master_address()
        assert old == (HOST, setup.master_port)
        with sentinel_clients(setup) as (sentinel, master):
            master.set("survivor", "yes")
            assert master.wait(1, 5000) == 1

            new = setup.kill_master()

            assert new == (HOST, setup.replica_port)
            assert setup.master_address() == new
            assert sentinel.discover_master("mymaster") == new
            assert master.get("survivor") == "yes"
            assert master.set("after-kill", "1")
            assert setup.replica_addresses() == []  # the killed master is listed as down, not as a replica
        with pytest.raises(redis.ConnectionError), direct(old[1]) as gone:
            gone.ping()
    for port in [setup.master_port, setup.replica_port, *setup.sentinel_ports]:
        with pytest.raises(redis.ConnectionError), direct(port) as client:
            client.ping()


# --- cluster -------------------------------------------------------------------------------------------------------


def test_cluster_spreads_keys_over_all_nodes(redis_cluster_clean: ClusterSetup) -> None:
    setup = redis_cluster_clean
    p1, p2, p3 = setup.ports
    assert setup.url == f"redis+cluster://127.0.0.1:{p1},127.0.0.1:{p2},127.0.0.1:{p3}"
    assert setup.startup_nodes == [(HOST, p1), (HOST, p2), (HOST, p3)]
    keys = [f"key:{i}" for i in range(100)]
    with cluster_client(setup) as cluster:
        assert len(cluster.get_primaries()) == 3
        assert len({cluster.keyslot(key) for key in keys}) > 50
        for key in keys:
            assert cluster.set(key, f"value of {key}")
        assert [cluster.get(key) for key in keys] == [f"value of {key}" for key in keys]
    sizes = []
    for port in setup.ports:
        with direct(port) as node:
            assert node.cluster("info")["cluster_state"] == "ok"
            sizes.append(node.dbsize())
    assert sum(sizes) == 100
    assert all(size > 0 for size in sizes), sizes


def test_cluster_restart_node_rejoins_with_same_identity(redis_cluster_clean: ClusterSetup) -> None:
    # With --save "" and no AOF, the restarted node comes back empty: what must hold is that it rejoins as the same
    # node (nodes.conf reloaded: same id, same slots), the cluster is ok again, the other nodes' keys are intact,
    # and new writes and reads work everywhere.
    setup = redis_cluster_clean
    keys = [f"before:{i}" for i in range(100)]
    with cluster_client(setup) as cluster:
        for key in keys:
            cluster.set(key, key)
        with direct(setup.ports[1]) as node:
            node_id = node.execute_command("CLUSTER MYID")
            on_restarted = set(node.keys("*"))
            slots_before = node.execute_command("CLUSTER SLOTS")
        assert on_restarted

        setup.restart_node(1)

        with direct(setup.ports[1]) as node:
            assert node.execute_command("CLUSTER MYID") == node_id
            assert node.execute_command("CLUSTER SLOTS") == slots_before
            assert node.dbsize() == 0  # a fresh process: the data is gone
        for port in setup.ports:
            with direct(port) as other:
                info = other.cluster("info")
                assert (info["cluster_state"], info["cluster_known_nodes"]) == ("ok", "3")
        # The client from before the restart still works (it reconnects to the restarted node).
        survivors = [key for key in keys if key not in on_restarted]
        assert [cluster.get(key) for key in survivors] == survivors
        assert all(cluster.get(key) is None for key in on_restarted)
        fresh = [f"after:{i}" for i in range(100)]
        for key in fresh:
            assert cluster.set(key, key)
        assert [cluster.get(key) for key in fresh] == fresh
    with direct(setup.ports[1]) as node:
        assert node.dbsize() > 0
