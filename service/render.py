"""Terminal rendering of trials, experiments and the leaderboard (rich tables)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

__all__ = ["trials_table", "leaderboard_table", "experiments_table"]


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def trials_table(trials: list[dict[str, Any]], title: str = "trials") -> Table:
    table = Table(title=title)
    for col in ("trial", "kind", "arch hash", "state", "epoch", "mIoU", "latency ms", "reward", "note"):
        table.add_column(col)
    for t in trials:
        table.add_row(
            t["id"].split("-", 1)[-1],
            t["kind"],
            t.get("arch_hash") or "—",
            t["state"],
            str(t.get("epoch", 0)),
            _fmt(t.get("miou")),
            _fmt(t.get("latency_ms"), ".2f"),
            _fmt(t.get("reward")),
            (t.get("error") or "")[:60],
        )
    return table


def leaderboard_table(board: dict[str, Any]) -> Table:
    table = Table(title="leaderboard")
    for col in ("#", "experiment", "kind", "arch hash", "mIoU", "latency ms", "device", "params", "pareto", "target"):
        table.add_column(col)
    for r in board["rows"]:
        table.add_row(
            str(r["rank"]),
            r["experiment_name"],
            r["kind"],
            r.get("arch_hash") or "—",
            _fmt(r["miou"]),
            _fmt(r.get("latency_ms"), ".2f"),
            r.get("latency_device") or "—",
            _fmt(r.get("params"), ","),
            "★" if r["pareto"] else "",
            _target_cell(r),
        )
    return table


def _target_cell(row: dict[str, Any]) -> str:
    """✓ meets the experiment's latency target, ✗ does not, — no target; then any flags."""
    meets = row.get("meets_target")
    mark = "—" if meets is None else ("✓" if meets else "✗")
    return " ".join([mark, *row.get("flags", [])])


def experiments_table(experiments: list[dict[str, Any]]) -> Table:
    table = Table(title="experiments")
    for col in ("id", "name", "state", "trials", "created", "error"):
        table.add_column(col)
    for e in experiments:
        table.add_row(
            e["id"],
            e["name"],
            e["state"],
            f"{e['trials_done']}/{e['trials_total']}",
            str(e["created_at"])[:19],
            (e.get("error") or "")[:60],
        )
    return table
