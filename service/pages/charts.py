"""The experiment and pretraining charts as server-side SVG.

Each function takes plain rows and returns an SVG string; nothing here touches the store or HTTP.
Points carry ``class="pt"`` (plus ``front``, ``stage2``, ``baseline``) and ``data-trial`` so the page
script can select a trial by clicking and a browser test can count them. Above
:data:`BULK_THRESHOLD` points the ordinary stage-1 points are rasterised into one PNG layer
(:mod:`.raster`): the same picture at 10,000 trials with one element to paint instead of 10,000,
while the front, stage-2 models and baselines stay individual, clickable elements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .queries import TrialRow
from .raster import points_image
from .svg import Plot, empty_chart, esc, fmt_num, padded, svg_document

__all__ = ["pareto_front", "scatter_svg", "rewards_svg", "curves_svg", "bars_svg", "loss_svg", "BULK_THRESHOLD"]

BULK_THRESHOLD = 1500
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def pareto_front(points: Sequence[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Points (latency, mIoU, id) that no other point beats on both axes, by increasing latency.

    O(n log n): sort by latency (ties: best mIoU first) and keep each point that raises the best mIoU.
    """
    front: list[tuple[float, float, str]] = []
    best = float("-inf")
    for lat, miou, ident in sorted(points, key=lambda p: (p[0], -p[1])):
        if miou > best:
            front.append((lat, miou, ident))
            best = miou
    return front


def _title(t: TrialRow) -> str:
    lat = "—" if t.latency_ms is None else f"{t.latency_ms:.2f} ms"
    miou = "—" if t.miou is None else f"{t.miou:.3f}"
    return f"{t.arch_hash or t.id} · {t.kind} · stage {t.stage} · mIoU {miou} · {lat}"


def scatter_svg(trials: Sequence[TrialRow], target_ms: float | None, width: int = 640, height: int = 380) -> str:
    """mIoU against latency: one point per measured trial, the stage-1 Pareto front, the latency target."""
    measured = [t for t in trials if t.miou is not None and t.latency_ms is not None]
    if not measured:
        return empty_chart(width, height, "chart scatter", "no trial has both mIoU and latency yet")
    lats = [t.latency_ms for t in measured] + ([target_ms] if target_ms else [])
    mious = [t.miou for t in measured]
    plot = Plot(width, height, padded(min(lats), max(lats)), padded(min(mious), max(mious)), top=30)
    # The search's front: stage-1 trials (searched and baselines, trained the same way). Stage-2 mIoU
    # comes from longer training on the test split, so those models are marked, not ranked with them.
    front = pareto_front([(t.latency_ms, t.miou, t.id) for t in measured if t.stage == 1])
    front_ids = {ident for _, _, ident in front}
    body = [plot.axes("latency (ms)", "mIoU")]
    if target_ms:
        x = plot.sx(target_ms)
        body.append(
            f'<g class="target"><line x1="{x:.1f}" y1="{plot.top}" x2="{x:.1f}" y2="{height - plot.bottom}" '
            f'stroke="#d62728" stroke-dasharray="5 4"/><text x="{x + 4:.1f}" y="{plot.top + 12}" '
            f'font-size="11" fill="#d62728">target {fmt_num(target_ms)} ms</text></g>'
        )
    path = " ".join(
        f"{'M' if i == 0 else 'L'}{plot.sx(lat):.1f},{plot.sy(m):.1f}" for i, (lat, m, _) in enumerate(front)
    )
    body.append(f'<path class="front" d="{path}" fill="none" stroke="#2ca02c" stroke-width="2"/>')
    ordinary = [t for t in measured if t.stage == 1 and t.kind != "baseline" and t.id not in front_ids]
    ordinary_ids = {t.id for t in ordinary}
    special = [t for t in measured if t.id not in ordinary_ids]
    if len(measured) > BULK_THRESHOLD:
        xs = np.array([plot.sx(t.latency_ms) for t in ordinary])
        body.append(points_image(xs, np.array([plot.sy(t.miou) for t in ordinary]), width, height))
    else:
        for t in ordinary:
            body.append(_point(plot, t, "pt"))
    for t in sorted(special, key=lambda t: (t.stage, t.id in front_ids)):
        classes = ["pt"]
        if t.id in front_ids:
            classes.append("front")
        if t.stage == 2:
            classes.append("stage2")
        if t.kind == "baseline":
            classes.append("baseline")
        body.append(_point(plot, t, " ".join(classes)))
    body.append(_legend(width))
    return svg_document(
        width,
        height,
        body,
        "chart scatter",
        points=len(measured),
        front=len(front),
        trials=len(trials),
    )


