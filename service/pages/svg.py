"""Small SVG building blocks shared by the charts and the cell graph: escaping, scales, axes, ticks.

Why hand-written: every chart here is a scatter, a line or a bar; a few dozen lines of SVG cover
them, and markup produced in Python is testable without a browser and needs no JS bundle.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape

__all__ = ["esc", "nice_ticks", "Plot", "fmt_num", "svg_document", "empty_chart"]


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def fmt_num(value: float) -> str:
    """A tick label: no trailing zeros, at most 3 significant decimals."""
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] with steps of 1, 2 or 5 × 10^k."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    span = hi - lo
    if span <= 0:
        span = abs(hi) or 1.0
    raw = span / max(count, 1)
    step = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= step * mult:
            step *= mult
            break
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = start
    while value <= hi + step * 1e-9 and len(ticks) < 50:
        ticks.append(round(value, 12))
        value += step
    return ticks


def padded(lo: float, hi: float, frac: float = 0.05) -> tuple[float, float]:
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * frac
    return lo - pad, hi + pad


@dataclass
class Plot:
    """A rectangular plot area with linear x/y scales inside fixed margins."""

    width: int
    height: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    left: int = 56
    right: int = 16
    top: int = 14
    bottom: int = 42

    def sx(self, x: float) -> float:
        lo, hi = self.x_range
        return self.left + (x - lo) / ((hi - lo) or 1.0) * (self.width - self.left - self.right)

    def sy(self, y: float) -> float:
        lo, hi = self.y_range
        return self.height - self.bottom - (y - lo) / ((hi - lo) or 1.0) * (self.height - self.top - self.bottom)

    def axes(self, x_label: str, y_label: str) -> str:
        x0, x1 = self.left, self.width - self.right
        y0, y1 = self.height - self.bottom, self.top
        parts = ['<g class="axes" font-size="11" fill="#555">']
        for t in nice_ticks(*self.x_range):
            x = self.sx(t)
            parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y1}" stroke="#eee"/>')
            parts.append(f'<text x="{x:.1f}" y="{y0 + 15}" text-anchor="middle">{fmt_num(t)}</text>')
        for t in nice_ticks(*self.y_range):
            y = self.sy(t)
            parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#eee"/>')
            parts.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt_num(t)}</text>')
        parts.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" stroke="#999"/>')
        parts.append(f'<text x="{(x0 + x1) / 2:.0f}" y="{self.height - 6}" text-anchor="middle">{esc(x_label)}</text>')
        parts.append(
            f'<text transform="translate(13,{(y0 + y1) / 2:.0f}) rotate(-90)" text-anchor="middle">'
            f"{esc(y_label)}</text>"
        )
        parts.append("</g>")
        return "".join(parts)


def svg_document(width: int, height: int, body: Iterable[str], css_class: str, **data: object) -> str:
    attrs = "".join(f' data-{k.replace("_", "-")}="{esc(v)}"' for k, v in data.items())
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{esc(css_class)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" font-family="system-ui, sans-serif"{attrs}>' + "".join(body) + "</svg>"
    )


def empty_chart(width: int, height: int, css_class: str, message: str) -> str:
    return svg_document(
        width,
        height,
        [
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#888" font-size="13">'
            f"{esc(message)}</text>"
        ],
        css_class,
        points=0,
    )
