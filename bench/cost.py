"""Cost model of an architecture for bench/space.py: parameters and FLOPs for a given input shape.

FLOPs come from torch's own ``FlopCounterMode`` (a multiply-add counts as two FLOPs); ops it does
not model (pooling, interpolation, element-wise) are not counted, which is the usual convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["Cost", "model_cost"]


@dataclass(frozen=True)
class Cost:
    params: int
    flops: int
    input_shape: tuple[int, int, int, int]

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


def model_cost(model: nn.Module, input_shape: tuple[int, int, int, int]) -> Cost:
    params = sum(p.numel() for p in model.parameters())
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(input_shape))
    model.train(was_training)
    return Cost(params=params, flops=int(counter.get_total_flops()), input_shape=tuple(input_shape))
