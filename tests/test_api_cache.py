"""Cached API answers (leaderboard, trial pages) are keyed on the trials table's write version: a write
by anyone who shares the database (here: a second Store, as a driver process has) shows at once with
``cache_max_age_s=0``, and within that many seconds otherwise; this API's own writes show at once."""

from __future__ import annotations

import json
import math
import time

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service.states import State
from service.store import Store


@pytest.fixture()
def client(tmp_path):
    app = create_app(Settings(home=tmp_path / "home", cache_max_age_s=0))
    with TestClient(app) as c:
        c.store = app.state.store
        yield c


def test_other_processes_writes_show_within_the_max_age_and_own_writes_at_once(tmp_path):
    app = create_app(Settings(home=tmp_path / "home", cache_max_age_s=0.5))
    with TestClient(app) as client:
        store = app.state.store
        exp = store.create_experiment("e", {"budget": {"trials": 3}})
        store.record_trial(f"{exp.id}-a", exp.id, state=State.COMPLETED, miou=0.5, latency_ms=5.0)
        assert [r["miou"] for r in client.get("/v1/leaderboard").json()["rows"]] == [0.5]
        store.record_trial(f"{exp.id}-b", exp.id, state=State.COMPLETED, miou=0.6, latency_ms=5.0)
        assert [r["miou"] for r in client.get("/v1/leaderboard").json()["rows"]] == [0.6, 0.5]  # own write

        driver = Store(store.url)
        driver.record_trial(f"{exp.id}-c", exp.id, state=State.COMPLETED, miou=0.7, latency_ms=4.0)
        seen_at = time.monotonic()  # the max age counts from the commit, not from the driver's first connection
        while len(client.get("/v1/leaderboard").json()["rows"]) < 3:
            assert time.monotonic() - seen_at < 0.5 + 0.5, "another process's write never showed"
            time.sleep(0.02)
        assert len(client.get(f"/v1/experiments/{exp.id}/trials").json()) == 3
        driver.engine.dispose()


def test_a_write_from_another_store_is_never_served_stale(client):
    exp = client.store.create_experiment("e", {"budget": {"trials": 2}})
    driver = Store(client.store.url)  # its own engine and pool, like the driver's process
    driver.record_trial(f"{exp.id}-a", exp.id, state=State.COMPLETED, miou=0.5, latency_ms=5.0)
    first = client.get("/v1/leaderboard").json()["rows"]
    assert [r["miou"] for r in first] == [0.5]
    assert client.get("/v1/leaderboard").json()["rows"] == first  # a cache hit: same answer
    page = client.get(f"/v1/experiments/{exp.id}/trials").json()
    assert [t["id"] for t in page] == [f"{exp.id}-a"]

    version = client.store.write_version()
    driver.record_trial(f"{exp.id}-b", exp.id, state=State.COMPLETED, miou=0.7, latency_ms=4.0)
    assert client.store.write_version() > version
    assert [r["miou"] for r in client.get("/v1/leaderboard").json()["rows"]] == [0.7, 0.5]
    assert len(client.get(f"/v1/experiments/{exp.id}/trials").json()) == 2
    driver.engine.dispose()


def test_trial_page_is_the_schema_json_even_with_non_finite_numbers(client):
    exp = client.store.create_experiment("e", {"budget": {"trials": 1}})
    client.store.record_trial(
        f"{exp.id}-n",
        exp.id,
        state=State.RUNNING,
        arch={"cells": [[0, 1, "sum", 3]]},
        arch_hash="h",
        miou=math.nan,
        history_entry={"epoch": 1, "loss": math.nan, "miou": math.inf},
    )
    response = client.get(f"/v1/experiments/{exp.id}/trials")
    (trial,) = json.loads(response.text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert trial["miou"] is None and trial["history"] == [{"epoch": 1, "loss": None, "miou": None}]
    assert trial["arch"] == {"cells": [[0, 1, "sum", 3]]}
    assert trial["created_at"].endswith("Z")
    schema_keys = set(client.get("/openapi.json").json()["components"]["schemas"]["TrialPublic"]["properties"])
    assert set(trial) == schema_keys


@pytest.mark.parametrize("error", [None, "boom", "\x00", '"\x00', "\x00\x00", "ünïcode \\ \"quoted\""])
def test_trial_page_json_is_what_pydantic_writes_for_the_same_rows(error):
    """The page encoder splices stored JSON text into one encoding of the page; whatever a text field
    holds (even the splice marker), the answer decodes to what the response model would write."""
    from datetime import datetime

    from pydantic import TypeAdapter

    from service.public import TrialPublic
    from service.routes.experiments import trial_page_json
    from service.store import PAGE_COLUMNS

    rows = []
    for i, miou in enumerate([0.5, math.nan, None, math.inf, 1e-05]):
        arch = {"cells": [[0, i, "sum", 3]], "note": "\x00"}
        history = [{"epoch": 1, "miou": miou if miou is None or math.isfinite(miou) else 0.0}]
        rows.append(
            {
                "id": f"t{i}", "experiment_id": "e", "stage": 1, "kind": "searched", "state": "completed",
                "arch_hash": None if i == 2 else "h", "arch": None if i == 3 else json.dumps(arch),
                "epoch": i, "miou": miou, "latency_ms": 2.5, "params": 10**6, "reward": miou,
                "error": error, "node_id": "n", "history": json.dumps(history) if i != 4 else None,
                "created_at": datetime(2026, 1, 1, 12, 0, i), "updated_at": datetime(2026, 1, 1, 12, 0, 0, 5),
            }
        )
    decoded = [{**r, "arch": json.loads(r["arch"] or "null"), "history": json.loads(r["history"] or "[]")}
               for r in rows]
    expected = TypeAdapter(list[TrialPublic]).dump_json([TrialPublic.model_validate(r) for r in decoded])
    body = trial_page_json([tuple(r[c] for c in PAGE_COLUMNS) for r in rows])  # the store's rows are tuples
    assert json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} is not JSON")) == json.loads(expected)


