"""Structured logs: one JSON object per line, carrying the request id and experiment id in context.

Log aggregators (Loki, CloudWatch, `jq`) can then follow one request or one experiment across the
API and its drivers without parsing free text. The ids live in context variables, so every log call
inside a request (or a driver) carries them without passing them around.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

__all__ = ["JsonFormatter", "configure_logging", "request_id", "experiment_id", "trial_id"]

request_id: ContextVar[str | None] = ContextVar("geonas_request_id", default=None)
experiment_id: ContextVar[str | None] = ContextVar("geonas_experiment_id", default=None)
trial_id: ContextVar[str | None] = ContextVar("geonas_trial_id", default=None)

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "request_id"?, "experiment_id"?, ...extra}`` per record."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, var in (("request_id", request_id), ("experiment_id", experiment_id), ("trial_id", trial_id)):
            value = getattr(record, key, None) or var.get()
            if value:
                out[key] = value
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD and k not in out})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: int = logging.INFO, *, experiment: str | None = None) -> None:
    """Send the root logger's records to stderr as JSON; ``experiment`` tags every line of a driver."""
    if experiment is not None:
        experiment_id.set(experiment)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h.formatter, JsonFormatter)] + [handler]
    root.setLevel(level)
