"""Where a machine's CPUs went during a run: cores used by each kind of process, read from Linux's /proc.

A scaling figure measured on one machine shares its cores between the work and everything around it
(a local cluster's daemons, a job's driver). ``CpuUse`` samples every process's CPU time while a run
goes on and reports, per kind, the cores it used on average over the run::

    with CpuUse(KINDS) as use:
        run()
    use.cores()  # {"prediction": 1.76, "job driver": 0.06, "ray": 0.11, "this process": 0.01, "other": 0.02}

``kinds`` is an ordered list of (name, markers): a process is of the first kind one of whose markers
is in its command line; this process is ``this process`` and the rest ``other``. A process that
started during the run counts all its CPU time, one that ended counts what it used until its last
sample (``every_s``). Off Linux, ``cores()`` is None.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["CpuUse", "cpu_seconds"]

_PROC = "/proc"


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU seconds a process has used so far; OSError when it is gone."""
    stat = Path(f"{_PROC}/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 0, utime 11, stime 12
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _snapshot() -> dict[int, tuple[str, float]]:
    """Every process's (command line, CPU seconds so far: user + system)."""
    out = {}
    for entry in os.listdir(_PROC):
        if not entry.isdigit():
            continue
        try:
            cpu = cpu_seconds(entry)
            with open(f"{_PROC}/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # it ended between the listing and the read
            continue
        out[int(entry)] = (cmdline, cpu)
    return out


class CpuUse:
    """Cores used per kind of process between ``__enter__`` and ``__exit__`` (see the module note)."""

    def __init__(self, kinds: Sequence[tuple[str, Sequence[str]]], every_s: float = 0.5) -> None:
        self.kinds, self.every_s = list(kinds), every_s
        self.available = os.path.isdir(_PROC) and os.path.exists(f"{_PROC}/self/stat")
        self.first: dict[int, tuple[str, float]] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> CpuUse:
        if self.available:
            self.first = _snapshot()
            self.last = dict(self.first)
            self._start = time.monotonic()
            self._thread = threading.Thread(target=self._sample, name="cpu-use", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.last.update(_snapshot())
            self.seconds = time.monotonic() - self._start

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.last.update(_snapshot())

    def kind(self, pid: int, cmdline: str) -> str:
        if pid == os.getpid():
            return "this process"
        for name, markers in self.kinds:
            if any(marker in cmdline for marker in markers):
                return name
        return "other"

    def cores(self) -> dict[str, float] | None:
        """Average cores per kind over the run (every kind named, 0.0 when none ran), or None off Linux."""
        if not self.available or self.seconds <= 0:
            return None
        used = {name: 0.0 for name, _ in self.kinds} | {"this process": 0.0, "other": 0.0}
        for pid, (cmdline, cpu) in self.last.items():
            before = self.first.get(pid)
            if before is not None and before[0] != cmdline and before[1] > cpu:
                before = None  # a pid reused by a new process
            used[self.kind(pid, cmdline)] += cpu - (before[1] if before else 0.0)
        return {name: round(max(0.0, v) / self.seconds, 3) for name, v in used.items()}
