"""Batch prediction at scale: windows/s on 1 and 2 worker nodes of a local multi-node Ray cluster, and
the in-process ``--local`` path on the same scenes as the control.

A head (1 CPU: the job's driver) and worker nodes (1 CPU each, a ``predict_node`` resource); the
prediction job asks one model actor per worker node with that resource, so the 1-node run has one
actor on w1 and the 2-node run one on w1 and one on w2. Each actor reads, predicts, blends and writes
whole scenes (``write_on: workers``; the nodes of this local cluster share one disk, so the output
folder is shared). Jobs go through the product: the API (in this process) submits them as Ray Jobs,
the figures are the job's own progress.

Checks that what is measured happened, else exits non-zero: every scene completed in every run, the
outputs of all three paths are the same pixels, and the 2-node run's windows came from both worker
nodes. Goals (reported, not enforced): 2 nodes >= 1.6 x 1 node; 1 node >= 0.8 x the local path.

    python bench/predict_scale.py            # writes bench/results/predict_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.provenance import stamp  # noqa: E402

ARCH = {
    "backbone": "mobilenetv3_small_100",
    "levels": [2, 3, 4, 5],
    "channels": 32,
    "cells": [[0, 1, 3, "sum"], [2, 4, 4, "global_attention"], [3, 5, 5, "sum"]],
}
BANDS = ["blue", "green", "red", "nir"]
MEAN, STD = [1500.0] * 4, [800.0] * 4


def write_scenes(folder: Path, count: int, size: int) -> list[Path]:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        rng = np.random.default_rng(i)
        data = rng.integers(1, 3000, size=(4, size, size)).astype(np.uint16)
        path = folder / f"scene{i:02d}.tif"
        profile = dict(driver="GTiff", height=size, width=size, count=4, dtype="uint16", crs="EPSG:32640",
                       transform=from_origin(300000 + i * size * 0.5, 2800000, 0.5, 0.5), nodata=0,
                       tiled=True, blockxsize=256, blockysize=256)  # fmt: skip
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            dst.descriptions = tuple(BANDS)
        paths.append(path)
    return paths


def register_model(store, root: Path):
    import torch

    from search_spaces.builder import model_from_descriptor
    from trainers.export import save_weights

    torch.manual_seed(0)
    net = model_from_descriptor({"arch": ARCH}, 4, 3).eval()
    weights = save_weights(net, root / "weights.safetensors")
    exp = store.create_experiment("predict-scale", {})
    model = store.register_model(
        exp.id, trial_id=f"{exp.id}-s2", descriptor={"arch": ARCH}, miou=0.0,
        data={"bands": BANDS, "classes": ["a", "b", "c"], "mean": MEAN, "std": STD},
        artifacts={"weights.safetensors": str(weights)},
    )  # fmt: skip
    return model, net


def run_local(net, scenes: list[Path], out: Path, tile: int, overlap: int, batch: int) -> dict:
    import torch

    from trainers.predict import predict_scene

    torch.set_num_threads(1)  # one model actor holds one CPU and one torch thread
    out.mkdir(parents=True)
    windows, start = 0, time.monotonic()
    for scene in scenes:
        report = predict_scene(net, scene, out / scene.name, band_indexes=[1, 2, 3, 4], mean=MEAN, std=STD,
                               num_classes=3, tile=tile, overlap=overlap, batch_size=batch)  # fmt: skip
        windows += report.tiles
    seconds = time.monotonic() - start
    return {"windows": windows, "seconds": round(seconds, 2), "windows_per_s": round(windows / seconds, 3)}


def run_job(client, model_id: str, scenes: Path, out: Path, workers: int, tile: int, overlap: int, batch: int) -> dict:
    spec = {"name": f"scale-{workers}", "model_id": model_id, "scenes": [str(scenes)], "out": str(out),
            "tile": tile, "overlap": overlap, "batch_size": batch, "workers": workers, "cpus_per_worker": 1,
            "device": "cpu", "resources": {"predict_node": 1}}  # fmt: skip
    created = client.post("/v1/predictions", json=spec)
    if created.status_code != 201:
        raise SystemExit(f"the prediction was refused: {created.text}")
    job_id = created.json()["id"]
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        job = client.get(f"/v1/predictions/{job_id}").json()
        if job["state"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(2)
    if job["state"] != "completed" or job["progress"]["scenes_failed"]:
        raise SystemExit(f"the {workers}-node job did not complete every scene: {job['state']} {job['error']}")
    p = job["progress"]
    return {
        "windows": p["windows_done"],
        "seconds": p["seconds"],
        "windows_per_s": p["windows_per_s"],
        "startup_s": round(p["startup_s"], 2) if p["startup_s"] is not None else None,
        "steady_windows_per_s": p["steady_windows_per_s"],
        "actors": p["actors"],
        "windows_by_node": p["nodes"],
    }


def same_pixels(a: Path, b: Path) -> bool:
    import numpy as np
    import rasterio

    for scene in sorted(a.glob("scene*.tif")):
        with rasterio.open(scene) as x, rasterio.open(b / scene.name) as y:
            if not np.array_equal(x.read(), y.read()):
                return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=12)
    parser.add_argument("--size", type=int, default=1024, help="Scene side in pixels.")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "predict_scale.json"))
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from cluster.local import wait_for_jobs_api
    from cluster.local_nodes import LocalRayCluster
    from service.app import create_app
    from service.jobs import JobLauncher
    from service.settings import Settings

    root = Path(tempfile.mkdtemp(prefix="predict-scale-"))
    load = [round(os.getloadavg()[0], 2)]
    (root / "cluster").mkdir()
    cluster = LocalRayCluster(root=root / "cluster")
    try:
        scenes = write_scenes(root / "scenes", args.scenes, args.size)
        settings = Settings(home=root / "home", auth=False)
        cluster.start_head(num_cpus=1, resources={"node_head": 1})
        cluster.add_node("w1", num_cpus=1, resources={"node_w1": 1, "predict_node": 1})
        env = cluster.client_env()
        os.environ.update(RAY_AUTH_MODE=env["RAY_AUTH_MODE"], RAY_AUTH_TOKEN=env["RAY_AUTH_TOKEN"])
        wait_for_jobs_api(cluster.dashboard_url)
        app = create_app(settings, launcher=JobLauncher(cluster.dashboard_url, settings))
        model, net = register_model(app.state.store, root)
        tiles = dict(tile=args.tile, overlap=args.overlap, batch=args.batch_size)
        with TestClient(app) as client:
            one = run_job(client, model.id, root / "scenes", root / "out-1", 1, **tiles)
            load.append(round(os.getloadavg()[0], 2))
            cluster.add_node("w2", num_cpus=1, resources={"node_w2": 1, "predict_node": 1})
            two = run_job(client, model.id, root / "scenes", root / "out-2", 2, **tiles)
            load.append(round(os.getloadavg()[0], 2))
        nodes = cluster.node_ids()
        local = run_local(net, scenes, root / "out-local", **tiles)
        load.append(round(os.getloadavg()[0], 2))
    finally:
        cluster.shutdown(grace_s=10)

    problems = []
    workers = {nodes.get("w1"), nodes.get("w2")}
    if set(two["windows_by_node"]) != workers or None in workers:
        problems.append(f"the 2-node run's windows came from {sorted(two['windows_by_node'])}, not w1 and w2 {workers}")
    if set(one["windows_by_node"]) != {nodes.get("w1")}:
        problems.append(f"the 1-node run's windows came from {sorted(one['windows_by_node'])}, not w1 alone")
    per_worker = min(two["windows_by_node"].values()) if two["windows_by_node"] else 0
    if per_worker < 40:
        problems.append(f"a worker of the 2-node run predicted only {per_worker} windows (at least 40 wanted)")
    if not (same_pixels(root / "out-local", root / "out-1") and same_pixels(root / "out-local", root / "out-2")):
        problems.append("the three paths wrote different pixels")
    shutil.rmtree(root, ignore_errors=True)

    scaling = two["windows_per_s"] / one["windows_per_s"]
    overhead = one["windows_per_s"] / local["windows_per_s"]
    steady = (one["steady_windows_per_s"], two["steady_windows_per_s"])
    steady_scaling = round(steady[1] / steady[0], 3) if all(steady) else None  # None: nothing after a first batch
    result = {
        "windows_per_s": {"local": local["windows_per_s"], "1": one["windows_per_s"], "2": two["windows_per_s"]},
        "scaling": round(scaling, 3),
        "one_node_vs_local": round(overhead, 3),
        "steady_windows_per_s": {"1": one["steady_windows_per_s"], "2": two["steady_windows_per_s"]},
        "steady_scaling": steady_scaling,
        "steady_one_node_vs_local": round(steady[0] / local["windows_per_s"], 3) if steady[0] else None,
        "goals": {"scaling >= 1.6": scaling >= 1.6, "one_node_vs_local >= 0.8": overhead >= 0.8},
        "runs": {"local": local, "1": one, "2": two},
        "setup": {
            "scenes": args.scenes,
            "size_px": args.size,
            "tile": args.tile,
            "overlap": args.overlap,
            "batch_size": args.batch_size,
            "model": ARCH,
            "cluster": "head 1 CPU + worker nodes of 1 CPU each (one model actor per worker node, 1 torch "
            "thread, reading, blending and writing whole scenes); local: 1 torch thread in this process",
        },  # fmt: skip
        "load_average": {"before, after 1 node, after 2 nodes, after local": load},
        "note": "windows_per_s counts a job's whole pipeline (actors building the model included); "
        "steady_* leave out the time until the first batch came back",
        "problems": problems,
    }
    Path(args.out).write_text(json.dumps(stamp(result), indent=2) + "\n")
    print(f"{'path':>8} {'windows/s':>10} {'steady':>8} {'windows':>8} {'seconds':>8}")
    print(f"{'local':>8} {local['windows_per_s']:>10.2f} {'':>8} {local['windows']:>8} {local['seconds']:>8}")
    for name, run in (("1 node", one), ("2 nodes", two)):
        row = f"{name:>8} {run['windows_per_s']:>10.2f} {run['steady_windows_per_s'] or float('nan'):>8.2f}"
        print(f"{row} {run['windows']:>8} {run['seconds']:>8}")
    print(f"scaling {scaling:.2f} (goal 1.6), 1 node / local {overhead:.2f} (goal 0.8); load {load}")
    for problem in problems:
        print(f"NOT MEASURED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
