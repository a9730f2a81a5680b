"""Binary merge operations of NAS-FPN cells, in a registry.

Every op receives two feature maps already resampled to the cell's output level and with the same
number of channels. Ops are defined so that the order of their two inputs does not change the
function class they compute; that is what lets the canonical form sort a cell's inputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .errors import SpecError

__all__ = ["register_op", "create_op", "list_ops", "DEFAULT_OPS"]

OpFactory = Callable[[int, int, int], nn.Module]
_OPS: dict[str, OpFactory] = {}

DEFAULT_OPS: tuple[str, ...] = ("sum", "global_attention")


def register_op(name: str) -> Callable[[OpFactory], OpFactory]:
    """Register a factory ``(channels, level_a, level_b) -> nn.Module`` under ``name``."""

    def decorator(factory: OpFactory) -> OpFactory:
        if name in _OPS:
            raise ValueError(f"binary op {name!r} is registered twice")
        _OPS[name] = factory
        return factory

    return decorator


def list_ops() -> list[str]:
    return sorted(_OPS)


def create_op(name: str, channels: int, level_a: int, level_b: int) -> nn.Module:
    try:
        factory = _OPS[name]
    except KeyError:
        raise SpecError(
            f"unknown binary op {name!r}; valid ops: {', '.join(list_ops())}", field="ops"
        ) from None
    return factory(channels, level_a, level_b)


class _Sum(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class _Product(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b


class _Max(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.maximum(a, b)


class _ConcatConv(nn.Module):
    """Concatenate and project back with a 1×1 conv (symmetric up to a permutation of its weights)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(2 * channels, channels, kernel_size=1, bias=False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat([a, b], dim=1))


class _GlobalAttention(nn.Module):
    """NAS-FPN's global-pooling op: the coarser input, globally pooled, gates the finer one.

    ``out = fine * sigmoid(GAP(coarse)) + coarse``. Which input is coarser is fixed at build time from
    the input levels (the second input when both share a level), so swapping two inputs of different
    levels computes the same function.
    """

    def __init__(self, level_a: int, level_b: int) -> None:
        super().__init__()
        self.a_is_coarse = level_a > level_b

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fine, coarse = (b, a) if self.a_is_coarse else (a, b)
        gate = torch.sigmoid(coarse.mean(dim=(2, 3), keepdim=True))
        return fine * gate + coarse


register_op("sum")(lambda channels, la, lb: _Sum())
register_op("product")(lambda channels, la, lb: _Product())
register_op("max")(lambda channels, la, lb: _Max())
register_op("concat_conv")(lambda channels, la, lb: _ConcatConv(channels))
register_op("global_attention")(lambda channels, la, lb: _GlobalAttention(la, lb))
