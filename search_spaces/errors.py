"""One exception hierarchy for the whole product.

Every error a user can cause is a :class:`GeonasError`; its message says what is wrong and what to
do. The API maps them to HTTP status codes in one handler, the CLI prints them without a traceback.
This module lives in the lowest package so that every other package can raise these.
"""

from __future__ import annotations

__all__ = ["GeonasError", "SpecError", "DataError", "NotFound", "Conflict", "ClusterError"]


class GeonasError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""

    status_code = 400


class SpecError(GeonasError):
    """A spec (architecture, experiment, pretraining) is invalid."""

    status_code = 422

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DataError(GeonasError):
    """A dataset is missing, unreadable or inconsistent; the message names the file."""

    status_code = 422


class NotFound(GeonasError):
    status_code = 404


class Conflict(GeonasError):
    """The request is valid but the resource is in the wrong state (e.g. an illegal transition)."""

    status_code = 409


class ClusterError(GeonasError):
    """The Ray cluster cannot be reached or refused the work."""

    status_code = 503