def _point(plot: Plot, t: TrialRow, classes: str) -> str:
    x, y = plot.sx(t.latency_ms), plot.sy(t.miou)
    title = f"<title>{esc(_title(t))}</title>"
    data = f'class="{classes}" data-trial="{esc(t.id)}"'
    if "baseline" in classes:
        return f'<path {data} d="M{x:.1f} {y - 6:.1f}l6 6l-6 6l-6 -6z" fill="#9467bd" stroke="#333">{title}</path>'
    if "stage2" in classes:
        return f'<circle {data} cx="{x:.1f}" cy="{y:.1f}" r="7" fill="#ff7f0e" stroke="#333">{title}</circle>'
    fill, r = ("#2ca02c", 5) if "front" in classes else ("#1f77b4", 4)
    return f'<circle {data} cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{fill}" fill-opacity="0.75">{title}</circle>'


def _legend(width: int) -> str:
    items = [("#1f77b4", "stage 1"), ("#2ca02c", "Pareto front"), ("#ff7f0e", "stage 2"), ("#9467bd", "baseline")]
    parts = ['<g class="legend" font-size="11">']
    x = width - 16 - 92 * len(items)
    for colour, label in items:
        parts.append(f'<circle cx="{x + 6}" cy="-4" r="5" fill="{colour}" transform="translate(0,14)"/>')
        parts.append(f'<text x="{x + 14}" y="14">{esc(label)}</text>')
        x += 92
    parts.append("</g>")
    return "".join(parts)


def rewards_svg(trials: Sequence[TrialRow], width: int = 640, height: int = 260) -> str:
    """Reward of each stage-1 trial in the order trials started, with the running best as a step line."""
    rewarded = [t for t in trials if t.stage == 1 and t.reward is not None]
    if not rewarded:
        return empty_chart(width, height, "chart rewards", "no rewards yet")
    rewards = [t.reward for t in rewarded]
    plot = Plot(width, height, padded(0, len(rewarded) - 1 or 1, 0.02), padded(min(rewards), max(rewards)))
    body = [plot.axes("trial (in order of start)", "reward")]
    if len(rewarded) > BULK_THRESHOLD:
        xs = np.array([plot.sx(i) for i in range(len(rewards))])
        body.append(points_image(xs, np.array([plot.sy(r) for r in rewards]), width, height, radius=2, opacity=0.4))
    else:
        for i, t in enumerate(rewarded):
            body.append(
                f'<circle class="pt" data-trial="{esc(t.id)}" cx="{plot.sx(i):.1f}" cy="{plot.sy(t.reward):.1f}" '
                f'r="3.5" fill="#1f77b4" fill-opacity="0.7"><title>{esc(t.arch_hash or t.id)} · reward '
                f"{t.reward:.4f}</title></circle>"
            )
    best, steps = float("-inf"), []
    for i, r in enumerate(rewards):
        if r > best:
            best = r
            steps.append((i, r))
    d = f"M{plot.sx(steps[0][0]):.1f},{plot.sy(steps[0][1]):.1f}"
    for i, r in steps[1:]:
        d += f"H{plot.sx(i):.1f}V{plot.sy(r):.1f}"
    d += f"H{plot.sx(len(rewards) - 1):.1f}"
    body.append(f'<path class="running-best" d="{d}" fill="none" stroke="#d62728" stroke-width="2"/>')
    body.append(
        f'<text x="{width - 22}" y="{height - plot.bottom - 6}" text-anchor="end" font-size="11" '
        f'fill="#d62728" paint-order="stroke" stroke="#fff" stroke-width="3">'
        f"running best {best:.4f}</text>"
    )
    return svg_document(width, height, body, "chart rewards", points=len(rewarded))