def test_worker_processes_share_what_one_of_them_built(tmp_path):
    """Two apps on one home and database stand for two uvicorn workers: a trial page the first built
    is the second's answer without a build, and a write moves both on (the key is the version)."""
    settings = Settings(home=tmp_path / "home", cache_max_age_s=0)
    first, second = create_app(settings), create_app(settings)
    store = first.state.store
    exp = store.create_experiment("e", {"budget": {"trials": 2}})
    store.record_trial(f"{exp.id}-a", exp.id, state=State.COMPLETED, miou=0.5, latency_ms=5.0)
    with TestClient(first) as a, TestClient(second) as b:
        page = a.get(f"/v1/experiments/{exp.id}/trials").json()
        shared = second.state.response_cache.shared
        hits = shared.hits
        assert b.get(f"/v1/experiments/{exp.id}/trials").json() == page
        assert shared.hits == hits + 1  # served from the first worker's build

        Store(store.url).record_trial(f"{exp.id}-b", exp.id, state=State.COMPLETED, miou=0.7, latency_ms=4.0)
        assert len(b.get(f"/v1/experiments/{exp.id}/trials").json()) == 2
        assert len(a.get(f"/v1/experiments/{exp.id}/trials").json()) == 2


def test_shared_responses_are_bounded_and_start_empty(tmp_path):
    from service.routes.cache import SharedResponses

    path = tmp_path / "responses.sqlite"
    cache = SharedResponses(path, max_bytes=10_000)
    for i in range(50):
        cache.put(f"k{i}", 1, bytes(1000))
    stored = cache._db.execute("SELECT coalesce(sum(size), 0) FROM responses").fetchone()[0]
    assert stored <= 10_000 + 10_000 // 8 + 1000  # trimmed as it went: the bound, the check's slack, one entry
    assert cache.lookup("k49", 1) == bytes(1000)  # the newest stay
    assert cache.lookup("k49", 2) is None  # another version is not this answer
    cache.put("k49", 0, b"older")
    assert cache.lookup("k49", 1) == bytes(1000)  # an older version never replaces a newer one
    assert SharedResponses(path, max_bytes=10_000).lookup("k49", 1) is None  # a new run starts empty


def test_every_app_on_a_shared_store_sees_its_own_writes_and_dropped_listeners_are_forgotten(tmp_path):
    """The store is cached per URL, so apps made in one process share it: each app's clock is reset
    by a write (not only the first app's), and a listener that is gone is not kept alive by the store."""
    import gc
    import weakref

    settings = Settings(home=tmp_path / "home", cache_max_age_s=60)  # only a reset can show a write
    first, second = create_app(settings), create_app(settings)
    store = first.state.store
    assert second.state.store is store
    exp = store.create_experiment("e", {"budget": {"trials": 2}})
    with TestClient(first) as a, TestClient(second) as b:
        assert a.get("/v1/leaderboard").json()["rows"] == b.get("/v1/leaderboard").json()["rows"] == []
        store.record_trial(f"{exp.id}-a", exp.id, state=State.COMPLETED, miou=0.5, latency_ms=5.0)
        assert len(a.get("/v1/leaderboard").json()["rows"]) == 1
        assert len(b.get("/v1/leaderboard").json()["rows"]) == 1

    class Listener:
        calls = 0

        def reset(self) -> None:
            Listener.calls += 1

    listener = Listener()
    store.on_write(listener.reset)
    store.record_trial(f"{exp.id}-b", exp.id, state=State.COMPLETED, miou=0.6, latency_ms=5.0)
    assert Listener.calls == 1
    gone = weakref.ref(listener)
    del listener
    gc.collect()
    assert gone() is None  # the store held it weakly
    store.record_trial(f"{exp.id}-c", exp.id, state=State.COMPLETED, miou=0.7, latency_ms=5.0)
    assert Listener.calls == 1


