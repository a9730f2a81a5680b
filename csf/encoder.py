"""The CSF encoder: a timm ``features_only`` backbone over all bands, and its export as a backbone.

The encoder is ``timm.create_model(name, features_only=True, in_chans=C)`` with nothing added, so
its weights load into the model builder's backbone with strict keys. CSF chooses which stages the
loss sees by index into the backbone's feature list (paper: the last two); the whole backbone is
always built, so the exported state dict has every stage whichever ones the loss used.

Artifact: one safetensors file holding the backbone's state dict; its metadata (strings, as
safetensors requires) says what the weights need: ``backbone`` (timm name), ``in_chans``,
``band_names`` (JSON list, in input order), ``sensors`` (JSON object sensor → band names),
``mean``/``std`` (JSON lists, per band: inputs are normalised as ``(x - mean) / std`` first),
``stages``, ``steps`` and ``format``. How an experiment uses it::

    name, state, meta = load_csf_backbone(path)
    backbone = timm.create_model(name, features_only=True, in_chans=meta["in_chans"])
    backbone.load_state_dict(state, strict=True)

(:func:`create_csf_backbone` does exactly this.) The dataset must provide ``meta["band_names"]``
in that order and normalise with ``meta["mean"]``/``meta["std"]``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from search_spaces.errors import DataError, SpecError

__all__ = [
    "ARTIFACT_FORMAT",
    "EncoderMetadata",
    "CSFEncoder",
    "build_encoder",
    "export_encoder",
    "load_csf_backbone",
    "create_csf_backbone",
    "load_init_weights",
]

ARTIFACT_FORMAT = "geonas-csf-encoder/1"


@dataclass
class EncoderMetadata:
    """What an exported encoder needs from the data that feeds it."""

    backbone: str
    in_chans: int
    band_names: list[str]
    mean: list[float]
    std: list[float]
    sensors: dict[str, list[str]] = field(default_factory=dict)
    stages: list[int] = field(default_factory=list)
    steps: int = 0

    def __post_init__(self) -> None:
        for name in ("band_names", "mean", "std"):
            if len(getattr(self, name)) != self.in_chans:
                raise SpecError(
                    f"{name} has {len(getattr(self, name))} entries but the encoder has "
                    f"{self.in_chans} input bands", field=name
                )

    def to_safetensors(self) -> dict[str, str]:
        out = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in asdict(self).items()}
        out["format"] = ARTIFACT_FORMAT
        return out

    @classmethod
    def from_safetensors(cls, raw: dict[str, str]) -> EncoderMetadata:
        values = {k: (raw[k] if k == "backbone" else json.loads(raw[k])) for k in raw if k != "format"}
        return cls(**values)


def projection_head(channels: int, out: int) -> nn.Sequential:
    """A per-pixel MLP (1x1 conv, BN, ReLU, 1x1 conv) from a stage's ``channels`` to ``out``."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
        nn.Conv2d(channels, out, 1),
    )


class CSFEncoder(nn.Module):
    """A timm ``features_only`` backbone that returns the chosen stages' feature maps.

    ``body`` is the exact module the model builder creates, so its state dict is the export.
    ``projection`` > 0 puts a per-pixel MLP head (:func:`projection_head`) on each chosen stage; the
    loss sees the heads' outputs and the export and k-NN the body's features. The paper has no head
    (``projection=0``); with one, the invariances the loss asks for can live in the head, and the
    body keeps what the views do not share (SimCLR's finding).
    """

    def __init__(self, backbone: str, in_chans: int, stages: Sequence[int] = (-2, -1), projection: int = 0) -> None:
        super().__init__()
        if not timm.is_model(backbone):
            raise SpecError(
                f"unknown timm backbone {backbone!r}; use a name from timm.list_models(), "
                "e.g. 'resnet18', 'resnet50', 'efficientnet_b0'", field="backbone"
            )
        if in_chans < 1:
            raise SpecError(f"in_chans must be >= 1, got {in_chans}", field="in_chans")
        self.backbone = backbone
        self.in_chans = in_chans
        self.body = timm.create_model(backbone, features_only=True, in_chans=in_chans, pretrained=False)
        n = len(self.body.feature_info.channels())
        chosen = []
        for s in stages:
            if not -n <= s < n:
                raise SpecError(
                    f"stage {s} out of range for {backbone}: it has {n} stages (indices 0..{n - 1} "
                    f"or -{n}..-1)", field="stages"
                )
            chosen.append(s % n)
        if not chosen or len(set(chosen)) != len(chosen):
            raise SpecError(f"stages must be a non-empty list of distinct indices, got {list(stages)}",
                            field="stages")
        self.stages: tuple[int, ...] = tuple(sorted(chosen))
        if projection < 0:
            raise SpecError(f"projection must be >= 0 (0 = no head), got {projection}", field="projection")
        channels = self.body.feature_info.channels()
        self.heads = (
            nn.ModuleList(projection_head(channels[i], projection) for i in self.stages) if projection else None
        )

    @property
    def channels(self) -> list[int]:
        """Channels of every stage of the backbone (timm's feature_info contract)."""
        return list(self.body.feature_info.channels())

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's feature map."""
        return list(self.body(x))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The chosen stages' maps (through their projection heads, when there are heads): the loss' input."""
        features = self.body(x)
        chosen = [features[i] for i in self.stages]
        if self.heads is None:
            return chosen
        return [head(f) for head, f in zip(self.heads, chosen, strict=True)]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled last stage (N, C_last): the k-NN embedding."""
        return self.body(x)[-1].mean(dim=(2, 3))


