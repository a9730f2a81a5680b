"""Follow an experiment from the terminal: a live trial table until it reaches a terminal state."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.text import Text

from .client import ApiClient
from .render import trials_table
from .states import TERMINAL

__all__ = ["watch_experiment"]


def _view(exp: dict[str, Any], trials: list[dict[str, Any]]) -> Group:
    done, total = exp["trials_done"], max(exp["trials_total"], 1)
    header = Text(f"experiment {exp['id']} ({exp['name']}): {exp['state']} — {done}/{total} trials")
    return Group(header, ProgressBar(total=total, completed=done, width=60), trials_table(trials))


def watch_experiment(
    client: ApiClient,
    experiment_id: str,
    console: Console,
    poll_s: float = 2.0,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Poll the API and redraw until the experiment finishes; returns its final record."""
    started = time.monotonic()
    exp = client.experiment(experiment_id)
    with Live(_view(exp, []), console=console, refresh_per_second=2, transient=False) as live:
        while True:
            exp = client.experiment(experiment_id)
            live.update(_view(exp, client.trials(experiment_id)))
            if exp["state"] in {str(s) for s in TERMINAL}:
                return exp
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                return exp
            time.sleep(poll_s)
