"""A corrupt GeoTIFF costs the trial that reads it, names the file, and the experiment goes on."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from search_spaces.errors import DataError
from trainers.datasets import ChipError, SegmentationDataset
from trainers.trial_data import Quarantine, SplitRef, clear_cache, load_split


def _corrupt_copy(demo_dataset: Path, dest: Path, split: str = "train", index: int = 3) -> tuple[Path, Path]:
    """A copy of the demo dataset whose ``index``-th chip image of ``split`` is garbage bytes."""
    root = Path(shutil.copytree(demo_dataset, dest))
    images = sorted((root / split / "images").glob("*.tif"))
    images[index].write_bytes(b"this is not a GeoTIFF" * 50)
    return root, images[index]


def test_an_unreadable_chip_is_named_quarantined_and_left_out_of_later_loads(demo_dataset, tmp_path):
    root, bad = _corrupt_copy(demo_dataset, tmp_path / "data")
    quarantine = Quarantine(tmp_path / "quarantine")
    ref = SplitRef(str(root), "train", subset=20, seed=0)
    clear_cache()

    with pytest.raises(ChipError) as raised:
        load_split(ref, quarantine)
    assert isinstance(raised.value, DataError) and str(bad) in str(raised.value)
    assert [r["path"] for r in quarantine.records()] == [str(bad)]

    # the retry (or any other trial) loads the same subset without that chip
    full = SegmentationDataset(root, "train", subset=20, seed=0, preload=False)
    loaded = load_split(ref, quarantine)
    assert loaded.chip_ids == [c for c in full.chip_ids if c != bad.stem]
    assert load_split(ref, quarantine) is loaded  # cached in the process: decoded once


def _run_to_the_end(local_cluster, tmp_path: Path, root: Path, name: str, trials: int, max_failures: int):
    """Submit a tiny random search over ``root`` through the API and a Ray Job; (experiment, store) at its end."""
    from service.app import create_app
    from service.client import ApiClient
    from service.demo import ServerThread
    from service.jobs import JobLauncher
    from service.settings import Settings
    from service.store import get_store

    settings = Settings(home=tmp_path / "home")
    app = create_app(settings, launcher=JobLauncher(local_cluster.dashboard_url, settings))
    spec = {
        "name": name,
        "dataset": {"path": str(root)},
        "backbone": "mobilenetv3_small_050",
        "search_space": {"num_cells": 2, "channels": 8},
        "searcher": "random",
        "budget": {"trials": trials, "concurrency": 1},
        "stage1": {"epochs": 1, "batch_size": 8, "early_stopping": "none", "max_failures": max_failures},
        "stage2": {"top_k": 1, "epochs": 1},
    }
    with ServerThread(app) as server:
        api = ApiClient(server.url)
        created = api.submit(spec)
        deadline = time.monotonic() + 420
        while (exp := api.experiment(created["id"]))["state"] not in ("completed", "failed", "cancelled"):
            assert time.monotonic() < deadline, f"experiment still {exp['state']}"
            time.sleep(2)
    return exp, get_store(settings.resolved_database_url)


@pytest.mark.slow
def test_a_corrupt_chip_fails_one_trial_attempt_and_the_experiment_completes(local_cluster, demo_dataset, tmp_path):
    root, bad = _corrupt_copy(demo_dataset, tmp_path / "data", index=5)
    exp, store = _run_to_the_end(local_cluster, tmp_path, root, "corrupt-chip", trials=3, max_failures=1)
    assert exp["state"] == "completed", exp.get("error")

    stage1 = [t for t in store.list_trials(exp["id"], stage=1)]
    assert sorted(t.state for t in stage1) == ["completed"] * 3
    named = [t for t in stage1 if t.error and bad.name in t.error]
    assert len(named) == 1, [t.error for t in stage1]  # the first trial to read it, then retried without it
    assert "retried after" in named[0].error
    assert len(store.list_models(exp["id"])) == 1  # stage 2 left the quarantined chip out


@pytest.mark.slow
def test_an_experiment_whose_every_trial_failed_ends_failed_with_the_first_error(local_cluster, demo_dataset, tmp_path):
    # every validation chip is garbage: each trial fails on the one it reads first (and quarantines it)
    root = Path(shutil.copytree(demo_dataset, tmp_path / "data"))
    for image in (root / "val" / "images").glob("*.tif"):
        image.write_bytes(b"this is not a GeoTIFF" * 50)
    exp, store = _run_to_the_end(local_cluster, tmp_path, root, "all-failed", trials=2, max_failures=0)
    assert exp["state"] == "failed", exp
    assert [t.state for t in store.list_trials(exp["id"])] == ["failed", "failed"]
    assert not store.list_models(exp["id"])
    assert exp["error"].startswith("every stage-1 trial failed (2 of 2); the first: ")
    assert "val" in exp["error"] and "images" in exp["error"]  # the first trial's error names the chip
