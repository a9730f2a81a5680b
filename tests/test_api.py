"""The REST API on a real SQLite file: bad input is a 422 naming the field and stores nothing."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service.states import State


@pytest.fixture()
def client(tmp_path):
    settings = Settings(home=tmp_path / "home")  # no RAY_ADDRESS: submissions can't reach a cluster
    app = create_app(settings)
    with TestClient(app) as c:
        c.store = app.state.store
        yield c


def _spec(path, **overrides):
    spec = {"name": "t", "dataset": {"path": str(path)}, "backbone": "mobilenetv3_small_050"}
    spec.update(overrides)
    return spec


def _field(response) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in response.json()["detail"]]


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"budget": {"trials": 0}}, "body.budget.trials"),
        ({"budget": {"trials": 3, "concurrency": -1}}, "body.budget.concurrency"),
        ({"searcher": "annealing"}, "body.searcher"),
        ({"search_space": {"ops": ["sum", "conv9"]}}, "body.search_space.ops.1"),
        ({"search_space": {"levels": [2, 2]}}, "body.search_space.levels"),
        ({"latency": {"target_ms": -5}}, "body.latency.target_ms"),
        ({"stage1": {"epochs": 0}}, "body.stage1.epochs"),
        ({"stage1": {"val_subset": 0}}, "body.stage1.val_subset"),
        ({"stage2": {"cpus_per_worker": 0}}, "body.stage2.cpus_per_worker"),
        ({"unknown_key": 1}, "body.unknown_key"),
        # typos a user made, each once accepted and stored: checked at the door, without torch
        ({"backbone": "resnet1888"}, "body.backbone"),
        ({"searcher": {"name": "ppo", "options": {"lrr": 0.1}}}, "body.searcher.options.lrr"),
        ({"searcher": {"name": "ppo", "options": {"restart_after": 0}}}, "body.searcher.options.restart_after"),
        ({"latency": {"device": "tpu-v9"}}, "body.latency.device"),
        ({"latency": {"device": "cpu-0threads"}}, "body.latency.device"),
        ({"search_space": {"backbones": ["resnet18", "resnet1888"]}}, "body.search_space.backbones.1"),
        # a ~user of no user (found by the schema fuzzer): a 422, not a server error
        ({"dataset": {"path": "~no-such-user-0/data"}}, "body.dataset"),
    ],
)
def test_invalid_spec_is_422_naming_the_field(client, demo_dataset, overrides, field):
    response = client.post("/v1/experiments", json=_spec(demo_dataset, **overrides))
    assert response.status_code == 422, response.text
    assert any(f.startswith(field) for f in _field(response)), response.json()
    assert client.get("/v1/experiments").json() == []


def test_door_checks_say_what_is_valid(client, demo_dataset):
    """The 422 names the valid choices, so the user can fix the spec without reading code."""
    detail = client.post("/v1/experiments", json=_spec(demo_dataset, backbone="resnet1888")).json()["detail"]
    assert "did you mean resnet18" in detail[0]["msg"]
    options = {"name": "ppo", "options": {"lrr": 0.1}}
    detail = client.post("/v1/experiments", json=_spec(demo_dataset, searcher=options)).json()["detail"]
    assert "no option 'lrr'" in detail[0]["msg"] and "lr," in detail[0]["msg"]
    detail = client.post("/v1/experiments", json=_spec(demo_dataset, latency={"device": "tpu-v9"})).json()["detail"]
    assert "cpu-<N>threads" in detail[0]["msg"]
    assert client.get("/v1/experiments").json() == []


def test_pretraining_backbone_is_checked_at_the_door(client, tmp_path):
    spec = {"name": "p", "data": {"path": str(tmp_path)}, "backbone": "resnet1888"}
    response = client.post("/v1/pretraining", json=spec)
    assert response.status_code == 422 and _field(response) == ["body.backbone"]
    assert client.get("/v1/pretraining").json() == []


def test_knn_data_of_other_bands_is_refused_at_the_door(client, demo_dataset, tmp_path):
    from trainers.demo_data import write_demo_dataset

    three_bands = write_demo_dataset(tmp_path / "rgb", chips={"train": 2}, size=16, bands=3, seed=0)
    spec = {
        "name": "p",
        "data": {"kind": "geotiff", "path": str(demo_dataset)},
        "knn_data": {"kind": "geotiff", "path": str(three_bands)},
    }
    response = client.post("/v1/pretraining", json=spec)
    assert response.status_code == 422 and _field(response) == ["body.knn_data"], response.text
    assert "same sensors and bands" in response.text
    assert client.get("/v1/pretraining").json() == []


def test_the_api_checks_specs_without_importing_torch():
    """The API process validates backbone, searcher options and device names with no torch, timm or Optuna."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from service.app import create_app\n"
        "from service.specs import ExperimentSpec\n"
        "create_app\n"
        "ExperimentSpec.model_validate({'name': 'x', 'dataset': {'path': '.'}, 'backbone': 'resnet18',"
        " 'searcher': {'name': 'ppo', 'options': {'lr': 0.01}}, 'latency': {'device': 'cuda'}})\n"
        "print(sorted(m for m in ('torch', 'timm', 'optuna') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_dataset_folder_is_422(client, tmp_path):
    response = client.post("/v1/experiments", json=_spec(tmp_path / "nowhere"))
    assert response.status_code == 422
    assert _field(response) == ["body.dataset.path"]
    assert "does not exist" in response.text