def _line_panel(
    series: Sequence[tuple[str, list[tuple[float, float]], bool]], width: int, height: int, y_label: str, css: str
) -> str:
    points = [p for _, pts, _ in series for p in pts]
    if not points:
        return empty_chart(width, height, f"chart {css}", f"no per-epoch {y_label} recorded")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    plot = Plot(width, height, padded(min(xs), max(xs), 0.03), padded(min(ys), max(ys)))
    body = [plot.axes("epoch", y_label)]
    for idx, (label, pts, highlight) in enumerate(sorted(series, key=lambda s: s[2])):
        if not pts:
            continue
        d = " ".join(f"{'M' if i == 0 else 'L'}{plot.sx(x):.1f},{plot.sy(y):.1f}" for i, (x, y) in enumerate(pts))
        colour = "#d62728" if highlight else COLOURS[idx % len(COLOURS)]
        width_px, opacity = (2.5, 1.0) if highlight else (1.2, 0.35)
        body.append(
            f'<path class="curve{" highlight" if highlight else ""}" data-trial="{esc(label)}" d="{d}" fill="none" '
            f'stroke="{colour}" stroke-width="{width_px}" stroke-opacity="{opacity}"><title>{esc(label)}</title></path>'
        )
        if highlight:
            for x, y in pts:
                body.append(f'<circle cx="{plot.sx(x):.1f}" cy="{plot.sy(y):.1f}" r="3" fill="{colour}"/>')
    return svg_document(width, height, body, f"chart {css}", curves=len(series))


def curves_svg(histories: dict[str, list[dict[str, Any]]], highlight: str | None, width: int = 640) -> str:
    """Per-epoch validation mIoU (top) and training loss (bottom) of the given trials; one highlighted."""

    def series(key: str) -> list[tuple[str, list[tuple[float, float]], bool]]:
        out = []
        for ident, history in histories.items():
            pts = []
            for i, h in enumerate(history or []):
                value = h.get(key) if isinstance(h, dict) else None
                if isinstance(value, int | float):
                    pts.append((float(h.get("epoch", i + 1)), float(value)))
            out.append((ident, sorted(pts), ident == highlight))
        return out

    miou = _line_panel(series("miou"), width, 220, "mIoU", "curves-miou")
    loss = _line_panel(series("loss"), width, 180, "loss", "curves-loss")
    return f'<div class="curves">{miou}{loss}</div>'


def bars_svg(values: dict[str, float], width: int = 520, label: str = "IoU") -> str:
    """Horizontal bars, one per class (per-class IoU on the test split)."""
    rows = [(str(k), float(v)) for k, v in values.items() if isinstance(v, int | float)]
    if not rows:
        return empty_chart(width, 80, "chart bars", f"no per-class {label}")
    height = 30 + 24 * len(rows)
    left, span = 130, width - 130 - 60
    body = []
    for i, (name, value) in enumerate(rows):
        y = 10 + 24 * i
        w = max(0.0, min(1.0, value)) * span
        body.append(
            f'<g class="bar"><text x="{left - 8}" y="{y + 15}" text-anchor="end" font-size="12">{esc(name)}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{span}" height="16" fill="#f0f0f0"/>'
            f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="16" fill="#1f77b4"/>'
            f'<text x="{left + span + 6}" y="{y + 15}" font-size="12">{value:.3f}</text></g>'
        )
    return svg_document(width, height, body, "chart bars", bars=len(rows))


def loss_svg(curve: Sequence[dict[str, Any]], width: int = 640, height: int = 300) -> str:
    """Contrastive loss against step for a pretraining job."""
    pts = [
        (float(p["step"]), float(p["loss"]))
        for p in curve
        if isinstance(p, dict) and isinstance(p.get("step"), int | float) and isinstance(p.get("loss"), int | float)
    ]
    if not pts:
        return empty_chart(width, height, "chart loss", "no loss recorded yet")
    if len(pts) > 2000:  # one vertex per screen pixel is enough
        stride = len(pts) // 1000
        pts = pts[::stride] + [pts[-1]]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    plot = Plot(width, height, padded(min(xs), max(xs), 0.02), padded(min(ys), max(ys)))
    d = " ".join(f"{'M' if i == 0 else 'L'}{plot.sx(x):.1f},{plot.sy(y):.1f}" for i, (x, y) in enumerate(pts))
    body = [
        plot.axes("step", "loss"),
        f'<path class="loss-line" d="{d}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>',
    ]
    return svg_document(width, height, body, "chart loss", points=len(pts))
