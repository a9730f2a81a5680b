"""How fast the experiment page loads with many trials in the store (10,000 by default).

    python bench/page_load.py [--trials 10000 100] [--repeats 3] [--out bench/results/page_load.json]

For each size: fills a fresh SQLite store with one finished experiment (stage-1 trials with a
3-epoch history, 2 % failed, two baselines, five stage-2 trials), serves the real app on uvicorn,
and measures (a) each endpoint the page fetches, cold (first request after start: no cache) and
warm, with its response size; (b) in the OS's Chromium, the time from navigation until the page
says it is ready (all charts, the first table page and the learning curves inserted), cold and
warm, plus re-sorting the table and paging; (c) for scale, the REST resource that returns every
trial whole (``/v1/experiments/{id}/trials``), which a page built on it would have to download.
Prints a table and writes JSON (with the ``commit``, ``command`` and ``machine``, and the load
average at the end: the server, the client and Chromium share the machine's cores).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.provenance import stamp  # noqa: E402
from service.app import create_app  # noqa: E402
from service.demo import ServerThread  # noqa: E402
from service.pages.queries import clear_caches  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.states import State  # noqa: E402
from service.store import Store, Trial  # noqa: E402

SCREENSHOTS = Path(tempfile.gettempdir())
ARCH = {
    "backbone": "mobilenetv3_small_050",
    "levels": [2, 3, 4, 5],
    "channels": 32,
    "cells": [[0, 1, 3, "sum"], [2, 4, 4, "global_attention"], [3, 5, 5, "sum"], [1, 6, 2, "sum"]],
}


def fill(store: Store, n: int, seed: int = 0) -> str:
    """One completed experiment with ``n`` stage-1 trials, written in bulk (one transaction)."""
    rng = random.Random(seed)
    spec = {
        "budget": {"trials": n},
        "latency": {"target_ms": 15.0, "device": "cpu-1threads"},
        "searcher": {"name": "ppo"},
        "backbone": "mobilenetv3_small_050",
    }
    exp = store.create_experiment(f"bench-{n}", spec)
    start = datetime(2026, 1, 1)
    with store.session() as s:
        for i in range(n + 7):
            stage, kind = (2, "searched") if i >= n + 2 else (1, "baseline" if i >= n else "searched")
            failed = kind == "searched" and stage == 1 and rng.random() < 0.02
            latency = rng.uniform(4, 40)
            miou = None if failed else max(0.05, min(0.95, 0.35 + 0.25 * (latency / 40) ** 0.5 + rng.gauss(0, 0.07)))
            history = (
                []
                if failed
                else [{"epoch": e, "miou": miou * e / 3, "loss": 1.2 / e + rng.random() * 0.05} for e in (1, 2, 3)]
            )
            created = start + timedelta(seconds=30 * i)
            s.add(
                Trial(
                    id=f"{exp.id}-{i:05d}",
                    experiment_id=exp.id,
                    stage=stage,
                    kind=kind,
                    state=State.FAILED if failed else State.COMPLETED,
                    arch=ARCH,
                    arch_hash=f"{rng.getrandbits(64):016x}",
                    epoch=0 if failed else 3,
                    miou=miou,
                    latency_ms=latency,
                    latency_device="cpu-1threads",
                    params=rng.randint(500_000, 3_000_000),
                    reward=None if failed else miou - 0.01 * max(0, latency - 15),
                    error="NaN loss at epoch 1" if failed else None,
                    history=history,
                    created_at=created,
                    updated_at=created + timedelta(seconds=rng.uniform(20, 90)),
                )
            )
    store.update_experiment(exp.id, state=State.RUNNING)
    store.update_experiment(exp.id, state=State.COMPLETED)
    return exp.id


def timed_get(client: httpx.Client, url: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    response = client.get(url)
    response.raise_for_status()
    return (time.perf_counter() - t0) * 1000, len(response.content)


def endpoints(exp_id: str, first_ids: str) -> dict[str, str]:
    base = f"/ui/experiments/{exp_id}"
    return {
        "summary": f"{base}/summary",
        "scatter.svg": f"{base}/scatter.svg",
        "rewards.svg": f"{base}/rewards.svg",
        "trials page (50, by mIoU)": f"{base}/trials?sort=miou&order=desc&limit=50",
        "curves.svg (50 trials)": f"{base}/curves.svg?ids={first_ids}",
    }


def browser_timings(url: str, repeats: int, screenshot: Path) -> dict[str, float] | None:
    """Navigation until ``body[data-ready]`` (the page sets it once charts, table and curves are in).

    The first navigation finds the server's caches empty (cold); later ones open a fresh tab (warm).
    """
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return None
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {
        "page ready, cold server": [],
        "page ready, warm": [],
        "sort by mIoU": [],
        "next table page": [],
    }
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        for r in range(repeats + 1):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t0 = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']", state="attached", timeout=120_000)
            out["page ready, cold server" if r == 0 else "page ready, warm"].append((time.perf_counter() - t0) * 1000)
            if r == 0:
                page.screenshot(path=str(screenshot), full_page=True)
            t0 = time.perf_counter()
            page.click("#trials th[data-sort='miou']")
            page.wait_for_selector("#trials th[data-sort='miou'].desc", state="attached")
            out["sort by mIoU"].append((time.perf_counter() - t0) * 1000)
            first = page.locator("#trials tbody tr").first.get_attribute("data-trial")
            t0 = time.perf_counter()
            page.click("#next")
            page.wait_for_function(f"document.querySelector('#trials tbody tr').dataset.trial !== {json.dumps(first)}")
            out["next table page"].append((time.perf_counter() - t0) * 1000)
            page.close()
        browser.close()
    return {k: round(statistics.median(v), 1) for k, v in out.items() if v}


def run(n: int, repeats: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="geonas-page-load-"))
    try:
        app = create_app(Settings(home=folder, auth=False))
        t0 = time.perf_counter()
        exp_id = fill(app.state.store, n)
        fill_s = time.perf_counter() - t0
        result: dict = {"trials": n + 7, "fill_s": round(fill_s, 1), "endpoints": {}}
        with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=120) as client:
            shot = SCREENSHOTS / f"geonas-page-load-{n}.png"
            result["browser_ms"] = browser_timings(f"{server.url}/experiments/{exp_id}", repeats, shot)
            result["screenshot"] = str(shot)
            first = client.get(f"/ui/experiments/{exp_id}/trials?limit=50").json()["rows"]
            ids = ",".join(r["id"] for r in first)
            for name, path in endpoints(exp_id, ids).items():
                clear_caches()  # cold: as after a restart or a new trial result
                cold_ms, size = timed_get(client, path)
                warm = [timed_get(client, path)[0] for _ in range(repeats)]
                result["endpoints"][name] = {
                    "cold_ms": round(cold_ms, 1),
                    "warm_ms": round(statistics.median(warm), 1),
                    "bytes": size,
                }
            whole_ms, whole_bytes = timed_get(client, f"/v1/experiments/{exp_id}/trials?limit=10000")
            result["rest_all_trials"] = {"ms": round(whole_ms, 1), "bytes": whole_bytes}
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[10_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "page_load.json")
    args = parser.parse_args()
    results = [run(n, args.repeats) for n in args.trials]
    for res in results:
        print(f"\n== experiment page, {res['trials']:,} trials (store filled in {res['fill_s']} s) ==")
        print(f"{'endpoint':<28}{'cold ms':>10}{'warm ms':>10}{'kB':>10}")
        for name, e in res["endpoints"].items():
            print(f"{name:<28}{e['cold_ms']:>10.1f}{e['warm_ms']:>10.1f}{e['bytes'] / 1024:>10.1f}")
        whole = res["rest_all_trials"]
        print(f"{'(GET /v1 trials, all)':<28}{whole['ms']:>10.1f}{'':>10}{whole['bytes'] / 1024:>10.1f}")
        if res["browser_ms"]:
            print(f"{'in Chromium':<28}{'median ms':>10}   (screenshot: {res['screenshot']})")
            for name, ms in res["browser_ms"].items():
                print(f"{name:<28}{ms:>10.1f}")
        else:
            print("no Chromium on PATH: browser timings skipped")
    payload = stamp({
        "load": {"load_average_1_5_15_min_at_end": [round(x, 2) for x in os.getloadavg()]},
        "measured_at": datetime.now().isoformat(timespec="seconds"),
        "results": results,
    })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
