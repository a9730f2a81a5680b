"""Resuming experiments, and reconciling the store with the cluster when the API starts.

A driver that dies (killed job, lost head, API machine restarted) leaves its experiment "running"
in the store. On start the API asks the Jobs API about every open experiment: a job that ended
without finishing its experiment marks it failed with the job's status, or resumes it when its spec
says ``auto_resume``. Nothing stays "running" forever.
"""

from __future__ import annotations

import logging
import re

from search_spaces.errors import ClusterError, Conflict

from .jobs import JobLauncher, SubmittedJob
from .states import State
from .store import Store

log = logging.getLogger("geonas.resume")

__all__ = ["resume", "reconcile"]

_ENDED = {"FAILED", "STOPPED", "SUCCEEDED"}


def resume(store: Store, launcher: JobLauncher, experiment_id: str, trials: int | None = None) -> SubmittedJob:
    exp = store.get_experiment(experiment_id)
    budget = int(exp.spec.get("budget", {}).get("trials", 0))
    if trials is not None and trials < budget:
        raise Conflict(f"the budget can only grow: experiment {experiment_id} already has {budget} trials")
    if exp.state in (State.RUNNING, State.PENDING) and exp.job_id:
        status = launcher.status(exp.job_id)
        if status not in _ENDED and status is not None:
            raise Conflict(f"experiment {experiment_id} is still running (job {exp.job_id} is {status})")
    if exp.state == State.COMPLETED and (trials is None or trials == budget):
        raise Conflict(f"experiment {experiment_id} is completed; give a larger `trials` to extend it")
    spec = dict(exp.spec)
    if trials is not None:
        spec["budget"] = {**spec.get("budget", {}), "trials": trials}
    attempt = _attempt(exp.job_id) + 1
    store.reopen_experiment(experiment_id, spec)
    job = launcher.submit("experiment", experiment_id, attempt=attempt)
    store.update_experiment(experiment_id, job_id=job.job_id, dashboard_url=job.dashboard_url)
    return job


def _attempt(job_id: str | None) -> int:
    """Which driver attempt a job id belongs to (``geonas-experiment-ID`` is 1, ``…-rN`` is N)."""
    match = re.search(r"-r(\d+)$", job_id or "")
    return int(match.group(1)) if match else 1


def _reachable(launcher: JobLauncher) -> bool:
    try:
        launcher._client()  # connects and checks the cluster's version; raises ClusterError if it cannot
    except ClusterError:
        return False
    return True


def reconcile(store: Store, launcher: JobLauncher) -> dict[str, str]:
    """Fix experiments whose driver job is gone; returns ``{experiment id: what was done}``."""
    done: dict[str, str] = {}
    reachable: bool | None = None
    for exp in store.list_experiments(limit=10000):
        if exp.state not in (State.RUNNING, State.PENDING):
            continue
        status = launcher.status(exp.job_id) if exp.job_id else None
        if status is not None and status not in _ENDED:
            continue  # its driver is still at work (and writes its results to the store itself)
        if status is None and exp.job_id:
            # No status is "no such job" only if the Jobs API answered: a cluster that cannot be
            # reached right now says nothing about the job, and failing a live experiment loses work.
            reachable = _reachable(launcher) if reachable is None else reachable
            if not reachable:
                log.warning("cannot reach the Ray Jobs API; experiment %s left %s", exp.id, exp.state)
                continue
        if exp.spec.get("auto_resume"):
            try:
                resume(store, launcher, exp.id)
                done[exp.id] = "resumed"
                continue
            except Exception as exc:  # noqa: BLE001 - fall through to failed, with the reason
                log.warning("auto-resume of %s failed: %s", exp.id, exc)
        reason = f"its driver job {exp.job_id} ended as {status}" if status else f"its driver job {exp.job_id} is gone"
        store.update_experiment(exp.id, state=State.FAILED, error=f"{reason} before the experiment finished")
        store.cancel_open_trials(exp.id, reason)
        done[exp.id] = "failed"
    return done
