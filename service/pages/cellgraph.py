"""The architecture of a model drawn as an SVG graph of its NAS-FPN merge cells.

Layout follows the spec's own structure: one row per pyramid level, one column per pool entry (the
backbone's features first, then each cell in order), so an edge always runs left to right from the
two pool entries a cell reads to the cell. The last column shows the decoder's outputs per level:
the last pool entry at that level plus every unused entry of that level (the builder's rule).
"""

from __future__ import annotations

from typing import Any

from search_spaces.errors import SpecError

from .svg import esc, svg_document

__all__ = ["cell_graph_svg"]

_NODE_W, _NODE_H, _COL, _ROW, _PAD = 136, 42, 164, 66, 20
_OP_COLOURS = {
    "sum": "#dbeafe",
    "global_attention": "#fde68a",
    "product": "#fecaca",
    "max": "#d1fae5",
    "concat_conv": "#e9d5ff",
}


def cell_graph_svg(descriptor: dict[str, Any]) -> str:
    if "arch" not in descriptor:
        name = descriptor.get("baseline", "model")
        backbone = descriptor.get("backbone", "?")
        body = [
            f'<g class="baseline-node"><rect x="20" y="20" width="300" height="50" rx="8" fill="#ede9fe" '
            f'stroke="#6d28d9"/><text x="170" y="50" text-anchor="middle" font-size="14">baseline '
            f"{esc(name)} on {esc(backbone)} (no searched cells)</text></g>"
        ]
        return svg_document(340, 90, body, "cell-graph", cells=0)
    # Imported here: search_spaces.nasfpn pulls in torch (through its op registry), which the API
    # must not load at import time; the ArchSpec rules (pool, outputs) are worth the one-off cost.
    from search_spaces.nasfpn import ArchSpec

    try:
        arch = ArchSpec.from_dict(descriptor["arch"])
    except SpecError as exc:
        return svg_document(
            600,
            60,
            [f'<text x="10" y="30" fill="#b91c1c">architecture unreadable: {esc(exc)}</text>'],
            "cell-graph",
            cells=0,
        )
    levels = list(arch.levels)
    pool_levels = arch.pool_levels()
    n_inputs = len(levels)

    def pos(index: int) -> tuple[float, float]:
        column = 0 if index < n_inputs else index - n_inputs + 1
        row = levels.index(pool_levels[index])
        return _PAD + column * _COL, _PAD + 24 + row * _ROW

    out_column = len(arch.cells) + 1
    width = int(_PAD * 2 + out_column * _COL + _NODE_W)
    height = int(_PAD * 2 + 24 + len(levels) * _ROW)
    edges, nodes = [], []
    header = (
        f'<text x="{_PAD}" y="{_PAD + 4}" font-size="13" font-weight="600">{esc(arch.backbone)} · '
        f"{arch.channels} channels · {len(arch.cells)} cells · levels {', '.join(map(str, levels))}</text>"
    )

    def edge(src: int, dst_xy: tuple[float, float], css: str) -> str:
        sx, sy = pos(src)
        x1, y1 = sx + _NODE_W, sy + _NODE_H / 2
        x2, y2 = dst_xy[0], dst_xy[1] + _NODE_H / 2
        mid = (x1 + x2) / 2
        return (
            f'<path class="{css}" d="M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} {x2:.0f},{y2:.0f}" '
            'fill="none" stroke="#64748b" stroke-width="1.3" marker-end="url(#arrow)"/>'
        )

    for i, level in enumerate(levels):
        x, y = pos(i)
        nodes.append(
            f'<g class="input-node" data-pool="{i}"><rect x="{x}" y="{y}" width="{_NODE_W}" height="{_NODE_H}" '
            f'rx="6" fill="#f1f5f9" stroke="#475569"/><text x="{x + _NODE_W / 2}" y="{y + 17}" '
            f'text-anchor="middle" font-size="12">#{i} backbone</text><text x="{x + _NODE_W / 2}" y="{y + 33}" '
            f'text-anchor="middle" font-size="11" fill="#475569">level {level} · stride {2**level}</text>'
            f"<title>pool #{i}: backbone feature at stride {2**level}</title></g>"
        )
    for c, cell in enumerate(arch.cells):
        index = n_inputs + c
        x, y = pos(index)
        edges.append(edge(cell.a, (x, y), "edge"))
        edges.append(edge(cell.b, (x, y), "edge"))
        fill = _OP_COLOURS.get(cell.op, "#e5e7eb")
        nodes.append(
            f'<g class="cell-node" data-cell="{c}" data-op="{esc(cell.op)}"><rect x="{x}" y="{y}" '
            f'width="{_NODE_W}" height="{_NODE_H}" rx="6" fill="{fill}" stroke="#1e293b"/>'
            f'<text x="{x + _NODE_W / 2}" y="{y + 17}" text-anchor="middle" font-size="12">#{index} '
            f'{esc(cell.op)}</text><text x="{x + _NODE_W / 2}" y="{y + 33}" text-anchor="middle" font-size="11" '
            f'fill="#334155">level {cell.level} ← #{cell.a}, #{cell.b}</text>'
            f"<title>cell {c}: {esc(cell.op)}(#{cell.a}, #{cell.b}) resampled to stride {2**cell.level}</title></g>"
        )
    unused = set(arch.unused())
    for row, level in enumerate(levels):
        at_level = [i for i, lv in enumerate(pool_levels) if lv == level]
        sources = sorted({at_level[-1], *(i for i in at_level if i in unused)})
        x, y = _PAD + out_column * _COL, _PAD + 24 + row * _ROW
        for src in sources:
            edges.append(edge(src, (x, y), "edge output-edge"))
        nodes.append(
            f'<g class="output-node" data-level="{level}"><rect x="{x}" y="{y}" width="{_NODE_W}" '
            f'height="{_NODE_H}" rx="21" fill="#fff" stroke="#16a34a" stroke-width="2"/><text x="{x + _NODE_W / 2}" '
            f'y="{y + 25}" text-anchor="middle" font-size="12">output P{level}</text></g>'
        )
    marker = (
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#64748b"/></marker></defs>'
    )
    return svg_document(width, height, [marker, header, *edges, *nodes], "cell-graph", cells=len(arch.cells))
