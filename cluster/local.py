"""Start and stop a local Ray head (dashboard and Jobs API on loopback) as a child process.

``ray start --head --block`` runs in its own process group, so stopping it stops exactly the Ray
processes it started and no other cluster on the machine (``ray stop`` would stop them all). Every
port is picked free, so several clusters (tests, a demo, a multi-node fixture) can run side by side.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LocalCluster", "free_port", "ray_executable"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_executable() -> str:
    """The ``ray`` CLI of this interpreter's environment (never one found on PATH)."""
    candidate = Path(sys.executable).parent / "ray"
    return str(candidate) if candidate.exists() else "ray"


def dashboard_alive(url: str, timeout: float = 2.0) -> bool:
    """True when the dashboard answers HTTP at all (401 without a token still means it is up)."""
    try:
        urllib.request.urlopen(f"{url}/api/version", timeout=timeout)
        return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class LocalCluster:
    """A Ray head started on loopback; ``dashboard_url`` is what the Jobs API client talks to."""

    num_cpus: int | None = None
    resources: dict[str, float] = field(default_factory=dict)
    temp_dir: str | None = None
    gcs_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, timeout: float = 120.0) -> LocalCluster:
        import json

        self.temp_dir = self.temp_dir or tempfile.mkdtemp(prefix="gnr-", dir="/tmp")
        cmd = [
            ray_executable(),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={self.gcs_port}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
        ]
        if self.num_cpus is not None:
            cmd.append(f"--num-cpus={self.num_cpus}")
        if self.resources:
            cmd.append(f"--resources={json.dumps(self.resources)}")
        log = open(Path(self.temp_dir) / "ray-start.log", "wb")  # noqa: SIM115 - lives with the process
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        self.process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                text = (Path(self.temp_dir) / "ray-start.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"ray start exited with {self.process.returncode}:\n{text}")
            if dashboard_alive(self.dashboard_url) and self._jobs_ready():
                return self
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"the local Ray head did not come up within {timeout:.0f} s")

    def _jobs_ready(self) -> bool:
        try:
            from ray.job_submission import JobSubmissionClient

            JobSubmissionClient(self.dashboard_url).list_jobs()
            return True
        except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
            return False

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
