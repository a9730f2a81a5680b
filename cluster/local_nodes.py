"""A multi-node Ray cluster on one machine, made of real ``ray start`` processes.

Used by the multi-node tests and for trying the cluster path without containers. Each node is a
separate ``ray start --block`` process with its own CPUs, custom resources and ports, so tasks
really cross node boundaries (distinct node ids, separate raylets and object stores).

``ray stop`` would kill every Ray on the machine, including other people's; this module stops
only what it started. Each node's ``ray start`` runs as the leader of a new session, and every
process of that node (GCS, raylet, agents, workers, which rename themselves ``ray::...`` and
each take a process group of their own) stays in that session: stopping a node ends its
``ray start`` (whose exit handler tears the node down) and then kills whatever is left in the
session, and nothing else.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .local import free_port, ray_executable

__all__ = ["LocalNode", "LocalRayCluster", "free_port"]

READY_LINE = "Ray runtime started"


@dataclass
class LocalNode:
    name: str
    process: subprocess.Popen
    log_path: Path
    node_manager_port: int
    resources: dict[str, float] = field(default_factory=dict)
    agent_port: int = 0  # the dashboard agent's HTTP port: its health endpoint says the node is up
    log_offset: int = 0  # where this attempt's output starts in a log shared with failed attempts

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


class LocalRayCluster:
    """A head and any number of extra nodes on 127.0.0.1, under one private temp dir."""

    def __init__(self, root: Path | None = None, ready_timeout_s: float = 180.0, start_attempts: int = 3) -> None:
        # A root the caller gives keeps the logs after shutdown; one made here is removed then.
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="geonas-ray-"))
        # Ray puts unix sockets under the temp dir; their paths must stay under ~107 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rn", dir="/tmp"))
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.ready_timeout_s = ready_timeout_s
        self.start_attempts = start_attempts
        self.nodes: list[LocalNode] = []
        # Token auth on, with a token of this cluster's own: `ray start` turns auth on only when
        # told to (or when ~/.ray/auth_token exists, which other Rays on this machine share).
        self.auth_token = secrets.token_hex(32)
        self._env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self._env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.auth_token)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def client_env(self) -> dict[str, str]:
        """What a driver, job client or API process needs in its environment to use this cluster."""
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.auth_token}

    def start_head(self, num_cpus: int = 1, resources: dict[str, float] | None = None) -> LocalNode:
        def role_args() -> list[str]:
            return [
                "--head",
                f"--port={self.gcs_port}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
            ]

        def fresh_ports() -> None:
            # A head that failed may hold its ports (or a half-started GCS) for a while.
            self.gcs_port, self.dashboard_port = free_port(), free_port()

        return self._start("head", role_args, num_cpus, resources, before_retry=fresh_ports)

    def add_node(self, name: str, num_cpus: int = 1, resources: dict[str, float] | None = None) -> LocalNode:
        if not self.nodes:
            raise RuntimeError("start_head() first: a node joins an existing head")
        return self._start(name, lambda: [f"--address={self.address}"], num_cpus, resources)

    def _start(
        self,
        name: str,
        role_args: Callable[[], list[str]],
        num_cpus: int,
        resources: dict[str, float] | None,
        before_retry: Callable[[], None] | None = None,
    ) -> LocalNode:
        """Start a node; retry a node that died starting (Ray gives a raylet 30 s to register,
        which an overloaded machine can miss), with fresh ports, after killing what it left."""
        for attempt in range(1, self.start_attempts + 1):
            node = self._launch(name, role_args(), num_cpus, resources)
            try:
                self._wait_ready(node)
                return node
            except RuntimeError:
                self.nodes.remove(node)
                self.kill_node(node)
                if attempt == self.start_attempts:
                    raise
                if before_retry is not None:
                    before_retry()
        raise AssertionError("unreachable")

    def _launch(self, name: str, role_args: list[str], num_cpus: int, resources: dict[str, float] | None) -> LocalNode:
        node_manager_port, agent_port = free_port(), free_port()
        log_path = self.root / f"{name}.log"
        command = [
            ray_executable(),
            "start",
            "--block",
            *role_args,
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={self.temp_dir}",
            f"--num-cpus={num_cpus}",
            f"--resources={json.dumps(resources or {})}",
            f"--node-manager-port={node_manager_port}",
            f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={agent_port}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            # No log monitor: nothing here streams worker output to drivers, one process less.
            "--include-log-monitor=false",
            "--disable-usage-stats",
            "--log-style=record",
        ]
        with open(log_path, "ab") as log:
            # A new session: signals for this node never reach pytest or the other nodes.
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self._env, start_new_session=True
            )
        node = LocalNode(name, process, log_path, node_manager_port, dict(resources or {}), agent_port)
        node.log_offset = log_path.stat().st_size if log_path.exists() else 0
        self.nodes.append(node)
        return node

    def _wait_ready(self, node: LocalNode) -> None:
        """Ready = `ray start` says so and the node's agent answers its health check. Waiting for
        the agent too keeps node starts from overlapping, which on a busy machine can make the
        next raylet miss its 30 s registration window."""
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            started = READY_LINE in node.log_path.read_text(errors="replace")[node.log_offset :]
            if started and _healthy(f"http://127.0.0.1:{node.agent_port}/api/local_raylet_healthz"):
                return
            if not node.alive:
                break
            time.sleep(0.5)
        tail = node.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"ray node {node.name!r} did not start; its log ends:\n{tail}")

    def node_ids(self) -> dict[str, str]:
        """Node name -> Ray node id of the live nodes, from the dashboard's state API.

        A node is recognised by its custom resources, so give each node one of its own.
        """
        request = urllib.request.Request(
            f"{self.dashboard_url}/api/v0/nodes?limit=1000",
            headers={"Authorization": f"Bearer {self.auth_token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            listed = json.loads(answer.read())["data"]["result"]["result"]
        found = {}
        for node in self.nodes:
            for entry in listed:
                if (
                    entry.get("state") == "ALIVE"
                    and node.resources
                    and node.resources.keys() <= set(entry.get("resources_total", {}))
                ):
                    found[node.name] = entry["node_id"]
        return found

    def stop_node(self, node: LocalNode, timeout_s: float = 40.0) -> None:
        """Stop one node the way an operator would: Ray drains it (up to 30 s for running tasks)
        and its ``ray start`` process tears down its raylet and workers."""
        if node.alive:
            node.process.send_signal(signal.SIGTERM)
            try:
                node.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass  # the sweep below kills it
        _kill_session(node.process.pid)
        node.process.wait(timeout_s)

    def kill_node(self, node: LocalNode) -> None:
        """Lose one node the way a crashed machine does: every process of it killed at once, no
        draining, so whatever ran there fails and the cluster only learns it from missed heartbeats."""
        _kill_session(node.process.pid)
        node.process.wait()

    def shutdown(self, grace_s: float = 40.0) -> None:
        """Stop the extra nodes, then the head, then anything of this cluster still running.

        Each node gets ``grace_s`` to drain before what is left of it is killed (a caller that knows
        nothing runs any more, like the demo at its end, need not wait). With a ``root`` from the
        caller, Ray's own logs (job drivers, raylets, workers) are kept under ``root/ray-logs`` for
        reading after a failure; otherwise the root goes too. The temp dir with its sockets and object
        spill files always goes.
        """
        # All nodes drain at once rather than one after another (up to 30 s each).
        for node in reversed(self.nodes):
            if node.alive:
                node.process.send_signal(signal.SIGTERM)
        for node in reversed(self.nodes):
            self.stop_node(node, timeout_s=grace_s)
        logs = self.temp_dir / "session_latest" / "logs"
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
        elif logs.is_dir():
            shutil.copytree(logs, self.root / "ray-logs", dirs_exist_ok=True, ignore_dangling_symlinks=True)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalRayCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status == 200
    except OSError:  # URLError, HTTPError and timeouts are all OSErrors
        return False


def _kill_session(session_id: int) -> None:
    """SIGKILL every process in the session ``session_id`` (a node's ``ray start`` leads one)."""
    for _ in range(3):  # a process may fork while we sweep; sweep until the session is empty
        members = [pid for pid in _pids() if _session_of(pid) == session_id and pid != os.getpid()]
        if not members:
            return
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _session_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[3])