def _early(app, route: str) -> float:
    """How many requests of ``route`` were answered before routing (routes/cached_reads.py)."""
    value = app.state.metrics.registry.get_sample_value("geonas_http_cached_reads_total", {"route": route})
    return value or 0.0


def _without_cached_reads(app):
    from service.routes.cached_reads import CachedReads

    app.user_middleware = [m for m in app.user_middleware if m.cls is not CachedReads]
    return app


def test_reads_answered_before_routing_are_the_routes_own_answers(tmp_path):
    """The same requests to the app and to the app without its early layer (routes/cached_reads.py)
    get the same status and bytes: built or cached, and every refusal (401, 404, 422) too."""
    from service.auth import create_token

    # one database, no shared cache level: each app builds its own answers
    settings = Settings(home=tmp_path / "home", auth=True, cache_max_age_s=0, shared_response_cache=False)
    app, plain = create_app(settings), _without_cached_reads(create_app(settings))
    store = app.state.store
    exp = store.create_experiment("e", {"budget": {"trials": 9}}, owner="ana")
    for i in range(9):
        store.record_trial(f"{exp.id}-{i}", exp.id, state=State.COMPLETED, miou=0.1 * i, latency_ms=3.0 + i % 4)
    tokens = {name: create_token(store, name, admin=name == "root") for name in ("ana", "bob", "root")}
    page = f"/v1/experiments/{exp.id}/trials"
    requests = [
        ("ana", page, {}),
        ("ana", page, {"limit": "4", "offset": "2", "stage": "1"}),
        ("ana", page, {"limit": "4", "offset": "2", "stage": "1"}),  # now cached
        ("root", page, {"limit": "4", "offset": "2", "stage": "1"}),
        ("ana", "/v1/leaderboard", {"max_latency_ms": "4.5", "limit": "3"}),
        ("ana", "/v1/leaderboard", {"max_latency_ms": "4.5", "limit": "3"}),
        ("bob", "/v1/leaderboard", {"max_latency_ms": "4.5", "limit": "3"}),  # the board is per owner
        ("root", "/v1/leaderboard", {}),
        ("bob", page, {}),  # someone else's: the same 404 as a missing one
        ("ana", "/v1/experiments/nope/trials", {}),
        (None, page, {}),
        ("bad", page, {}),
        ("ana", page, {"limit": "0"}),
        ("ana", page, {"offset": "-1", "stage": "3"}),
        ("ana", "/v1/leaderboard", {"max_latency_ms": "fast"}),
        ("ana", page, [("limit", "2"), ("limit", "3")]),  # a repeated parameter: FastAPI's to read
    ]
    with TestClient(app) as early, TestClient(plain) as routed:
        for who, path, params in requests:
            token = {"bad": "gnt_nope_nope", None: ""}.get(who, tokens.get(who))
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            a, b = early.get(path, params=params, headers=headers), routed.get(path, params=params, headers=headers)
            assert (a.status_code, a.headers["content-type"], a.content) == (
                b.status_code, b.headers["content-type"], b.content
            ), (who, path, params)
            assert a.headers.get("www-authenticate") == b.headers.get("www-authenticate")
            assert "x-request-id" in a.headers  # the request middleware still wraps it
        metrics = early.get("/metrics").text
    trials = "/v1/experiments/{experiment_id}/trials"
    assert _early(app, trials) == 4 and _early(app, "/v1/leaderboard") == 4 and _early(plain, trials) == 0
    # five 200s on the page: four answered early, the repeated parameter routed (and counted) all the same
    assert f'geonas_http_requests_total{{method="GET",route="{trials}",status="200"}} 5.0' in metrics
    assert f'geonas_http_requests_total{{method="GET",route="{trials}",status="404"}} 2.0' in metrics


def test_the_rate_limit_counts_reads_answered_before_routing(tmp_path):
    """One token per request, as the route's dependency takes; the 429 (with Retry-After) is the route's."""
    from service.auth import create_token

    app = create_app(Settings(home=tmp_path / "home", auth=True, rate_limit_per_s=0.5, rate_limit_burst=4))
    store = app.state.store
    exp = store.create_experiment("e", {"budget": {"trials": 2}}, owner="ana")
    store.record_trial(f"{exp.id}-a", exp.id, state=State.COMPLETED, miou=0.5, latency_ms=5.0)
    tokens = {name: create_token(store, name) for name in ("ana", "bob")}
    with TestClient(app) as client:
        def get(who, **params):
            return client.get(f"/v1/experiments/{exp.id}/trials", params=params, headers={
                "Authorization": f"Bearer {tokens[who]}"
            })

        assert get("ana", limit=0).status_code == 422  # a refused query takes a token too, as it always did
        statuses = [get("ana").status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        refused = get("ana")
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert get("bob").status_code == 404  # bob's bucket is his own
    assert _early(app, "/v1/experiments/{experiment_id}/trials") == 3
