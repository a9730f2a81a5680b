"""Where a bench result came from: the commit that made it (``-dirty`` when tracked files differ from
it), the command as typed and the machine it ran on. Every ``bench/results/*.json`` carries all three
(``stamp`` adds them); results made by code that no longer exists move to ``bench/results/history/``.

Imports nothing beyond the standard library: ``bench/gpu_check.py`` runs it on machines without Ray
(and, from a copied tree, without git: the commit is then ``unknown``)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["git_commit", "machine", "stamp"]


def git_commit(root: Path = ROOT) -> str:
    """HEAD's hash in ``root``, with ``-dirty`` when a tracked file there has uncommitted changes;
    ``unknown`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, object]:
    """Host, CPU model, usable CPUs and Python: enough to tell two machines' figures apart."""
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"host": platform.node(), "cpu": cpu, "cpus": cpus, "python": platform.python_version()}


def stamp(result: dict, commit: str | None = None) -> dict:
    """``result`` with ``commit`` (this tree's unless given), ``command`` (as typed, from the
    interpreter's name on: ``python bench/space.py --samples 50``) and ``machine`` first."""
    command = " ".join([Path(sys.executable).name, *sys.argv])
    return {"commit": commit or git_commit(), "command": command, "machine": machine(), **result}
