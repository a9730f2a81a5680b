"""API load: leaderboard and trial-list queries over 100k trials at 50 concurrent clients.

For each backend (a SQLite file; a PostgreSQL server from the OS package, started on loopback as the
tests do), the script bulk-inserts 100 experiments × 1000 trials, starts the API with uvicorn on
127.0.0.1 in a subprocess (auth on, one admin token; rate limit off, since one token makes all the
load), and runs 50 concurrent clients that alternate ``GET /v1/leaderboard`` and a random page of
``GET /v1/experiments/{id}/trials`` for a fixed time. A few more clients submit experiments at the
same time, through a launcher that only records the submission (a stand-in for the Ray Jobs API):
every 201 must be an experiment in the store with its job id, and the launcher's count must match.

Writes ``bench/results/api_load.json``: ``{"commit", "command", "machine", "sqlite": {"p50_ms",
"p99_ms", "rps", ...}, "postgresql": {...}, "setup": {...}}``. The client and the server share the
machine's cores (``setup.load`` has its load average at the end): the numbers are end-to-end under
that contention, not the server alone.

Run::

    .venv/bin/python bench/api_load.py [--seconds 20] [--clients 50] [--trials 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/pg.py: the PostgreSQL server the tests use

from bench.cpu_use import cpu_seconds  # noqa: E402
from bench.provenance import stamp  # noqa: E402


class RecordingLauncher:
    """Accepts every submission and appends it to a file; nothing runs (no cluster in this bench)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def submit(self, kind: str, resource_id: str, module: str = "service.driver"):
        from service.jobs import SubmittedJob

        with self.path.open("a") as fh:
            fh.write(f"{kind} {resource_id}\n")
        return SubmittedJob(job_id=f"bench-{resource_id}", dashboard_url="http://127.0.0.1:8265")

    def stop(self, job_id: str) -> bool:
        return True

    def status(self, job_id: str) -> str | None:
        return "RUNNING"


def bench_app():
    """The app each server process serves (a uvicorn factory, so ``--workers`` can start several): the
    real app on the bench database, with the recording launcher. Configured by the environment."""
    from service.app import create_app
    from service.settings import Settings

    url, home, record = (os.environ[k] for k in ("BENCH_DB_URL", "BENCH_HOME", "BENCH_RECORD"))
    settings = Settings(home=Path(home), database_url=url, auth=True, rate_limit_per_s=0)
    return create_app(settings, launcher=RecordingLauncher(Path(record)))


def serve(url: str, port: int, home: str, record: str, workers: int) -> None:
    """The server process: uvicorn on loopback, one process or ``workers`` worker processes."""
    import uvicorn

    os.environ.update(BENCH_DB_URL=url, BENCH_HOME=home, BENCH_RECORD=record)
    uvicorn.run(
        "api_load:bench_app",
        factory=True,
        app_dir=str(Path(__file__).parent),
        workers=workers,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        # keep-alive longer than any pause of a client, so no request races the server closing its socket
        timeout_keep_alive=120,
    )


def seed(url: str, experiments: int, per_experiment: int) -> tuple[list[str], str]:
    """Bulk-insert the trials (Core executemany, not the ORM) and make an admin token."""
    from sqlalchemy import insert

    from service.auth import create_token
    from service.store import Experiment, Store, Trial

    store = Store(url)
    rng = random.Random(0)
    start = datetime(2026, 1, 1)
    exp_rows = [
        {
            "id": f"exp{e:05d}",
            "name": f"bench-{e}",
            "state": "completed",
            "spec": {"budget": {"trials": per_experiment}},
            "owner": "bench",
            "created_at": start + timedelta(minutes=e),
            "updated_at": start + timedelta(minutes=e),
        }
        for e in range(experiments)
    ]
    states = ["completed"] * 8 + ["pruned", "failed"]
    with store.engine.begin() as conn:
        conn.execute(insert(Experiment.__table__), exp_rows)
        for e in range(experiments):
            rows = []
            for t in range(per_experiment):
                state = rng.choice(states)
                created = start + timedelta(minutes=e, seconds=t)
                miou = round(rng.uniform(0.2, 0.8), 4) if state == "completed" else None
                rows.append(
                    {
                        "id": f"exp{e:05d}-{t:05d}",
                        "experiment_id": f"exp{e:05d}",
                        "stage": 1,
                        "kind": "searched",
                        "state": state,
                        "arch_hash": f"{rng.getrandbits(64):016x}",
                        "arch": {"cells": [[0, 1, "sum", 3]] * 4, "channels": 64},
                        "epoch": 3,
                        "miou": miou,
                        "latency_ms": round(rng.uniform(2, 60), 3),
                        "latency_device": "cpu-1threads",
                        "params": rng.randint(10**5, 10**7),
                        "reward": miou,
                        "error": "boom" if state == "failed" else None,
                        "node_id": "node0",
                        "history": [{"epoch": i, "miou": miou} for i in range(1, 4)],
                        "created_at": created,
                        "updated_at": created + timedelta(seconds=rng.uniform(30, 600)),
                    }
                )
            conn.execute(insert(Trial.__table__), rows)
    if store.engine.dialect.name == "postgresql":
        # VACUUM too: after a bulk load, autovacuum would otherwise start on the new rows mid-run; and
        # CHECKPOINT: else the checkpointer writes the load's dirty pages during the first seconds measured
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
            conn.exec_driver_sql("CHECKPOINT")
    else:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    token = create_token(store, "bench", admin=True)
    store.engine.dispose()
    return [r["id"] for r in exp_rows], token


