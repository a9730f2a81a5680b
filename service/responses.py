"""Error bodies and the status codes each route documents, so the OpenAPI schema says every answer.

Schemathesis (tests/test_schema.py) holds the app to this: a status code a route can answer must be
listed here or in the route's ``responses=``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["ErrorPublic", "COMMON", "NOT_FOUND", "CONFLICT", "NO_CLUSTER", "INVALID"]


class ErrorPublic(BaseModel):
    detail: str | list[dict[str, Any]]
    error: str | None = None


def _r(text: str) -> dict[str, Any]:
    return {"model": ErrorPublic, "description": text}


#: Every /v1 route: auth, body size and rate limit apply to all of them.
COMMON: dict[int | str, dict[str, Any]] = {
    400: _r("The body is not parseable JSON."),
    401: _r("No valid bearer token (auth is on)."),
    413: _r("Request body larger than the configured limit."),
    429: _r("Too many requests for this token; see Retry-After."),
}
NOT_FOUND = {404: _r("No such resource, or it belongs to another user.")}
CONFLICT = {409: _r("The resource is in a state that does not allow this.")}
NO_CLUSTER = {503: _r("No Ray cluster configured or reachable; nothing was stored.")}
INVALID = {422: _r("Invalid input; `detail` names the field.")}
