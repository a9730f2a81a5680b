"""The NAS-FPN architecture language: merge-cell specs, their canonical form, and the token space.

A decoder starts with a *pool* holding one feature map per backbone level (level = log2 of the
stride: level 2 is stride 4). Each merge cell picks two pool entries, an output level and a binary
op; both inputs are resampled to that level, combined, passed through ReLU → conv3×3 → BN, and the
result is appended to the pool. The output of level ``l`` is the last pool entry at ``l``, plus every
pool feature of that level that no cell used as an input.

An :class:`ArchSpec` is immutable, validated on construction, and has one canonical JSON form (each
cell's inputs sorted, since every registered op is order-free) and a hash of it that is stable across
processes and machines.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .errors import SpecError
from .ops import DEFAULT_OPS, list_ops
from .tokens import sample_uniform

__all__ = ["Cell", "ArchSpec", "SearchSpaceConfig", "NasFpnSpace", "DEFAULT_LEVELS"]

DEFAULT_LEVELS: tuple[int, ...] = (2, 3, 4, 5)


@dataclass(frozen=True)
class Cell:
    """One merge cell: two pool indices, an output level and a binary op."""

    a: int
    b: int
    level: int
    op: str

    def canonical(self) -> Cell:
        lo, hi = sorted((self.a, self.b))
        return Cell(lo, hi, self.level, self.op)

    def to_list(self) -> list[Any]:
        return [self.a, self.b, self.level, self.op]


@dataclass(frozen=True)
class ArchSpec:
    """A complete searched architecture: backbone, levels, decoder width and merge cells."""

    backbone: str
    levels: tuple[int, ...]
    channels: int
    cells: tuple[Cell, ...]

    def __post_init__(self) -> None:
        levels = tuple(int(level) for level in self.levels)
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "cells", tuple(self.cells))
        if not levels or len(set(levels)) != len(levels) or list(levels) != sorted(levels):
            raise SpecError(f"levels must be distinct and increasing, got {list(levels)}", field="levels")
        if self.channels < 1:
            raise SpecError(f"channels must be positive, got {self.channels}", field="channels")
        known_ops = set(list_ops())
        for i, cell in enumerate(self.cells):
            pool = len(levels) + i
            for name, index in (("a", cell.a), ("b", cell.b)):
                if not 0 <= index < pool:
                    raise SpecError(
                        f"cell {i} input {name}={index} is outside the pool (0..{pool - 1})", field="cells"
                    )
            if cell.a == cell.b:
                raise SpecError(f"cell {i} uses pool entry {cell.a} twice; pick two inputs", field="cells")
            if cell.level not in levels:
                raise SpecError(f"cell {i} level {cell.level} is not one of {list(levels)}", field="cells")
            if cell.op not in known_ops:
                raise SpecError(
                    f"cell {i} op {cell.op!r} is unknown; valid ops: {', '.join(sorted(known_ops))}",
                    field="cells",
                )

    # -- identity -------------------------------------------------------------------------------
    def canonical(self) -> ArchSpec:
        return ArchSpec(self.backbone, self.levels, self.channels, tuple(c.canonical() for c in self.cells))

    def to_dict(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "levels": list(self.levels),
            "channels": self.channels,
            "cells": [c.to_list() for c in self.cells],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        try:
            cells = tuple(Cell(int(a), int(b), int(level), str(op)) for a, b, level, op in data["cells"])
            return cls(str(data["backbone"]), tuple(data["levels"]), int(data["channels"]), cells)
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(
                "an architecture needs backbone, levels, channels and cells as [a, b, level, op] lists: "
                f"{exc}",
                field="arch",
            ) from None

    def canonical_json(self) -> str:
        return json.dumps(self.canonical().to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        """First 16 hex digits of the SHA-256 of the canonical JSON: stable across processes."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    # -- structure ------------------------------------------------------------------------------
    def pool_levels(self) -> list[int]:
        """The level of every pool entry: backbone levels, then each cell's output."""
        return list(self.levels) + [c.level for c in self.cells]

    def unused(self) -> list[int]:
        """Pool indices that no cell reads."""
        used = {i for c in self.cells for i in (c.a, c.b)}
        return [i for i in range(len(self.levels) + len(self.cells)) if i not in used]


def _as_choices(value: Any, name: str) -> tuple:
    if isinstance(value, list | tuple):
        if not value:
            raise SpecError(f"{name} needs at least one choice", field=name)
        return tuple(value)
    return (value,)


