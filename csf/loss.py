"""The multi-layer contrastive loss of CSF and the cross-worker gather that makes it global.

For each chosen encoder stage the two views' feature maps are flattened to ``Z1, Z2`` (N, D), with
no projection head. ``S = sim(Z1, Z2) / τ`` scores every view-1 sample against every view-2 sample;
the matching pair is the target of a cross-entropy over each row, in both directions; the two
directions are averaged, the layers summed, the samples averaged.

``sim`` is the cosine similarity by default (rows L2-normalised, so ``|S| <= 1/τ`` and each
direction's loss lies in ``(0, log N + 2/τ]``), or the paper's raw dot product (``normalize=False``).
The raw dot product does not train on real imagery: deep features give dot products in the
hundreds or thousands, so ``S`` saturates the softmax. A batch whose positives lead by more than
float32's resolution scores a loss of exactly 0 and teaches nothing, and one where a negative leads
scores hundreds and takes a huge step. On real airborne chips (IDTReeS, three sensors; resnet18, 400
steps of 32, crop 48, ``bench/results/history/csf_real_dot-crop48-2026-12-03.json``) 42 of 400 steps
were exactly 0 and the largest was 360; with cosine similarities (``csf_real-cosine-crop48-2026-12-03.json``
beside it, same chips and settings) no step was 0, the largest
was 0.66, and the mean loss fell from 0.28 over the first fifth of the steps to 0.10 over the last.

Numerics: the similarities are computed in float32 with autocast off (raw dot products would
overflow float16), and the N x N logits are taken to float64 for the cross-entropy, through
log-softmax, which subtracts each row's maximum before exponentiating: any finite ``S`` gives a
finite loss, and a cosine loss stays above zero even when the views are identical.

Exact symmetry: direction two uses ``Z2 Z1ᵀ`` computed as its own product (not the transpose of
direction one), so swapping the views swaps two float32 summands, and ``a + b == b + a`` exactly.

Places: chips can name a place (a multi-sensor chip's ``plot``), and windows of one place overlap. With
``places`` given, a chip's view is not contrasted with the other chips of its own place: they are
left out of its row's softmax (its own pair stays the target), so the loss does not push apart two
windows of the same ground, which are often the same tree species.

Across workers, every worker gathers all workers' features and computes the same global loss; the
gradient flows only into its own slice. Summed over workers, the slices' gradients are the full
gradient of the global loss; DDP averages gradients over workers, so the loss that is
back-propagated is multiplied by the world size (:func:`contrastive_loss` returns both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["gather_with_grad", "layer_loss", "contrastive_loss", "ContrastiveLoss"]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_gather(x: torch.Tensor) -> list[torch.Tensor]:
    """``x`` from every worker, in rank order (no gradient)."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return parts


def gather_with_grad(z: torch.Tensor) -> torch.Tensor:
    """Concatenate ``z`` (n, D) from every worker in rank order; only the local slice carries grad.

    Without a process group (a single worker) this is ``z`` itself. All workers must hold the same
    ``n`` (the trainer drops the last partial batch).
    """
    if not _distributed():
        return z
    parts = _all_gather(z.detach())
    parts[dist.get_rank()] = z
    return torch.cat(parts, dim=0)


def layer_loss(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, normalize: bool = True,
    places: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE of one layer: ``z1``, ``z2`` (N, ...) are the two views' features, row i ↔ i.

    Returns the mean over the N samples of the two directions' average cross-entropy. ``normalize``
    (the default) L2-normalises the rows first: cosine similarities; ``False`` is the paper's raw
    dot product (see the module note for why it is not the default). ``places`` (N,): each
    sample's place; the other samples of its place are left out of its row (not negatives).
    """
    if z1.shape != z2.shape:
        raise ValueError(f"views' features differ in shape: {tuple(z1.shape)} vs {tuple(z2.shape)}")
    a = z1.reshape(z1.shape[0], -1).float()
    b = z2.reshape(z2.shape[0], -1).float()
    if normalize:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    target = torch.arange(a.shape[0], device=a.device)
    exclude = None
    if places is not None:
        places = places.to(a.device).reshape(-1)
        if places.shape[0] != a.shape[0]:
            raise ValueError(f"{places.shape[0]} places for {a.shape[0]} samples")
        exclude = (places[:, None] == places[None, :]) & ~torch.eye(a.shape[0], dtype=torch.bool, device=a.device)
    with torch.autocast(device_type=a.device.type, enabled=False):
        forward, backward = (a @ b.T).double() / temperature, (b @ a.T).double() / temperature
        if exclude is not None:  # symmetric: the same pairs are left out in both directions
            forward, backward = forward.masked_fill(exclude, -math.inf), backward.masked_fill(exclude, -math.inf)
        forward, backward = F.cross_entropy(forward, target), F.cross_entropy(backward, target)
    return ((forward + backward) / 2).float()


def contrastive_loss(
    features1: Sequence[torch.Tensor],
    features2: Sequence[torch.Tensor],
    temperature: float = 0.1,
    normalize: bool = True,
    places: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The CSF loss over layers, global over all workers.

    ``features1[l]`` and ``features2[l]`` are layer ``l``'s local feature maps of the two views.
    Returns ``(loss, to_backward)``: ``loss`` is the global loss (the same on every worker, for
    reporting); ``to_backward`` is ``loss × world size`` so that DDP's gradient average equals the
    gradient of the global loss. ``places`` (n,): the local samples' places (gathered like the features).
    """
    if len(features1) != len(features2) or not features1:
        raise ValueError("need the same, non-zero number of layers for both views")
    total = features1[0].new_zeros((), dtype=torch.float32)
    if places is not None:
        places = places.to(features1[0].device).reshape(-1)
        places = torch.cat(_all_gather(places)) if _distributed() else places
    for f1, f2 in zip(features1, features2, strict=True):
        z1 = gather_with_grad(f1.reshape(f1.shape[0], -1))
        z2 = gather_with_grad(f2.reshape(f2.shape[0], -1))
        total = total + layer_loss(z1, z2, temperature, normalize, places)
    world = dist.get_world_size() if _distributed() else 1
    return total, total * world


class ContrastiveLoss(torch.nn.Module):
    """Module form of :func:`contrastive_loss` with a fixed temperature (paper: τ = 0.1)."""

    def __init__(self, temperature: float = 0.1, normalize: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.normalize = normalize

    def forward(
        self, features1: Sequence[torch.Tensor], features2: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return contrastive_loss(features1, features2, self.temperature, self.normalize)