def test_unknown_band_is_422_listing_the_available_ones(client, demo_dataset):
    response = client.post(
        "/v1/experiments", json=_spec(demo_dataset, dataset={"path": str(demo_dataset), "bands": ["swir9"]})
    )
    assert response.status_code == 422
    assert _field(response) == ["body.dataset.bands"]
    assert "available" in response.text


def test_path_traversal_is_refused(client, demo_dataset):
    response = client.post("/v1/experiments", json=_spec(f"{demo_dataset}/../../etc"))
    assert response.status_code == 422


def test_no_cluster_is_503_and_leaves_no_record(client, demo_dataset):
    response = client.post("/v1/experiments", json=_spec(demo_dataset))
    assert response.status_code == 503
    assert "RAY_ADDRESS" in response.json()["detail"]
    assert client.get("/v1/experiments").json() == []


def test_unknown_experiment_is_404(client):
    assert client.get("/v1/experiments/nope").status_code == 404
    assert client.get("/v1/experiments/nope/trials").status_code == 404


def test_leaderboard_ranks_filters_and_marks_the_pareto_front(client):
    store = client.store
    exp = store.create_experiment("lb", {"budget": {"trials": 4}})
    points = {"a": (0.80, 30.0), "b": (0.70, 10.0), "c": (0.60, 20.0), "d": (0.90, 50.0)}
    for name, (miou, lat) in points.items():
        store.record_trial(f"{exp.id}-{name}", exp.id, state=State.RUNNING, arch_hash=name, arch={})
        store.record_trial(
            f"{exp.id}-{name}",
            exp.id,
            state=State.COMPLETED,
            miou=miou,
            latency_ms=lat,
            latency_device="cpu-1threads",
        )
    rows = client.get("/v1/leaderboard").json()["rows"]
    assert [r["arch_hash"] for r in rows] == ["d", "a", "b", "c"]
    assert {r["arch_hash"] for r in rows if r["pareto"]} == {"d", "a", "b"}
    fast = client.get("/v1/leaderboard", params={"max_latency_ms": 25}).json()["rows"]
    assert [r["arch_hash"] for r in fast] == ["b", "c"]
    assert client.get("/v1/leaderboard", params={"max_latency_ms": -1}).status_code == 422


def test_store_refuses_illegal_transitions(client):
    from search_spaces.errors import Conflict

    store = client.store
    exp = store.create_experiment("sm", {})
    store.record_trial(f"{exp.id}-t", exp.id, state=State.RUNNING)
    store.record_trial(f"{exp.id}-t", exp.id, state=State.COMPLETED, miou=0.5)
    with pytest.raises(Conflict):
        store.record_trial(f"{exp.id}-t", exp.id, state=State.RUNNING, miou=0.1)
    assert store.list_trials(exp.id)[0].miou == 0.5
    store.update_experiment(exp.id, state=State.RUNNING)
    store.update_experiment(exp.id, state=State.COMPLETED)
    with pytest.raises(Conflict):
        store.update_experiment(exp.id, state=State.RUNNING)


def test_repeated_epoch_reports_are_idempotent(client):
    store = client.store
    exp = store.create_experiment("idem", {})
    for _ in range(3):
        store.record_trial(
            f"{exp.id}-t", exp.id, state=State.RUNNING, epoch=1, history_entry={"epoch": 1, "miou": 0.3}
        )
    (trial,) = store.list_trials(exp.id)
    assert len(trial.history) == 1


@pytest.mark.parametrize(
    "path", ["/v1/experiments", "/v1/experiments/{id}/trials", "/ui/experiments/{id}/trials"]
)
def test_page_offsets_are_bounded(client, path):
    """An offset past any store is a 422 naming it, not a database overflow (schemathesis found a 500)."""
    exp = client.store.create_experiment("e", {"budget": {"trials": 1}})
    url = path.format(id=exp.id)
    assert client.get(url, params={"offset": 10**9}).status_code == 200
    refused = client.get(url, params={"offset": 2**63})
    assert refused.status_code == 422 and _field(refused) == ["query.offset"]
