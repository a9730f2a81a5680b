"""Schemathesis over the OpenAPI schema: no 5xx, every answer documented and shaped as documented.

The app runs as the API of a deployment without a cluster (submissions answer 503, documented), on
a real SQLite store with one user's experiment and trials in it, with auth on and an admin token, so
generated requests reach the routes' code. The run is bounded (few examples per operation, no
deadline) so it stays well under 90 s on 2 shared cores; every (operation, status) seen is printed
as a summary.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app
from service.auth import create_token
from service.settings import Settings
from service.states import State

_home = Path(tempfile.mkdtemp(prefix="geonas-schema-"))
app = create_app(Settings(home=_home, auth=True, rate_limit_per_s=0))
_store = app.state.store
TOKEN = create_token(_store, "schema", admin=True)
_exp = _store.create_experiment("seeded", {"budget": {"trials": 2}}, owner="schema")
_store.record_trial(f"{_exp.id}-0", _exp.id, state=State.RUNNING, arch={}, arch_hash="h0")
_store.record_trial(f"{_exp.id}-0", _exp.id, state=State.COMPLETED, miou=0.5, latency_ms=4.0)

schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.hook
def flatmap_path_parameters(ctx, path_parameters):
    """Random experiment ids are all 404s: draw the seeded experiment's id as often, so the answers of
    its routes (a trial page, the experiment, cancel, resume) are generated and checked too."""
    if path_parameters and "experiment_id" in path_parameters:
        return st.sampled_from([{**path_parameters, "experiment_id": _exp.id}, path_parameters])
    return st.just(path_parameters)


SEEN: Counter[tuple[str, int]] = Counter()
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


def _allowed_5xx(response) -> bool:
    """The one 5xx this deployment may give: 503 "no Ray cluster" (documented on the routes that submit)."""
    return response.status_code == 503 and response.json().get("error") == "ClusterError"


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    lines = [f"{op} -> {status}: {n}" for (op, status), n in sorted(SEEN.items())]
    print(f"\nschemathesis summary: {sum(SEEN.values())} requests (operation -> status: requests)")
    print("\n".join(lines))
    assert all(status < 500 or status == 503 for _, status in SEEN)


@schema.parametrize()
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case):
    response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
    SEEN[(f"{case.method} {case.path}", response.status_code)] += 1
    assert response.status_code < 500 or _allowed_5xx(response), response.text
    case.validate_response(response, checks=CHECKS)


def test_unauthenticated_requests_are_documented_401s():
    from fastapi.testclient import TestClient

    client = TestClient(app)
    spec = client.get("/openapi.json").json()
    for path, ops in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, op in ops.items():
            assert "401" in op["responses"], (method, path)
            url = path.replace("{experiment_id}", _exp.id).replace("{job_id}", "x").replace("{model_id}", "x")
            assert client.request(method, url.replace("{name}", "x")).status_code == 401, (method, path)
