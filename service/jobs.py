"""Submitting and stopping experiment drivers as Ray Jobs (the Jobs API on the dashboard's address)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from search_spaces.errors import ClusterError

from .settings import Settings

__all__ = ["JobLauncher", "SubmittedJob"]


@dataclass(frozen=True)
class SubmittedJob:
    job_id: str
    dashboard_url: str


class JobLauncher:
    """Runs ``python -m service.driver ID`` on the cluster with this installation's interpreter."""

    def __init__(self, dashboard_url: str, settings: Settings) -> None:
        self.dashboard_url = dashboard_url
        self.settings = settings

    def _client(self):
        from ray.job_submission import JobSubmissionClient

        try:
            return JobSubmissionClient(self.dashboard_url)
        except Exception as exc:  # noqa: BLE001 - any failure here means the cluster is unreachable
            raise ClusterError(
                f"cannot reach the Ray Jobs API at {self.dashboard_url}: {exc}. "
                "Is the cluster up, and does RAY_ADDRESS point at its dashboard (http://HEAD:8265)?"
            ) from None

    def _env(self) -> dict[str, str]:
        """What the driver needs to find the store and storage.

        A database URL with a password is *not* passed: a job's runtime environment is shown in the
        Ray dashboard. Clusters give such secrets to their nodes' environment instead (compose
        ``.env``, a Kubernetes Secret), and the driver reads them from there.
        """
        from sqlalchemy.engine import make_url

        s = self.settings
        env = {
            "GEONAS_STORAGE_PATH": s.resolved_storage_path,
            "GEONAS_HOME": str(s.home.resolve()),
            "PYTHONUNBUFFERED": "1",
        }
        if make_url(s.resolved_database_url).password is None:
            env["GEONAS_DATABASE_URL"] = s.resolved_database_url
        return env

    def submit(self, kind: str, resource_id: str, module: str = "service.driver", attempt: int = 1) -> SubmittedJob:
        submission_id = f"geonas-{kind}-{resource_id}" + (f"-r{attempt}" if attempt > 1 else "")
        try:
            job_id = self._client().submit_job(
                # The cluster's PATH may hold another python: use this interpreter explicitly.
                entrypoint=f"{sys.executable} -m {module} {resource_id}",
                submission_id=submission_id,
                runtime_env={"env_vars": self._env()},
                metadata={"geonas_kind": kind, "geonas_id": resource_id},
            )
        except ClusterError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ClusterError(f"the Ray cluster refused job {submission_id}: {exc}") from None
        return SubmittedJob(job_id=job_id, dashboard_url=f"{self.dashboard_url}/#/jobs/{job_id}")

    def stop(self, job_id: str) -> bool:
        try:
            return bool(self._client().stop_job(job_id))
        except Exception:  # noqa: BLE001 - a job that is gone is stopped
            return False

    def status(self, job_id: str) -> str | None:
        try:
            return str(self._client().get_job_status(job_id))
        except Exception:  # noqa: BLE001
            return None
