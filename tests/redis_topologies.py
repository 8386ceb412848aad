"""Real Redis Sentinel and Redis Cluster topologies for tests, started from the local `redis-server`.

Two session-scoped fixtures, meant to be imported into conftest (`from redis_topologies import redis_sentinel,
redis_cluster`), plus function-scoped variants that empty the data first:

- `redis_sentinel` -> `SentinelSetup`: a master, one replica (`--replicaof`) and three sentinels monitoring the
  master as `mymaster` (quorum 2, down-after 1 s, failover-timeout 5 s). `url` is a `redis+sentinel://` URL;
  `failover()` (SENTINEL FAILOVER) and `kill_master()` (SIGKILL of the master process) move the master and wait
  until the sentinels report the new one and it accepts writes; `master_address()` is what the sentinels report now.
- `redis_cluster` -> `ClusterSetup`: three masters (no replicas) joined with `redis-cli --cluster create`; `url` is a
  `redis+cluster://` URL; `restart_node(index)` stops one node and starts it again on the same port and directory.
- `redis_sentinel_clean` / `redis_cluster_clean`: the same objects, after `flushall()`.

Everything listens on 127.0.0.1 on private free ports, runs in its own temp directory (each process writes its
stdout/stderr to a log file there, quoted when a wait fails), and is stopped at the end of the session (terminate,
wait, kill if needed), also when the setup fails part-way. Waits are bounded (`TIMEOUT`, 30 s) and fail the test with
the log tails of the processes involved. Without `redis-server` (or `redis-cli`, for the cluster) the fixtures skip,
or fail when `PYAI_CACHING_REQUIRE_REDIS=1`, like `redis_server` in conftest.

The topologies are shared by the whole session, so a test that changes them leaves them changed: after `failover()`
the two data nodes have swapped roles (the old master is a replica of the new one again when `failover()` returns);
after `kill_master()` the old master is gone for good (one master, no replica; `failover()` is then impossible); a
restarted cluster node has lost its data (no RDB/AOF). Tests that need a pristine topology can start a private one
with the context managers `sentinel_topology(directory)` / `cluster_topology(directory)`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "TIMEOUT",
    "ClusterSetup",
    "SentinelSetup",
    "cluster_topology",
    "redis_cluster",
    "redis_cluster_clean",
    "redis_sentinel",
    "redis_sentinel_clean",
    "sentinel_topology",
]

HOST = "127.0.0.1"
TIMEOUT = 30.0  # seconds, for every wait (start-up, sync, failover, cluster state)
SERVICE_NAME = "mymaster"
_PROBE_KEY = "__redis_topologies_probe__"
_LOG_TAIL_LINES = 30

T = TypeVar("T")


# --- processes -----------------------------------------------------------------------------------------------------


class _Process:
    """One redis-server process; stdout/stderr appended to `<directory>/<name>.log`; restartable with the same args."""

    def __init__(self, name: str, args: Sequence[str], directory: Path, port: int) -> None:
        self.name = name
        self.args = list(args)
        self.directory = directory
        self.port = port
        self.log = directory / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.popen = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory
            )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL with `kill`), wait; SIGKILL if still running after 10 s. Idempotent."""
        process = self.popen
        if process is None:
            return
        if process.poll() is None:
            if kill:
                process.kill()
            else:
                process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError as error:
            return f"(no log: {error})"
        tail = text.splitlines()[-lines:]
        return "\n".join(tail) if tail else "(empty log)"

    def describe(self) -> str:
        if self.popen is None:
            state = "not started"
        elif self.popen.poll() is None:
            state = f"running, pid {self.popen.pid}"
        else:
            state = f"exited with {self.popen.returncode}"
        return f"--- {self.name} (port {self.port}, {state}; log {self.log}) ---\n{self.log_tail()}"


class _Processes:
    """Every process a topology started, so all of them are stopped, whatever happened."""

    def __init__(self) -> None:
        self.all: list[_Process] = []

    def start(self, process: _Process) -> _Process:
        self.all.append(process)
        process.start()
        return process

    def stop_all(self) -> None:
        for process in reversed(self.all):
            try:
                process.stop()
            except (OSError, subprocess.SubprocessError):  # keep stopping the others  # pragma: no cover
                continue


