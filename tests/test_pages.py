"""The pages in a real browser (the OS's Chromium through Playwright) against the real app on uvicorn.

The store holds a finished tiny experiment written through the store's own methods: stage-1 trials
with per-epoch history, a failed trial, a baseline, a stage-2 trial and its registered model whose
weights are a real (untrained) network saved with ``save_weights`` over a real demo dataset, so the
prediction preview runs the model. Screenshots are saved as artifacts (folder printed; set
``GEONAS_SCREENSHOT_DIR`` to choose it). Browser tests are skipped, saying why, only when no
Chromium is installed; the chart tests at the end need no browser.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from service.states import State

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

ARCH = {
    "backbone": "mobilenetv3_small_050",
    "levels": [2, 3, 4, 5],
    "channels": 16,
    "cells": [[0, 1, 3, "sum"], [2, 4, 4, "global_attention"], [3, 5, 5, "sum"]],
}
# (mIoU, latency ms): the Pareto front of these is a (8 ms), c (12 ms), e (25 ms)
STAGE1 = {"a": (0.40, 8.0), "b": (0.35, 10.0), "c": (0.55, 12.0), "d": (0.50, 18.0), "e": (0.62, 25.0)}
FRONT = {"a", "c", "e"}


def _finish(store, trial_id, exp_id, *, miou, latency, reward=None, epochs=3, **kwargs):
    store.record_trial(trial_id, exp_id, state=State.RUNNING, arch=ARCH, arch_hash=trial_id[-8:], **kwargs)
    for epoch in range(1, epochs + 1):
        store.record_trial(
            trial_id,
            exp_id,
            state=State.RUNNING,
            epoch=epoch,
            history_entry={"epoch": epoch, "miou": miou * epoch / epochs, "loss": 1.5 / epoch},
        )
    store.record_trial(
        trial_id, exp_id, state=State.COMPLETED, miou=miou, latency_ms=latency, reward=reward, params=120_000
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory, browser):
    """The real app on uvicorn with a finished experiment, its model, and a pretraining job.

    Asks for ``browser`` first so that without Chromium nothing is built before the skip.
    """
    from search_spaces.builder import model_from_descriptor
    from service.app import create_app
    from service.demo import ServerThread
    from service.settings import Settings
    from trainers.datasets import DatasetInfo, band_stats
    from trainers.demo_data import write_demo_dataset
    from trainers.export import save_weights

    root = tmp_path_factory.mktemp("pages")
    data = write_demo_dataset(root / "data", chips={"train": 4, "val": 2, "test": 2}, size=32, bands=4, seed=0)
    info = DatasetInfo.load(data)
    app = create_app(Settings(home=root / "home", auth=False))
    store = app.state.store
    spec = {
        "name": "pages",
        "backbone": "mobilenetv3_small_050",
        "searcher": {"name": "random"},
        "budget": {"trials": 6},
        "latency": {"target_ms": 20.0, "device": "cpu-1threads"},
    }
    exp = store.create_experiment("pages", spec)
    store.update_experiment(exp.id, state=State.RUNNING)
    for i, (name, (miou, lat)) in enumerate(STAGE1.items()):
        _finish(store, f"{exp.id}-{name}", exp.id, miou=miou, latency=lat, reward=miou - 0.01 * i)
    store.record_trial(f"{exp.id}-f", exp.id, state=State.RUNNING, arch=ARCH, arch_hash="failedff")
    store.record_trial(f"{exp.id}-f", exp.id, state=State.FAILED, error="NaN loss at epoch 1")
    _finish(store, f"{exp.id}-unet", exp.id, miou=0.45, latency=30.0, kind="baseline")
    _finish(store, f"{exp.id}-s2-c", exp.id, miou=0.58, latency=12.5, stage=2)
    store.update_experiment(exp.id, state=State.COMPLETED)

    bands = list(info.bands)
    mean, std = band_stats(info, bands)
    net = model_from_descriptor({"arch": ARCH}, len(bands), info.num_classes)
    weights = save_weights(net, root / "models" / "weights.safetensors")
    model = store.register_model(
        exp.id,
        trial_id=f"{exp.id}-s2-c",
        kind="searched",
        arch_hash="s2c",
        descriptor={"arch": ARCH},
        miou=0.58,
        latency_ms=12.5,
        latency_device="cpu-1threads",
        metrics={"miou": 0.58, "iou": {c: 0.3 + 0.1 * i for i, c in enumerate(info.classes)}},
        training={"data_root": str(data)},
        data={"bands": bands, "classes": list(info.classes), "mean": mean, "std": std, "ignore_index": 255},
        artifacts={"weights.safetensors": str(weights)},
    )
    job = None
    if hasattr(store, "create_pretraining"):
        job = store.create_pretraining("csf-tiny", {"backbone": "resnet18", "steps": 40})
        store.update_pretraining(
            job.id,
            state=State.RUNNING,
            step=40,
            loss_curve=[{"step": s, "loss": 4.0 / (1 + 0.1 * s)} for s in range(0, 41, 2)],
        )
        knn = {
            e: {"all": {"1": {"accuracy": a, "same_class": a}, "5": {"accuracy": a + 0.05}}}
            for e, a in (("random", 0.4), ("csf", 0.7))
        }
        store.update_pretraining(job.id, state=State.COMPLETED, knn=knn)
    shots = Path(os.environ.get("GEONAS_SCREENSHOT_DIR") or root / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    print(f"\npage screenshots: {shots}")
    with ServerThread(app) as server:
        yield {
            "url": server.url,
            "store": store,
            "exp": exp,
            "model": model,
            "job": job,
            "shots": shots,
            "classes": list(info.classes),
            "home": root / "home",
        }


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no Chromium on PATH: install the OS package (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _open(page, url):
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)


def test_index_lists_experiments_with_progress_owner_and_pretraining(site, page):
    _open(page, site["url"] + "/")
    row = page.locator(f"#experiments tr[data-id='{site['exp'].id}']")
    assert row.count() == 1
    assert "completed" in row.inner_text()
    assert row.locator(".progress").count() == 1
    assert "6 / 6" in row.inner_text()  # finished stage-1 searched trials (the failed one too) / budget
    assert "—" in row.locator("td").nth(3).inner_text()
    if site["job"] is not None:
        assert page.locator("#pretraining-table tbody tr").count() == 1
    page.screenshot(path=str(site["shots"] / "index.png"), full_page=True)


def test_experiment_page_scatter_front_rewards_and_sortable_table(site, page):
    exp = site["exp"]
    _open(page, f"{site['url']}/experiments/{exp.id}")
    scatter = page.locator("#scatter svg")
    measured = len(STAGE1) + 2  # stage 1, the baseline, the stage-2 trial; the failed trial has no point
    assert scatter.locator(".pt").count() == measured
    assert scatter.get_attribute("data-points") == str(measured)
    front_ids = {
        page.locator("#scatter .pt.front").nth(i).get_attribute("data-trial")
        for i in range(page.locator("#scatter .pt.front").count())
    }
    assert front_ids == {f"{exp.id}-{name}" for name in FRONT}
    assert len(page.locator("#scatter path.front").get_attribute("d").split("L")) == len(FRONT)
    assert page.locator("#scatter .target line").count() == 1
    assert page.locator("#scatter .pt.stage2").count() == 1
    assert page.locator("#scatter .pt.baseline").count() == 1
    assert page.locator("#rewards .pt").count() == len(STAGE1)
    assert page.locator("#rewards path.running-best").count() == 1
    assert page.locator("#curves svg.curves-miou path.curve.highlight").count() == 1
    assert page.locator("#curves svg.curves-loss path.curve.highlight").count() == 1

    def column(name):
        cells = page.locator(f"#trials tbody td[data-col='{name}']").all_inner_texts()
        return [float(c) for c in cells if c != "—"]

    assert page.locator("#trials tbody tr").count() == len(STAGE1) + 3
    page.click("#trials th[data-sort='miou']")
    page.wait_for_selector("#trials th[data-sort='miou'].desc")
    values = column("miou")
    assert values == sorted(values, reverse=True) and len(values) == measured
    page.click("#trials th[data-sort='miou']")
    page.wait_for_selector("#trials th[data-sort='miou'].asc")
    assert column("miou") == sorted(values)
    page.click("#trials th[data-sort='latency_ms']")
    page.wait_for_selector("#trials th[data-sort='latency_ms'].asc")
    assert column("latency_ms") == sorted(column("latency_ms"))
    page.select_option("#filter-state", "failed")
    page.wait_for_function("document.querySelectorAll('#trials tbody tr').length === 1")
    assert "NaN loss" in page.locator("#trials tbody tr").inner_text()
    page.select_option("#filter-state", "")
    page.wait_for_function(f"document.querySelectorAll('#trials tbody tr').length === {len(STAGE1) + 3}")
    page.locator(f"#scatter .pt[data-trial='{exp.id}-c']").click()
    page.wait_for_selector(f"#curves svg.curves-miou path.curve.highlight[data-trial='{exp.id}-c']")
    page.screenshot(path=str(site["shots"] / "experiment.png"), full_page=True)


def test_experiment_page_updates_live_without_reload(site, page):
    store = site["store"]
    exp = store.create_experiment("live", {"budget": {"trials": 4}, "latency": {"target_ms": 20.0}})
    store.update_experiment(exp.id, state=State.RUNNING)
    _finish(store, f"{exp.id}-a", exp.id, miou=0.3, latency=9.0, reward=0.3)
    _open(page, f"{site['url']}/experiments/{exp.id}")
    assert page.locator("#scatter .pt").count() == 1
    page.evaluate("window.__same_document = true")
    _finish(store, f"{exp.id}-b", exp.id, miou=0.5, latency=11.0, reward=0.5)
    page.wait_for_function("document.querySelectorAll('#scatter .pt').length === 2", timeout=20_000)
    assert page.evaluate("window.__same_document") is True
    assert page.locator("#trials tbody tr").count() == 2
    store.update_experiment(exp.id, state=State.COMPLETED)


def test_model_page_cell_graph_iou_preview_and_artifacts(site, page):
    model = site["model"]
    _open(page, f"{site['url']}/models/{model.id}")
    assert page.locator("#cells svg .cell-node").count() == len(ARCH["cells"])
    assert page.locator("#cells svg .input-node").count() == len(ARCH["levels"])
    assert page.locator("#cells svg .output-node").count() == len(ARCH["levels"])
    assert page.locator("#cells svg path.edge:not(.output-edge)").count() == 2 * len(ARCH["cells"])
    assert page.locator("#iou svg .bar").count() == len(site["classes"])
    for kind in ("input", "truth", "prediction"):
        page.wait_for_function(
            f"document.getElementById('img-{kind}').complete && document.getElementById('img-{kind}').naturalWidth > 0",
            timeout=120_000,
        )
        assert page.evaluate(f"document.getElementById('img-{kind}').naturalWidth") == 32
    assert "pixel accuracy" in page.inner_text("#preview-meta")
    assert page.locator("#artifacts a[data-artifact='weights.safetensors']").count() == 1
    page.screenshot(path=str(site["shots"] / "model.png"), full_page=True)


def test_pretraining_page_loss_curve_and_knn_table(site, page):
    if site["job"] is None:
        pytest.skip("this store has no pretraining jobs table yet")
    _open(page, f"{site['url']}/pretraining/{site['job'].id}")
    assert page.locator("#loss svg path.loss-line").count() == 1
    assert page.locator("#knn-table tbody tr").count() == 2  # (all, k=1), (all, k=5)
    page.screenshot(path=str(site["shots"] / "pretraining.png"), full_page=True)
    _open(page, f"{site['url']}/pretraining/nope")
    assert "no pretraining jobs" in page.inner_text("#summary")


def test_token_is_sent_as_bearer_header_once_entered(site, page):
    seen: list[str | None] = []
    page.on("request", lambda r: seen.append(r.headers.get("authorization")) if "/ui/overview" in r.url else None)
    _open(page, site["url"] + "/")
    page.fill("#token-input", "s3cret")
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_function("sessionStorage.getItem('geonas.token') === 's3cret'")
    assert seen[0] is None and seen[-1] == "Bearer s3cret"


def test_with_auth_on_the_pages_ask_for_a_token_and_show_only_the_owners_experiments(site, page):
    from service.app import create_app
    from service.auth import create_token
    from service.demo import ServerThread
    from service.settings import Settings

    app = create_app(Settings(home=site["home"], auth=True))  # the same database, tokens required
    store = app.state.store
    token = create_token(store, "alice")
    mine = store.create_experiment("alices", {"budget": {"trials": 2}}, owner="alice")
    with ServerThread(app) as server:
        _open(page, server.url + "/")
        assert "enter an API token" in page.inner_text("#error")
        page.fill("#token-input", token)
        page.click("#token-form button[type=submit]")
        page.wait_for_selector(f"#experiments tr[data-id='{mine.id}']")
        assert page.locator("#experiments tbody tr").count() == 1  # not the unowned ones
        assert page.locator(f"#experiments tr[data-id='{mine.id}'] td").nth(3).inner_text() == "alice"
        _open(page, f"{server.url}/experiments/{site['exp'].id}")  # someone else's: a 404, as in /v1
        assert "404" in page.inner_text("#error")
        page.screenshot(path=str(site["shots"] / "auth-404.png"))


def test_large_scatter_keeps_every_point_in_one_raster_layer_and_the_front_as_elements():
    import io
    import re
    from base64 import b64decode
    from datetime import datetime

    import numpy as np
    from PIL import Image

    from service.pages.charts import BULK_THRESHOLD, pareto_front, scatter_svg
    from service.pages.queries import TrialRow

    n = BULK_THRESHOLD * 2
    now = datetime(2026, 1, 1)
    rows = [
        TrialRow(
            f"t{i}", "searched", 1, "completed", f"h{i}", (i * 7919 % n) / n, 5 + i % 97, 1, 0.1, 3, None, now, now
        )
        for i in range(n)
    ]
    svg = scatter_svg(rows, target_ms=50.0)
    front = pareto_front([(r.latency_ms, r.miou, r.id) for r in rows])
    assert f'data-points="{n}"' in svg
    assert svg.count('class="pt front"') == len(front)
    (count,) = re.findall(r'class="pt-bulk" data-count="(\d+)"', svg)
    assert int(count) + len(front) == n  # every trial drawn: raster layer + front elements
    png = b64decode(re.search(r"base64,([^\"]+)", svg).group(1))
    assert png.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(png)) as image:  # a PNG a decoder reads, with points drawn on it
        assert image.mode == "RGBA" and np.asarray(image)[..., 3].any()
