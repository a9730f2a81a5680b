"""Build segmentation models: a timm encoder, a decoder, a head (as segmentation-models-pytorch composes).

Searched models use the NAS-FPN cell decoder generated from an :class:`ArchSpec`; baselines come from
:mod:`search_spaces.baselines`. Both are plain ``nn.Module``s mapping ``[B, C, H, W]`` images to
``[B, num_classes, H, W]`` logits, so they share the trainer, the exporter and the latency harness.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from .errors import SpecError
from .nasfpn import ArchSpec
from .ops import create_op

__all__ = ["build_model", "build_encoder", "NasFpnDecoder", "SegmentationModel", "model_from_descriptor"]


def build_encoder(backbone: str, in_chans: int) -> nn.Module:
    """A timm ``features_only`` encoder; ``in_chans`` adapts the stem. Never downloads weights."""
    try:
        return timm.create_model(backbone, features_only=True, in_chans=in_chans, pretrained=False)
    except RuntimeError as exc:  # timm raises RuntimeError for unknown names
        raise SpecError(f"timm cannot build backbone {backbone!r}: {exc}", field="backbone") from None


def _level_indices(encoder: nn.Module, levels: tuple[int, ...], backbone: str) -> list[int]:
    reductions = encoder.feature_info.reduction()
    by_level = {int(round(math.log2(r))): i for i, r in enumerate(reductions)}
    missing = [lv for lv in levels if lv not in by_level]
    if missing:
        raise SpecError(
            f"backbone {backbone!r} has no feature map at levels {missing} (strides "
            f"{[2**lv for lv in missing]}); it offers levels {sorted(by_level)}",
            field="levels",
        )
    return [by_level[lv] for lv in levels]


def _resample(x: torch.Tensor, from_level: int, to_level: int, size: tuple[int, int]) -> torch.Tensor:
    """Max-pool down or nearest-neighbour up to ``to_level``, landing exactly on ``size``."""
    if to_level > from_level:
        factor = 2 ** (to_level - from_level)
        x = F.max_pool2d(x, kernel_size=factor, stride=factor, ceil_mode=True)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="nearest")
    return x


class _MergeCell(nn.Module):
    def __init__(self, channels: int, op: str, level_a: int, level_b: int) -> None:
        super().__init__()
        self.op = create_op(op, channels, level_a, level_b)
        self.post = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        )

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.post(self.op(a, b))


class NasFpnDecoder(nn.Module):
    """Runs the merge cells of an :class:`ArchSpec` over lateral-projected encoder features."""

    def __init__(self, arch: ArchSpec, encoder_channels: list[int]) -> None:
        super().__init__()
        self.arch = arch
        c = arch.channels
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(ch, c, 1, bias=False), nn.BatchNorm2d(c)) for ch in encoder_channels
        )
        pool_levels = arch.pool_levels()
        self.cells = nn.ModuleList(
            _MergeCell(c, cell.op, pool_levels[cell.a], pool_levels[cell.b]) for cell in arch.cells
        )
        self._pool_levels = pool_levels
        last: dict[int, int] = {}
        for index, level in enumerate(pool_levels):
            last[level] = index
        unused = set(arch.unused())
        # output of each level: its last pool entry plus every unused entry of that level
        self._outputs = [
            [last[level]] + [i for i in sorted(unused) if pool_levels[i] == level and i != last[level]]
            for level in arch.levels
        ]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        pool = [lat(f) for lat, f in zip(self.lateral, features, strict=True)]
        sizes = {level: tuple(f.shape[-2:]) for level, f in zip(self.arch.levels, features, strict=True)}
        levels = self._pool_levels
        for cell_spec, cell in zip(self.arch.cells, self.cells, strict=True):
            size = sizes[cell_spec.level]
            a = _resample(pool[cell_spec.a], levels[cell_spec.a], cell_spec.level, size)
            b = _resample(pool[cell_spec.b], levels[cell_spec.b], cell_spec.level, size)
            pool.append(cell(a, b))
        outputs = []
        for members in self._outputs:
            out = pool[members[0]]
            for i in members[1:]:
                out = out + pool[i]
            outputs.append(out)
        return outputs


class PyramidHead(nn.Module):
    """Fuse an output pyramid: upsample every level to the finest, sum, conv, classify, upsample."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fuse = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()
        )
        self.classify = nn.Conv2d(channels, num_classes, 1)

    def forward(self, pyramid: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        finest = tuple(pyramid[0].shape[-2:])
        x = pyramid[0]
        for level in pyramid[1:]:
            x = x + F.interpolate(level, size=finest, mode="bilinear", align_corners=False)
        x = self.classify(self.fuse(x))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SegmentationModel(nn.Module):
    """encoder → decoder → head, the composition segmentation-models-pytorch uses."""

    def __init__(self, arch: ArchSpec, in_chans: int, num_classes: int) -> None:
        super().__init__()
        self.arch = arch
        self.encoder = build_encoder(arch.backbone, in_chans)
        self._indices = _level_indices(self.encoder, arch.levels, arch.backbone)
        channels = [self.encoder.feature_info.channels()[i] for i in self._indices]
        self.decoder = NasFpnDecoder(arch, channels)
        self.head = PyramidHead(arch.channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        pyramid = self.decoder([features[i] for i in self._indices])
        return self.head(pyramid, (x.shape[-2], x.shape[-1]))


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Initialise the encoder from a safetensors file (e.g. a CSF pretraining export), strictly."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    encoder = model.encoder if hasattr(model, "encoder") else model
    target = getattr(encoder, "model", encoder)  # smp's timm-universal encoder wraps the timm model
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SpecError(
            f"backbone weights {path} do not fit this backbone (same timm name and band count?): {exc}",
            field="backbone",
        ) from None


def build_model(
    arch: ArchSpec, in_chans: int, num_classes: int, backbone_weights: str | Path | None = None
) -> SegmentationModel:
    model = SegmentationModel(arch, in_chans, num_classes)
    if backbone_weights:
        load_backbone_weights(model, backbone_weights)
    return model


def model_from_descriptor(
    descriptor: dict[str, Any], in_chans: int, num_classes: int, backbone_weights: str | Path | None = None
) -> nn.Module:
    """Build a searched model (``{"arch": ...}``) or a baseline (``{"baseline": "unet", "backbone": ...}``)."""
    if "arch" in descriptor:
        return build_model(ArchSpec.from_dict(descriptor["arch"]), in_chans, num_classes, backbone_weights)
    if "baseline" in descriptor:
        from .baselines import create_baseline

        model = create_baseline(descriptor["baseline"], descriptor["backbone"], in_chans, num_classes)
        if backbone_weights:
            load_backbone_weights(model, backbone_weights)
        return model
    raise SpecError("a model descriptor needs 'arch' or 'baseline'", field="model")
