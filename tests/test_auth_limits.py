"""Auth, ownership, limits and observability of the API, on a real SQLite store with no cluster.

Submissions go to a launcher that records them (a stand-in for the Ray Jobs API), so these tests
check the control plane's own rules: who sees what, which requests are refused, and what is counted.
"""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import auth_required, create_token
from service.jobs import SubmittedJob
from service.settings import Settings
from service.states import State


class RecordingLauncher:
    """Accepts every submission and remembers it; nothing runs."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, str]] = []

    def submit(self, kind: str, resource_id: str, module: str = "service.driver") -> SubmittedJob:
        self.submitted.append((kind, resource_id))
        return SubmittedJob(job_id=f"job-{resource_id}", dashboard_url="http://127.0.0.1:8265")

    def stop(self, job_id: str) -> bool:
        return True

    def status(self, job_id: str) -> str | None:
        return "RUNNING"


def _app(tmp_path, **overrides):
    settings = Settings(home=tmp_path / "home", **overrides)
    return create_app(settings, launcher=RecordingLauncher())


def _spec(path, name="t"):
    return {"name": name, "dataset": {"path": str(path)}, "backbone": "mobilenetv3_small_050"}


@pytest.mark.parametrize(
    "overrides, on",
    [
        ({}, False),  # embedded local default: no RAY_ADDRESS, loopback
        ({"api_host": "0.0.0.0"}, True),
        ({"ray_address": "http://head:8265"}, True),
        ({"auth": True}, True),
        ({"auth": False, "api_host": "0.0.0.0"}, False),
    ],
)
def test_auth_is_on_except_for_the_embedded_local_default(tmp_path, overrides, on):
    assert auth_required(Settings(home=tmp_path, **overrides)) is on


def test_the_api_says_whether_auth_is_on(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="geonas.auth"):
        off = TestClient(_app(tmp_path / "a"))
        on = TestClient(_app(tmp_path / "b", auth=True))
    assert off.get("/healthz").json() == {"status": "ok", "auth": "off"}
    assert on.get("/healthz").json() == {"status": "ok", "auth": "on"}
    assert "auth is OFF" in caplog.text and "auth is on" in caplog.text


@pytest.fixture()
def secured(tmp_path):
    app = _app(tmp_path, auth=True)
    store = app.state.store
    tokens = {
        "alice": create_token(store, "alice"),
        "bob": create_token(store, "bob"),
        "root": create_token(store, "ops", admin=True),
    }
    client = TestClient(app)
    client.as_ = lambda who: {"Authorization": f"Bearer {tokens[who]}"}
    client.tokens, client.store = tokens, store
    return client


def test_no_or_bad_token_is_401(secured):
    r = secured.get("/v1/experiments")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    alice = secured.tokens["alice"]
    for bad in (alice[:-2] + "xx", "gnt_nope_x", "Basic abc"):
        assert secured.get("/v1/experiments", headers={"Authorization": f"Bearer {bad}"}).status_code == 401
    assert secured.get("/v1/experiments", headers=secured.as_("alice")).status_code == 200


def test_tokens_are_stored_hashed(secured):
    stored = secured.store.list_tokens()
    secrets = [t.rsplit("_", 1)[1] for t in secured.tokens.values()]
    for row in stored:
        assert all(secret not in (row.digest, row.salt) for secret in secrets)
    assert len({row.salt for row in stored}) == len(stored)


def test_revoked_token_is_refused(secured):
    token_id = secured.tokens["bob"].split("_")[1]
    secured.store.revoke_token(token_id)
    assert secured.get("/v1/experiments", headers=secured.as_("bob")).status_code == 401


def test_another_users_resources_are_404_and_admin_sees_all(secured, demo_dataset):
    created = secured.post("/v1/experiments", json=_spec(demo_dataset, "mine"), headers=secured.as_("alice"))
    assert created.status_code == 201, created.text
    exp_id = created.json()["id"]
    store = secured.store
    store.record_trial(f"{exp_id}-a", exp_id, state=State.RUNNING)
    store.record_trial(f"{exp_id}-a", exp_id, state=State.COMPLETED, miou=0.5, latency_ms=3.0)
    model = store.register_model(exp_id, trial_id=f"{exp_id}-a", descriptor={}, miou=0.5)
    assert model.owner == "alice"

    for path in (f"/v1/experiments/{exp_id}", f"/v1/experiments/{exp_id}/trials", f"/v1/models/{model.id}"):
        assert secured.get(path, headers=secured.as_("alice")).status_code == 200, path
        bob = secured.get(path, headers=secured.as_("bob"))
        assert bob.status_code == 404, path
        assert bob.json()["detail"] == secured.get(
            path.replace(exp_id, "zzz").replace(model.id, "zzz"), headers=secured.as_("bob")
        ).json()["detail"].replace("zzz", exp_id if exp_id in path else model.id)
        assert secured.get(path, headers=secured.as_("root")).status_code == 200, path
    assert secured.post(f"/v1/experiments/{exp_id}/cancel", headers=secured.as_("bob")).status_code == 404
    for who, seen in (("alice", 1), ("bob", 0), ("root", 1)):
        headers = secured.as_(who)
        assert len(secured.get("/v1/experiments", headers=headers).json()) == seen, who
        assert len(secured.get("/v1/models", headers=headers).json()) == seen, who
        assert len(secured.get("/v1/leaderboard", headers=headers).json()["rows"]) == seen, who


def test_body_size_limit_is_413(tmp_path):
    client = TestClient(_app(tmp_path, max_body_bytes=2048))
    big = {"name": "x" * 5000, "dataset": {"path": "/tmp"}}
    assert client.post("/v1/experiments", json=big).status_code == 413

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(10):
            yield b" " * 1024

    assert (
        client.post("/v1/experiments", content=chunks(), headers={"content-type": "application/json"}).status_code
        == 413
    )


def test_rate_limit_is_429_with_retry_after(tmp_path):
    client = TestClient(_app(tmp_path, rate_limit_per_s=0.5, rate_limit_burst=3))
    codes = [client.get("/v1/experiments").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = client.get("/v1/experiments")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert client.get("/healthz").status_code == 200  # not rate limited: probes must always answer


@pytest.mark.parametrize("path", ["/etc", "/proc/self", "/usr/share", "/"])
def test_system_folders_are_refused_without_data_roots(tmp_path, path):
    client = TestClient(_app(tmp_path))
    r = client.post("/v1/experiments", json=_spec(path))
    assert r.status_code == 422 and "system folder" in r.text


def test_metrics_count_states_trials_and_requests(tmp_path):
    app = _app(tmp_path)
    client = TestClient(app)
    store = app.state.store
    exp = store.create_experiment("m", {})
    store.record_trial(f"{exp.id}-1", exp.id, state=State.RUNNING)
    store.record_trial(f"{exp.id}-1", exp.id, state=State.COMPLETED, miou=0.4)
    store.record_trial(f"{exp.id}-2", exp.id, state=State.FAILED, error="boom")
    client.get(f"/v1/experiments/{exp.id}")
    client.get("/v1/experiments/nope")
    text = client.get("/metrics").text
    assert 'geonas_trials{state="completed"} 1.0' in text
    assert 'geonas_trials{state="failed"} 1.0' in text
    assert 'geonas_experiments{state="pending"} 1.0' in text and "geonas_queue_length 1.0" in text
    assert "geonas_trial_duration_seconds_count 2.0" in text
    assert 'route="/v1/experiments/{experiment_id}",status="404"' in text
    assert (
        'geonas_http_request_duration_seconds_bucket{le="0.1",method="GET",route="/v1/experiments/{experiment_id}"}'
        in text
    )


def test_request_ids_are_echoed_and_logged_as_json(tmp_path, caplog):
    from service.logs import JsonFormatter

    client = TestClient(_app(tmp_path))
    with caplog.at_level(logging.INFO, logger="geonas.http"):
        r = client.get("/v1/experiments", headers={"X-Request-ID": "abc-123"})
        generated = client.get("/v1/experiments").headers["x-request-id"]
    assert r.headers["x-request-id"] == "abc-123" and len(generated) == 16
    lines = [json.loads(JsonFormatter().format(rec)) for rec in caplog.records if rec.name == "geonas.http"]
    first = lines[0]
    assert first["request_id"] == "abc-123" and first["route"] == "/v1/experiments" and first["status"] == 200


def test_driver_logs_carry_the_experiment_id():
    from service import logs

    record = logging.LogRecord("geonas.driver", logging.INFO, __file__, 1, "trial %s done", ("t1",), None)
    token = logs.experiment_id.set("exp42")
    try:
        line = json.loads(logs.JsonFormatter().format(record))
    finally:
        logs.experiment_id.reset(token)
    assert line == {**line, "experiment_id": "exp42", "msg": "trial t1 done", "level": "info"}
