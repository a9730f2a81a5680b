"""Small helpers for local Ray processes: free ports, this environment's ``ray`` CLI, liveness checks."""

from __future__ import annotations

import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["free_port", "ray_executable", "dashboard_alive", "wait_for_jobs_api"]


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


def wait_for_jobs_api(dashboard_url: str, timeout: float = 180.0) -> None:
    """Block until the Jobs API answers an authenticated request (the head can be slow under load)."""
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            JobSubmissionClient(dashboard_url).list_jobs()
            return
        except Exception as exc:  # noqa: BLE001 - not ready yet, whatever the reason
            last = exc
            time.sleep(1.0)
    raise RuntimeError(f"the Ray Jobs API at {dashboard_url} did not answer within {timeout:.0f} s: {last}")
