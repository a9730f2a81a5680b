"""Which Ray cluster geonas talks to: ``RAY_ADDRESS`` when set, else a local head it starts.

The control plane only submits Ray Jobs, so what it needs is the Jobs API (the dashboard's HTTP
address). ``RAY_ADDRESS`` may be that URL (``http://head:8265``) or a GCS address (``head:6379``),
in which case the dashboard is assumed on port 8265 of the same host.
"""

from __future__ import annotations

import atexit
from dataclasses import dataclass

from .local import LocalCluster

__all__ = ["ClusterInfo", "connect", "jobs_url"]

DASHBOARD_TOKEN_NOTE = (
    "The Ray dashboard uses token authentication: run `ray get-auth-token` on the head node "
    "and enter the token once in the browser."
)


@dataclass(frozen=True)
class ClusterInfo:
    dashboard_url: str
    address: str | None
    local: LocalCluster | None = None


def jobs_url(ray_address: str) -> str:
    if ray_address.startswith(("http://", "https://")):
        return ray_address.rstrip("/")
    if ray_address.startswith("ray://"):
        host = ray_address.removeprefix("ray://").split(":")[0]
        return f"http://{host}:8265"
    host = ray_address.split(":")[0] or "127.0.0.1"
    return f"http://{host}:8265"


def connect(ray_address: str | None, num_cpus: int | None = None) -> ClusterInfo:
    """Use the cluster at ``ray_address``, or start a local head that lives as long as this process."""
    if ray_address:
        return ClusterInfo(dashboard_url=jobs_url(ray_address), address=ray_address)
    cluster = LocalCluster(num_cpus=num_cpus).start()
    atexit.register(cluster.stop)
    return ClusterInfo(dashboard_url=cluster.dashboard_url, address=cluster.address, local=cluster)