def _cpu_s(pid: int) -> float:
    """User+system CPU seconds a process and its live children (uvicorn workers) have used (Linux
    /proc), to separate what a request costs from the waiting for a CPU on a shared machine."""
    try:
        own = cpu_seconds(pid)
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    return own + sum(_cpu_s(int(child)) for child in children)


def _worker_cpu_s(pid: int) -> list[float]:
    """CPU seconds of each live child of ``pid`` (uvicorn's worker processes), for the balance between them."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [_cpu_s(int(child)) for child in children]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def load(
    base: str,
    token: str,
    exp_ids: list[str],
    per_exp: int,
    clients: int,
    seconds: float,
    dataset: str,
    submitters: int = 3,
) -> dict:
    # aiohttp, not httpx: the load generator shares the 2 cores with the server, and httpx cost ~9 ms
    # of client CPU per request here (more than the server), aiohttp about a tenth of that.
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    stamped: list[tuple[float, float]] = []  # (start, latency): when in the run the slow requests were
    by_kind: dict[str, list[float]] = {"leaderboard": [], "trials": []}
    errors: list[str] = []
    created: list[str] = []
    refused: list[int] = []
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients + 8, keepalive_timeout=120)
    timeout = aiohttp.ClientTimeout(total=60)

    async with aiohttp.ClientSession(base, headers=headers, connector=connector, timeout=timeout) as http:

        async def reader(i: int) -> None:
            rng = random.Random(i)
            n = 0
            while time.perf_counter() < deadline:
                if n % 2 == 0:
                    path, params = "/v1/leaderboard", {"limit": 50}
                else:
                    exp = rng.choice(exp_ids)
                    path = f"/v1/experiments/{exp}/trials"
                    params = {"limit": 100, "offset": rng.randrange(0, per_exp, 100)}
                t0 = time.perf_counter()
                try:
                    async with http.get(path, params=params) as r:
                        await r.read()
                        status = r.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors.append(f"{path} {type(exc).__name__}")
                    continue
                latencies.append(time.perf_counter() - t0)
                stamped.append((t0, latencies[-1]))
                by_kind["leaderboard" if n % 2 == 0 else "trials"].append(latencies[-1])
                if status != 200:
                    errors.append(f"{path} {status}")
                n += 1

        async def submitter(i: int) -> None:
            spec = {"name": f"load-{i}", "dataset": {"path": dataset}, "backbone": "mobilenetv3_small_050"}
            while time.perf_counter() < deadline:
                try:
                    async with http.post("/v1/experiments", json=spec) as r:
                        body = await r.json(content_type=None)
                        status = r.status
                except (aiohttp.ClientError, TimeoutError) as exc:  # outcome unknown to the client: counted apart
                    errors.append(f"POST {type(exc).__name__}")
                    continue
                if status == 201:
                    created.append(body["id"])
                else:
                    refused.append(status)
                await asyncio.sleep(0.05)

        t_start = time.perf_counter()
        await asyncio.gather(*(reader(i) for i in range(clients)), *(submitter(i) for i in range(submitters)))
        wall = time.perf_counter() - t_start
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    windows: dict[int, list[float]] = {}
    for start, latency in stamped:
        windows.setdefault(int((start - t_start) // 5), []).append(latency)
    return {
        "p50_ms": round(q[49] * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
        "rps": round(len(latencies) / wall, 1),
        "requests": len(latencies),
        "p99_ms_by_query": {
            kind: round(statistics.quantiles(values, n=100)[98] * 1000, 1) for kind, values in by_kind.items()
            if len(values) > 100
        },
        "p99_ms_by_5s_window": [
            round(statistics.quantiles(windows[w], n=100)[98] * 1000, 1)
            for w in sorted(windows)
            if len(windows[w]) > 100
        ],
        "errors": len(errors),
        "error_sample": errors[:5],
        "submissions_created": created,
        "submissions_refused": refused,
    }


def run_backend(name: str, url: str, args, dataset: str) -> dict:
    from service.store import Store

    exps = max(1, args.trials // 1000)
    t0 = time.perf_counter()
    exp_ids, token = seed(url, exps, args.trials // exps)
    seed_s = time.perf_counter() - t0
    port = _free_port()
    work = Path(tempfile.mkdtemp(prefix=f"geonas-bench-{name}-"))
    record = work / "submitted.txt"
    record.touch()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", url, str(port), str(work / "home"), str(record), str(args.workers)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(600):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        # warm up (imports, connection pool, page cache) before measuring
        asyncio.run(load(base, token, exp_ids, args.trials // exps, 10, 2.0, dataset, submitters=0))
        load_before, cpu_before, client_before = os.getloadavg()[0], _cpu_s(server.pid), time.process_time()
        workers_before = _worker_cpu_s(server.pid)
        result = asyncio.run(load(base, token, exp_ids, args.trials // exps, args.clients, args.seconds, dataset))
        cpu_ms = (_cpu_s(server.pid) - cpu_before) * 1000 / max(1, result["requests"])
        result["client_cpu_ms_per_request"] = round(
            (time.process_time() - client_before) * 1000 / result["requests"], 2
        )
        # What one request costs the server, whatever else runs on the machine; the p50/p99 above are
        # end to end and include waiting for a CPU on a shared, overloaded host.
        result["server_cpu_ms_per_request"] = round(cpu_ms, 2)
        workers_after = _worker_cpu_s(server.pid)
        if args.workers > 1 and len(workers_after) == len(workers_before):
            # How evenly the kernel spread the clients' keep-alive connections over the workers.
            result["worker_cpu_s"] = [round(a - b, 2) for a, b in zip(workers_after, workers_before, strict=True)]
        result["server_capacity_rps_per_core"] = round(1000 / cpu_ms, 1) if cpu_ms else None
        result["load_average"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    finally:
        server.terminate()
        server.wait(timeout=30)
    store = Store(url)
    created = result.pop("submissions_created")
    recorded = [line.split()[1] for line in record.read_text().splitlines()]
    missing = [i for i in created if i not in set(recorded)]
    stored = {e.id: e for e in store.list_experiments(limit=100000) if e.name.startswith("load-")}
    lost = [i for i in created if i not in stored or stored[i].job_id != f"bench-{i}"]
    store.engine.dispose()
    result["submissions"] = {
        "accepted": len(created),
        "refused": len(result.pop("submissions_refused")),
        "recorded_by_launcher": len(recorded),
        "lost": len(lost) + len(missing),
    }
    result["seed_s"] = round(seed_s, 1)
    result["trials"] = args.trials
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "api_load.json"))
    args = parser.parse_args()
    if args.serve:
        url, port, home, record, workers = args.serve
        serve(url, int(port), home, record, int(workers))
        return

    from trainers.demo_data import write_demo_dataset

    work = Path(tempfile.mkdtemp(prefix="geonas-bench-"))
    dataset = str(write_demo_dataset(work / "data", chips={"train": 4, "val": 2, "test": 2}, size=32, bands=4))
    out: dict = {}
    for name in args.backends.split(","):
        if name == "sqlite":
            url = f"sqlite:///{work / 'bench.db'}"
            out["sqlite"] = run_backend("sqlite", url, args, dataset)
        else:
            from pg import PgServer, find_pg_bin

            bin_dir = find_pg_bin()
            if bin_dir is None:
                out["postgresql"] = {"skipped": "PostgreSQL is not installed"}
                continue
            server = PgServer(bin_dir)
            server.start()
            try:
                out["postgresql"] = run_backend("postgresql", server.create_database(), args, dataset)
            finally:
                server.stop()
        print(name, json.dumps(out[name]), flush=True)
    out["setup"] = {
        "clients": args.clients,
        "seconds": args.seconds,
        "mix": "alternating GET /v1/leaderboard?limit=50 and GET /v1/experiments/{id}/trials?limit=100&offset=random,"
        " plus 3 clients submitting experiments every 50 ms",
        "server": f"uvicorn on 127.0.0.1, {args.workers} worker process(es), auth on (bearer token), rate limit off",
        "server_stack": {
            "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
            "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        },
        "client": "aiohttp, in the bench process (its CPU per request is client_cpu_ms_per_request)",
        "load": f"load average {os.getloadavg()[0]:.1f} at the end; client and server on the same cores",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    Path(args.out).write_text(json.dumps(stamp(out), indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
