"""A small REST client for the geonas API; the CLI never touches the database directly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from search_spaces.errors import GeonasError

__all__ = ["ApiClient", "ApiError"]


class ApiError(GeonasError):
    """The API answered with an error, or could not be reached."""


def _describe(detail: Any) -> str:
    if isinstance(detail, list):
        parts = []
        for item in detail:
            loc = ".".join(str(x) for x in item.get("loc", []) if x != "body")
            parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
        return "; ".join(parts)
    return str(detail)


class ApiClient:
    def __init__(self, url: str, timeout: float = 30.0, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        token = token or os.environ.get("GEONAS_TOKEN")  # `geonas --token` sets it for the process
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach the geonas API at {self.url} ({exc}); is `geonas serve` running?") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(f"{response.status_code}: {_describe(detail)}")
        return response.json()

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/healthz")

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/experiments", json=spec)

    def experiments(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/experiments")

    def experiment(self, experiment_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/experiments/{experiment_id}")

    def trials(self, experiment_id: str, page: int = 1000) -> list[dict[str, Any]]:
        """All trials of an experiment, page by page (the API pages them)."""
        out: list[dict[str, Any]] = []
        while True:
            batch = self._call(
                "GET", f"/v1/experiments/{experiment_id}/trials", params={"limit": page, "offset": len(out)}
            )
            out += batch
            if len(batch) < page:
                return out

    def models(self, experiment_id: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/models", params={"experiment_id": experiment_id} if experiment_id else None)

    def model(self, model_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/models/{model_id}")

    def download_artifact(self, model_id: str, name: str, dest: Path) -> Path:
        try:
            with self._http.stream("GET", f"/v1/models/{model_id}/artifacts/{name}") as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError(f"{response.status_code}: {_describe(response.json().get('detail'))}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_suffix(dest.suffix + ".part")
                with tmp.open("wb") as fh:
                    for chunk in response.iter_bytes():
                        fh.write(chunk)
                tmp.replace(dest)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot download {name} of model {model_id}: {exc}") from None
        return dest

    def cancel(self, experiment_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/experiments/{experiment_id}/cancel")

    def resume(self, experiment_id: str, trials: int | None = None) -> dict[str, Any]:
        return self._call("POST", f"/v1/experiments/{experiment_id}/resume", json={"trials": trials})

    def submit_pretraining(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/pretraining", json=spec)

    def pretraining(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/pretraining/{job_id}")

    def submit_prediction(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/predictions", json=spec)

    def prediction(self, prediction_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/predictions/{prediction_id}")

    def predictions(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/predictions")

    def resume_prediction(self, prediction_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/predictions/{prediction_id}/resume")

    def backbones(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/backbones")

    def leaderboard(self, **params: Any) -> dict[str, Any]:
        clean = {k: v for k, v in params.items() if v is not None}
        return self._call("GET", "/v1/leaderboard", params=clean)
