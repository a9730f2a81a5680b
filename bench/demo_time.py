"""How long `make demo` takes from nothing, and what it prints: the first thing anyone sees.

    python bench/demo_time.py            # clones HEAD, then `make install` and `geonas demo` in the clone

It clones the committed HEAD into a temporary folder (with ``../shared`` beside it, as CI has it),
runs ``make install`` into a fresh virtual environment there (pip's own download cache is whatever
this machine has; the JSON says so) and then the demo, exactly as ``make demo`` runs them, timing
each. It writes ``bench/results/demo_time.json`` with the demo's summary lines and the two times.

Goal (issue 19): at most 5 minutes on 2 cores, install included. Exit 1 when over it; exit 2 when
the demo did not do what it claims (the experiment did not complete, no proposal broke the target,
or stage 2 registered fewer than 3 models), whatever the time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.provenance import git_commit, stamp  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GOAL_S = 300.0
SUMMARY = re.compile(r"^(latency target|stage 1|stage 2|  \S|experiment page|demo finished)")


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int, str]:
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    return time.monotonic() - started, done.returncode, done.stdout + done.stderr


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    with tempfile.TemporaryDirectory(prefix="geonas-demo-time-") as tmp:
        work = Path(tmp)
        (work / "shared").symlink_to((ROOT.parent / "shared").resolve())
        subprocess.run(["git", "clone", "-q", str(ROOT), str(work / "geonas")], check=True)
        clone = work / "geonas"
        commit = git_commit(clone)  # what ran: the clone of HEAD, whatever this working tree holds
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GEONAS_", "RAY_", "VIRTUAL_ENV"))}
        env["COLUMNS"] = "200"  # rich wraps at 80 columns when printing to a pipe
        install_s, install_rc, install_out = _timed(["make", "install"], clone, env)
        if install_rc != 0:
            print(install_out[-3000:])
            return 2
        # what `make demo` runs after its install step
        demo_s, demo_rc, demo_out = _timed([str(clone / ".venv" / "bin" / "geonas"), "demo"], clone, env)
        shutil.rmtree(clone / ".geonas", ignore_errors=True)
    summary = [line.rstrip() for line in demo_out.splitlines() if SUMMARY.match(line)]
    pruned = re.search(r"(\d+) broke the latency target", demo_out)
    models = re.search(r"stage 2: (\d+) models", demo_out)
    vacuous = []
    if demo_rc != 0:
        vacuous.append(f"the demo exited {demo_rc}")
    if not pruned or int(pruned.group(1)) == 0:
        vacuous.append("no proposal broke the latency target")
    if not models or int(models.group(1)) < 3:
        vacuous.append("stage 2 did not register the top 2 and the UNet")
    total = install_s + demo_s
    result = stamp({
        "pip_cache": "this machine's (a first install anywhere may download more)",
        "install_s": round(install_s, 1),
        "demo_s": round(demo_s, 1),
        "total_s": round(total, 1),
        "goal_s": GOAL_S,
        "met": total <= GOAL_S and not vacuous,
        "vacuous": vacuous,
        "summary": summary,
    }, commit=commit)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "demo_time.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'step':<16}{'seconds':>10}")
    for step in ("install_s", "demo_s", "total_s"):
        print(f"{step[:-2]:<16}{result[step]:>10.1f}")
    print(f"goal: at most {GOAL_S:.0f} s: {'met' if total <= GOAL_S else 'NOT met'}")
    print("\n".join(summary))
    if vacuous:
        print("the demo did not do what it claims: " + "; ".join(vacuous), file=sys.stderr)
        if demo_rc != 0:
            print(demo_out[-4000:], file=sys.stderr)
        return 2
    return 0 if total <= GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())
