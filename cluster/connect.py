"""Which Ray cluster geonas talks to: ``RAY_ADDRESS`` when set, else a local head it starts.

The control plane only submits Ray Jobs, so what it needs is the Jobs API (the dashboard's HTTP
address). ``RAY_ADDRESS`` may be that URL (``http://head:8265``) or a GCS address (``head:6379``),
in which case the dashboard is assumed on port 8265 of the same host. A local head gets a token of
its own (token auth stays on); it is written to a file next to geonas' other state so a browser can
be given it once.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from .local import wait_for_jobs_api
from .local_nodes import LocalRayCluster

__all__ = ["ClusterInfo", "connect", "jobs_url", "DASHBOARD_TOKEN_NOTE"]

DASHBOARD_TOKEN_NOTE = (
    "the dashboard uses token authentication: run `ray get-auth-token` on the head node "
    "and enter the token once in the browser"
)


@dataclass(frozen=True)
class ClusterInfo:
    dashboard_url: str
    address: str | None
    local: LocalRayCluster | None = None
    token_file: Path | None = None

    @property
    def token_note(self) -> str:
        if self.token_file is not None:
            return f"the dashboard asks for a token once: it is in {self.token_file}"
        return DASHBOARD_TOKEN_NOTE

    def stop(self, grace_s: float = 40.0) -> None:
        """Stop the local head this process started (``grace_s``: how long it may drain)."""
        if self.local is not None:
            self.local.shutdown(grace_s)


def jobs_url(ray_address: str) -> str:
    if ray_address.startswith(("http://", "https://")):
        return ray_address.rstrip("/")
    host = ray_address.removeprefix("ray://").split(":")[0] or "127.0.0.1"
    return f"http://{host}:8265"


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into a normal exit (atexit handlers and ``finally`` blocks run), unless the
    program installed a handler of its own or this is not the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def connect(ray_address: str | None, num_cpus: int | None = None, home: Path | None = None) -> ClusterInfo:
    """Use the cluster at ``ray_address``, or start a local head that lives as long as this process."""
    if ray_address:
        return ClusterInfo(dashboard_url=jobs_url(ray_address), address=ray_address)
    cluster = LocalRayCluster()
    cluster.start_head(num_cpus=num_cpus or os.cpu_count() or 1)
    atexit.register(cluster.shutdown)
    _exit_on_sigterm()  # a plain `kill` of this process must not leave the head running
    # This process (the API) must present the cluster's token to the Jobs API.
    env = cluster.client_env()
    os.environ["RAY_AUTH_MODE"], os.environ["RAY_AUTH_TOKEN"] = env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN"]
    token_file = None
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
        token_file = home.resolve() / "ray-auth-token"
        token_file.write_text(cluster.auth_token)
        token_file.chmod(0o600)
    wait_for_jobs_api(cluster.dashboard_url)
    return ClusterInfo(cluster.dashboard_url, cluster.address, local=cluster, token_file=token_file)