def _fail(message: str, processes: Sequence[_Process]) -> NoReturn:
    details = "\n\n".join(process.describe() for process in processes)
    pytest.fail(f"{message}\n\n{details}" if details else message)


def _wait_for(
    what: str, check: Callable[[], T | None], processes: Sequence[_Process], timeout: float = TIMEOUT
) -> T:
    """Poll `check` until it returns something truthy; Redis/socket errors count as "not yet".

    Fails (with the log tails of `processes`) after `timeout`, or as soon as one of `processes` has exited.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
        except (redis.RedisError, OSError) as error:
            last_error, result = error, None
        if result:
            return result
        exited = [process.name for process in processes if not process.running]
        if exited or time.monotonic() > deadline:
            reason = f"{', '.join(exited)} exited" if exited else f"timed out after {timeout:.0f} s"
            suffix = f" (last error: {last_error!r})" if last_error is not None else ""
            _fail(f"waiting for {what}: {reason}{suffix}", processes)
        time.sleep(0.05)


# --- ports, binaries, clients --------------------------------------------------------------------------------------

_taken_ports: set[int] = set()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port(*, with_bus: bool = False) -> int:
    """A free port on 127.0.0.1 not handed out before; with `with_bus`, port+10000 (cluster bus) is free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        ports = {port, port + 10000} if with_bus else {port}
        if ports & _taken_ports:
            continue
        if with_bus and (port + 10000 >= 65536 or not _bindable(port + 10000)):
            continue
        _taken_ports.update(ports)
        return port
    raise RuntimeError("no free port found")  # pragma: no cover


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("PYAI_CACHING_REQUIRE_REDIS") == "1":
            pytest.fail(f"{name} is required (PYAI_CACHING_REQUIRE_REDIS=1) but not installed")
        pytest.skip(f"{name} not installed (install Redis to run the Redis topology tests)")
    return path