def build_encoder(backbone: str, in_chans: int, stages: Sequence[int] = (-2, -1), projection: int = 0) -> CSFEncoder:
    """A randomly initialised CSF encoder (no download ever happens here)."""
    return CSFEncoder(backbone, in_chans, stages, projection)


def _atomic_target(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    return tmp


def export_encoder(encoder: CSFEncoder | nn.Module, path: str | Path, metadata: EncoderMetadata) -> Path:
    """Write the backbone's weights and metadata as safetensors, atomically (temp file + rename)."""
    from safetensors.torch import save_file

    body = encoder.body if isinstance(encoder, CSFEncoder) else encoder
    body = getattr(body, "module", body)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in body.state_dict().items()}
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        save_file(state, tmp, metadata=metadata.to_safetensors())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_csf_backbone(path: str | Path) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    """Read an exported encoder: ``(timm model name, state dict, metadata as plain values)``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSF encoder file {path} does not exist; was the pretraining job finished?")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for a corrupt file
        raise DataError(f"{path} is not a readable safetensors file: {exc}") from exc
    if raw.get("format") != ARTIFACT_FORMAT:
        raise DataError(f"{path} is not a CSF encoder (format {raw.get('format')!r}, "
                        f"expected {ARTIFACT_FORMAT!r})")
    meta = EncoderMetadata.from_safetensors(raw)
    return meta.backbone, state, asdict(meta)


def create_csf_backbone(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model builder's backbone with the CSF weights loaded (strict keys), and the metadata."""
    name, state, meta = load_csf_backbone(path)
    model = timm.create_model(name, features_only=True, in_chans=meta["in_chans"], pretrained=False)
    model.load_state_dict(state, strict=True)
    return model, meta


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise DataError(f"{path} holds no state dict")
    return state


def load_init_weights(encoder: CSFEncoder, path: str | Path) -> list[str]:
    """Initialise ``encoder`` from a user's supervised weights file (never downloaded).

    The file is a timm model's state dict (safetensors or torch); classifier keys are ignored and
    a stem made for another number of bands is adapted with timm's ``adapt_input_conv``. Every
    backbone key must be present. Returns the ignored keys.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"init weights {path} not found; give a local file path (no downloads)")
    state = _read_state_dict(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    target = encoder.body.state_dict()
    missing = [k for k in target if k not in state]
    if missing:
        raise DataError(
            f"{path} lacks {len(missing)} weights of {encoder.backbone} (first: {missing[:3]}); "
            "is it the same architecture?"
        )
    loaded = {}
    for key, ref in target.items():
        value = state[key]
        if value.shape != ref.shape and value.ndim == 4 and value.shape[0] == ref.shape[0]:
            value = timm.models.adapt_input_conv(ref.shape[1], value.float()).to(ref.dtype)
        if value.shape != ref.shape:
            raise DataError(f"{path}: weight {key} has shape {tuple(value.shape)}, "
                            f"expected {tuple(ref.shape)}")
        loaded[key] = value
    encoder.body.load_state_dict(loaded, strict=True)
    return sorted(set(state) - set(target))