@dataclass(frozen=True)
class SearchSpaceConfig:
    """The searchable dimensions. Each field holds the allowed choices (one choice = fixed)."""

    backbones: tuple[str, ...] = ("resnet18",)
    levels: tuple[int, ...] = DEFAULT_LEVELS
    num_cells: tuple[int, ...] = (7,)
    channels: tuple[int, ...] = (64,)
    ops: tuple[str, ...] = DEFAULT_OPS

    def __post_init__(self) -> None:
        for name in ("backbones", "num_cells", "channels", "ops"):
            object.__setattr__(self, name, _as_choices(getattr(self, name), name))
        object.__setattr__(self, "levels", tuple(sorted(int(x) for x in self.levels)))
        unknown = [op for op in self.ops if op not in list_ops()]
        if unknown:
            raise SpecError(f"unknown ops {unknown}; valid ops: {', '.join(list_ops())}", field="ops")
        if any(n < 1 for n in self.num_cells):
            raise SpecError("num_cells choices must be at least 1", field="num_cells")
        if len(self.levels) < 1 or len(set(self.levels)) != len(self.levels):
            raise SpecError(f"levels must be distinct, got {list(self.levels)}", field="levels")


_PREFIX = ("backbone", "num_cells", "channels")
_PER_CELL = 4  # a, b, level, op


@dataclass(frozen=True)
class NasFpnSpace:
    """NAS-FPN as a fixed-length token space (see :mod:`search_spaces.tokens`).

    Positions: backbone, number of cells, channels, then for each of ``max(num_cells)`` cells:
    input a, input b, output level, op. Input choices are masked to the pool that exists at that cell
    (and b ≠ a); cells beyond the chosen number of cells are masked to token 0.
    """

    config: SearchSpaceConfig = field(default_factory=SearchSpaceConfig)

    # cached: the config is frozen, and a searcher's pool asks for these millions of times
    @cached_property
    def max_cells(self) -> int:
        return max(self.config.num_cells)

    @cached_property
    def sizes(self) -> tuple[int, ...]:
        c = self.config
        pool = len(c.levels) + self.max_cells - 1
        per_cell = (pool, pool, len(c.levels), len(c.ops))
        return (len(c.backbones), len(c.num_cells), len(c.channels)) + per_cell * self.max_cells

    def _choices(self, position: int, prefix: Sequence[int]) -> tuple[int, int | None]:
        """The rule both :meth:`mask` and :meth:`allows` read: tokens below the first number are allowed,
        except the second (the cell's first input, which its second input may not repeat), if any."""
        if position < len(_PREFIX):
            return self.sizes[position], None
        cell, slot = divmod(position - len(_PREFIX), _PER_CELL)
        if cell >= self.config.num_cells[prefix[1]]:
            return 1, None  # an unused cell: token 0 only
        if slot in (0, 1):
            return len(self.config.levels) + cell, prefix[position - 1] if slot == 1 else None
        return self.sizes[position], None

    def mask(self, position: int, prefix: Sequence[int]) -> np.ndarray:
        below, excluded = self._choices(position, prefix)
        allowed = np.zeros(self.sizes[position], dtype=bool)
        allowed[:below] = True
        if excluded is not None:
            allowed[excluded] = False
        return allowed

    def allows(self, position: int, prefix: Sequence[int], token: int) -> bool:
        """``mask(position, prefix)[token]`` (False outside the position's choices), without building the mask."""
        below, excluded = self._choices(position, prefix)
        return 0 <= token < below and token != excluded

    def decode(self, tokens: Sequence[int]) -> ArchSpec:
        tokens = [int(t) for t in tokens]
        if len(tokens) != len(self.sizes):
            raise SpecError(f"expected {len(self.sizes)} tokens, got {len(tokens)}", field="tokens")
        for position, token in enumerate(tokens):
            if not self.allows(position, tokens, token):
                raise SpecError(f"token {token} is not allowed at position {position}", field="tokens")
        c = self.config
        n_cells = c.num_cells[tokens[1]]
        cells = []
        for i in range(n_cells):
            a, b, level, op = tokens[len(_PREFIX) + _PER_CELL * i : len(_PREFIX) + _PER_CELL * (i + 1)]
            cells.append(Cell(a, b, c.levels[level], c.ops[op]))
        return ArchSpec(c.backbones[tokens[0]], c.levels, c.channels[tokens[2]], tuple(cells))

    def encode(self, arch: ArchSpec) -> tuple[int, ...]:
        c = self.config

        def index(choices: tuple, value: Any, name: str) -> int:
            try:
                return choices.index(value)
            except ValueError:
                raise SpecError(
                    f"{name} {value!r} is not in this space: {list(choices)}", field=name
                ) from None

        if arch.levels != c.levels:
            raise SpecError(f"levels {list(arch.levels)} differ from the space's {list(c.levels)}", "levels")
        tokens = [
            index(c.backbones, arch.backbone, "backbone"),
            index(c.num_cells, len(arch.cells), "num_cells"),
            index(c.channels, arch.channels, "channels"),
        ]
        for cell in arch.cells:
            tokens += [cell.a, cell.b, index(c.levels, cell.level, "level"), index(c.ops, cell.op, "op")]
        tokens += [0] * (_PER_CELL * (self.max_cells - len(arch.cells)))
        return tuple(tokens)

    def canonical(self, tokens: Sequence[int]) -> str:
        return self.decode(tokens).hash

    def sample(self, rng: np.random.Generator) -> ArchSpec:
        return self.decode(sample_uniform(self, rng))