def _command(port: int, *args: Any) -> Any:
    """One command on a fresh connection, reply as the server sent it (decoded, no redis-py reply parsing).

    Short timeouts and no retries: the waits poll instead. Error replies raise `redis.ResponseError`.
    """
    connection = redis.Connection(
        host=HOST,
        port=port,
        protocol=2,  # flat RESP2 replies (redis-py 8 defaults to RESP3 maps)
        decode_responses=True,
        socket_timeout=3,
        socket_connect_timeout=3,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        connection.send_command(*args)
        return connection.read_response()
    finally:
        connection.disconnect()


def _pairs(reply: Sequence[Any]) -> dict[str, str]:
    """A flat [key, value, key, value, ...] reply (SENTINEL MASTER / REPLICAS entries) as a dict."""
    return {str(reply[i]): str(reply[i + 1]) for i in range(0, len(reply) - 1, 2)}


def _fields(text: str) -> dict[str, str]:
    """`key:value` lines (INFO, CLUSTER INFO) as a dict."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            fields[key.strip()] = value.strip()
    return fields


def _info(port: int, section: str) -> dict[str, str]:
    return _fields(_command(port, "INFO", section))


def _pong(port: int) -> bool:
    return _command(port, "PING") == "PONG"


def _accepts_writes(port: int) -> bool:
    ok = _command(port, "SET", _PROBE_KEY, "1") == "OK"
    _command(port, "DEL", _PROBE_KEY)
    return ok


# --- sentinel ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SentinelSetup:
    """A running master + replica + three sentinels.

    `master_port` / `replica_port` are the roles the data nodes were *started* with; they swap on `failover()`. Ask
    `master_address()` / `replica_addresses()` for the current roles.
    """

    service_name: str
    sentinel_ports: list[int]
    master_port: int
    replica_port: int
    _processes: dict[int, _Process] = field(repr=False, compare=False)

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service_name}/0"

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of the sentinels, as `redis.sentinel.Sentinel(...)` takes them."""
        return [(HOST, port) for port in self.sentinel_ports]

    # What the sentinels report.

    def _reported_master(self, sentinel_port: int) -> tuple[str, int] | None:
        reply = _command(sentinel_port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name)
        return (str(reply[0]), int(reply[1])) if reply else None

    def master_address(self) -> tuple[str, int]:
        """(host, port) of the master, as the first sentinel that answers reports it."""
        errors = []
        for port in self.sentinel_ports:
            try:
                address = self._reported_master(port)
            except (redis.RedisError, OSError) as error:
                errors.append(error)
                continue
            if address is not None:
                return address
        _fail(f"no sentinel reports a master for {self.service_name!r} ({errors})", self._sentinels())

    def _reported_replicas(self, sentinel_port: int) -> list[tuple[str, int]]:
        replicas = [_pairs(reply) for reply in _command(sentinel_port, "SENTINEL", "REPLICAS", self.service_name)]
        return sorted((r["ip"], int(r["port"])) for r in replicas if r.get("flags") == "slave")

    def replica_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of the replicas the first answering sentinel considers healthy (flags exactly `slave`:
        connected, not down). A killed master stays listed by the sentinels, as down, so it is not included."""
        errors = []
        for port in self.sentinel_ports:
            try:
                return self._reported_replicas(port)
            except (redis.RedisError, OSError) as error:
                errors.append(error)
        _fail(f"no sentinel answers ({errors})", self._sentinels())

    # Moving the master.

    def failover(self) -> tuple[str, int]:
        """Force a failover (SENTINEL FAILOVER) and wait until it is done; returns the new master's address.

        Done means: every sentinel reports the former replica as master, it accepts writes, the former master
        replicates from it (link up) and every sentinel lists the former master as a healthy replica (so
        `replica_addresses()` shows it). Sentinel itself demotes the former master only some 8 s after the switch;
        the harness sends it the same REPLICAOF at once, so the topology is master + in-sync replica again on return.
        (The sentinels' own record of a replica's link status and master may lag up to 10 s, their INFO period.)
        """
        old = self.master_address()
        old_process = self._processes.get(old[1])
        data_ports = {self.master_port, self.replica_port} - {old[1]}
        if not any(self._processes[port].running for port in data_ports):
            _fail(f"failover(): no replica left to promote (after kill_master?); master is {old[0]}:{old[1]}", self._all())
        sentinel = self.sentinel_ports[0]

        def requested() -> bool:
            try:
                _command(sentinel, "SENTINEL", "FAILOVER", self.service_name)
            except redis.ResponseError as error:  # NOGOODSLAVE until the sentinel sees a healthy replica
                if "INPROG" in str(error):
                    return True
                raise
            return True

        _wait_for("SENTINEL FAILOVER to be accepted", requested, self._all())
        new = self._wait_for_new_master(old)
        if old_process is not None and old_process.running:

            def demoted() -> bool:
                info = _info(old[1], "replication")
                if info.get("role") == "master":
                    _command(old[1], "REPLICAOF", new[0], str(new[1]))
                    return False
                return (
                    info.get("master_port") == str(new[1]) and info.get("master_link_status") == "up"
                )

            _wait_for(f"the former master {old[0]}:{old[1]} to replicate from {new[0]}:{new[1]}", demoted, self._all())
            _wait_for(
                f"every sentinel to list {old[0]}:{old[1]} as a healthy replica",
                lambda: all(old in self._reported_replicas(port) for port in self.sentinel_ports),
                self._all(),
            )
        return new

    def kill_master(self) -> tuple[str, int]:
        """SIGKILL the master process and wait until the sentinels promote the replica; returns the new address.

        The old master is gone for the rest of the session (its process is not restarted): afterwards there is one
        master and no replica, so `failover()` can no longer succeed. Detection takes down-after (1 s) plus the
        sentinels' agreement and election, a few seconds; up to ~10 s more if a failover happened in the last 10 s
        (sentinels wait 2 x failover-timeout before another automatic failover).
        """
        old = self.master_address()
        process = self._processes.get(old[1])
        if process is None or not process.running:
            _fail(f"the master {old[0]}:{old[1]} is not a running process of this setup", self._all())
        process.stop(kill=True)
        return self._wait_for_new_master(old)

    def _wait_for_new_master(self, old: tuple[str, int]) -> tuple[str, int]:
        def switched() -> tuple[str, int] | None:
            reported = {self._reported_master(port) for port in self.sentinel_ports}
            if len(reported) != 1:
                return None
            (address,) = reported
            if address is None or address == old:
                return None
            info = _info(address[1], "replication")
            return address if info.get("role") == "master" and _accepts_writes(address[1]) else None

        return _wait_for(f"the sentinels to report a new master instead of {old[0]}:{old[1]}", switched, self._all())

    # Data.

    def flushall(self) -> None:
        """FLUSHALL on the current master, then WAIT until its connected replicas have it too."""
        _, port = self.master_address()
        _command(port, "FLUSHALL")
        replicas = int(_info(port, "replication").get("connected_slaves", 0))
        if replicas:
            _command(port, "WAIT", replicas, int(TIMEOUT * 1000))

    def _sentinels(self) -> list[_Process]:
        return [self._processes[port] for port in self.sentinel_ports]

    def _all(self) -> list[_Process]:
        """The processes still worth watching (a killed master is not)."""
        return [process for process in self._processes.values() if process.popen is not None and process.running]


def _sentinel_config(directory: Path, port: int, master_port: int, service_name: str) -> Path:
    config = directory / "sentinel.conf"  # sentinel rewrites it (myid, epochs, known replicas and sentinels)
    config.write_text(
        "\n".join(
            [
                f"port {port}",
                f"bind {HOST}",
                f'dir "{directory}"',
                "sentinel resolve-hostnames no",
                "sentinel announce-hostnames no",
                f"sentinel monitor {service_name} {HOST} {master_port} 2",
                f"sentinel down-after-milliseconds {service_name} 1000",
                f"sentinel failover-timeout {service_name} 5000",
                "",
            ]
        )
    )
    return config


def _data_node_args(binary: str, port: int, directory: Path) -> list[str]:
    return [
        binary,
        "--bind", HOST,
        "--port", str(port),
        "--dir", str(directory),
        "--save", "",
        "--appendonly", "no",
        "--repl-diskless-sync-delay", "0",  # Redis 7 would wait 5 s before a full sync
    ]


@contextmanager
def sentinel_topology(directory: Path, *, service_name: str = SERVICE_NAME) -> Iterator[SentinelSetup]:
    """Start master, replica and three sentinels under `directory`; stop them all on exit."""
    binary = _binary("redis-server")
    processes = _Processes()
    try:
        master_port, replica_port = _free_port(), _free_port()
        master_dir, replica_dir = directory / "master", directory / "replica"
        master_dir.mkdir()
        replica_dir.mkdir()
        master = processes.start(_Process("master", _data_node_args(binary, master_port, master_dir), master_dir, master_port))
        _wait_for("the master to answer PING", lambda: _pong(master_port), [master])
        replica = processes.start(
            _Process(
                "replica",
                [*_data_node_args(binary, replica_port, replica_dir), "--replicaof", HOST, str(master_port)],
                replica_dir,
                replica_port,
            )
        )
        # The sentinels start after the replica is in sync: their first INFO of the master then lists it already
        # (otherwise they would only learn about it at the next INFO, 10 s later).
        _wait_for(
            "the replica to sync (master_link_status:up)",
            lambda: _info(replica_port, "replication").get("master_link_status") == "up",
            [master, replica],
        )
        sentinel_ports = [_free_port() for _ in range(3)]
        sentinels = []
        for number, port in enumerate(sentinel_ports, 1):
            sentinel_dir = directory / f"sentinel{number}"
            sentinel_dir.mkdir()
            config = _sentinel_config(sentinel_dir, port, master_port, service_name)
            sentinels.append(
                processes.start(_Process(f"sentinel{number}", [binary, str(config), "--sentinel"], sentinel_dir, port))
            )
        setup = SentinelSetup(
            service_name=service_name,
            sentinel_ports=sentinel_ports,
            master_port=master_port,
            replica_port=replica_port,
            _processes={process.port: process for process in [master, replica, *sentinels]},
        )

        def sentinel_ready(port: int) -> bool:
            state = _pairs(_command(port, "SENTINEL", "MASTER", service_name))
            if (state.get("ip"), state.get("port"), state.get("flags")) != (HOST, str(master_port), "master"):
                return False
            if int(state.get("num-other-sentinels", 0)) != 2 or int(state.get("num-slaves", 0)) < 1:
                return False
            replicas = [_pairs(reply) for reply in _command(port, "SENTINEL", "REPLICAS", service_name)]
            return any(
                r.get("port") == str(replica_port) and r.get("flags") == "slave" and r.get("master-link-status") == "ok"
                for r in replicas
            )

        _wait_for(
            "the sentinels to report the master, the replica and each other",
            lambda: all(sentinel_ready(port) for port in sentinel_ports),
            processes.all,
        )
        yield setup
    finally:
        processes.stop_all()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    """Master + replica + three sentinels (`mymaster`) for the whole session; see `SentinelSetup`."""
    _binary("redis-server")
    with sentinel_topology(tmp_path_factory.mktemp("redis-sentinel")) as setup:
        yield setup


@pytest.fixture
def redis_sentinel_clean(redis_sentinel: SentinelSetup) -> SentinelSetup:
    """`redis_sentinel`, emptied (FLUSHALL on the current master) before the test."""
    redis_sentinel.flushall()
    return redis_sentinel


# --- cluster -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterSetup:
    """Three running cluster masters (no replicas) covering all 16384 slots."""

    ports: list[int]
    _processes: list[_Process] = field(repr=False, compare=False)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{port}" for port in self.ports)

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(HOST, port) for port in self.ports]

    def restart_node(self, index: int) -> None:
        """Stop node `index` (SIGTERM, wait) and start it again on the same port and directory.

        The node reloads its nodes.conf, so it keeps its node id and slots, but its data is gone (no RDB, no AOF).
        Returns once every node reports cluster_state:ok and sees all nodes connected and none failing.
        """
        process = self._processes[index]
        process.stop()
        process.start()
        _wait_for(f"cluster node {index} to answer PING again", lambda: _pong(process.port), [process])
        _wait_for_cluster(self._processes)

    def flushall(self) -> None:
        """FLUSHALL on every node."""
        for port in self.ports:
            _command(port, "FLUSHALL")


def _cluster_node_ok(port: int, count: int) -> bool:
    info = _fields(_command(port, "CLUSTER", "INFO"))
    if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
        return False
    if info.get("cluster_known_nodes") != str(count):
        return False
    nodes = [line.split() for line in str(_command(port, "CLUSTER", "NODES")).splitlines() if line.strip()]
    return len(nodes) == count and all(
        node[7] == "connected" and not {"fail", "fail?", "handshake", "noaddr"} & set(node[2].split(","))
        for node in nodes
    )


def _wait_for_cluster(processes: Sequence[_Process]) -> None:
    _wait_for(
        "cluster_state:ok on every node (all slots served, all nodes connected)",
        lambda: all(_cluster_node_ok(process.port, len(processes)) for process in processes),
        processes,
    )


@contextmanager
def cluster_topology(directory: Path, *, nodes: int = 3) -> Iterator[ClusterSetup]:
    """Start `nodes` cluster masters under `directory` and join them; stop them all on exit."""
    binary = _binary("redis-server")
    cli = _binary("redis-cli")
    processes = _Processes()
    try:
        ports = [_free_port(with_bus=True) for _ in range(nodes)]
        started = []
        for index, port in enumerate(ports):
            node_dir = directory / f"node{index}"
            node_dir.mkdir()
            args = [
                binary,
                "--bind", HOST,
                "--port", str(port),
                "--dir", str(node_dir),
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000",
                "--appendonly", "no",
                "--save", "",
            ]
            started.append(processes.start(_Process(f"node{index}", args, node_dir, port)))
        for process in started:
            _wait_for(f"{process.name} to answer PING", lambda port=process.port: _pong(port), started)
        create = processes.start(
            _Process(
                "cluster-create",
                [cli, "--cluster", "create", *(f"{HOST}:{port}" for port in ports), "--cluster-replicas", "0", "--cluster-yes"],
                directory,
                0,
            )
        )
        assert create.popen is not None
        try:
            returncode = create.popen.wait(timeout=TIMEOUT * 2)
        except subprocess.TimeoutExpired:
            create.stop(kill=True)
            _fail("redis-cli --cluster create did not finish", [create, *started])
        if returncode != 0:
            _fail(f"redis-cli --cluster create exited with {returncode}", [create, *started])
        _wait_for_cluster(started)
        yield ClusterSetup(ports=ports, _processes=started)
    finally:
        processes.stop_all()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSetup]:
    """Three cluster masters for the whole session; see `ClusterSetup`."""
    _binary("redis-server")
    _binary("redis-cli")
    with cluster_topology(tmp_path_factory.mktemp("redis-cluster")) as setup:
        yield setup


@pytest.fixture
def redis_cluster_clean(redis_cluster: ClusterSetup) -> ClusterSetup:
    """`redis_cluster`, emptied (FLUSHALL on every node) before the test."""
    redis_cluster.flushall()
    return redis_cluster
