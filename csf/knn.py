"""k-NN evaluation of encoders, as CSF's Table 1: how well do embeddings group chips by class?

Embedding: the global-average-pooled last stage. PCA to at most 2,048 dimensions (fewer when there
are fewer chips or features), Euclidean distances (``metric="euclidean"``, the default) or cosine
distances (``metric="cosine"``: each embedding L2-normalised first, the usual k-NN protocol for
contrastive features, whose loss sees only their direction), for each k in (10, 25, 50, 100):

- ``same_class``: the mean share of a chip's k nearest other chips that have its dominant class;
- ``accuracy``: leave-one-out majority vote of those k neighbours (ties go to the class whose
  neighbours are nearer).

Places: when chips carry ``groups`` (a multi-sensor folder's ``plot``), a chip's neighbours never
come from its own place. Crown windows of one plot overlap and share a flight line; without this,
leave-one-out k-NN rewards finding the overlapping window of the same plot, whose majority species
alone is right for 65 % of the IDTReeS chips, rather than telling species apart, and features that
keep raw pixels (random init) win it.

Sensor subsets: a single sensor is evaluated with the same all-band network, the other bands set to
zero after normalisation (the band mean) and the kept ones scaled by ``C / kept``, the same
convention as channel dropout in training. Random init, a user's supervised init and CSF weights
are evaluated on the same chips in the same call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .data import ChipSet, load_chips
from .encoder import CSFEncoder, build_encoder, load_csf_backbone, load_init_weights

__all__ = [
    "KS", "DISTANCES", "for_metric", "embed", "pca_reduce", "knn_scores", "evaluate_knn", "evaluate_artifact",
    "seed_spread",
]

KS = (10, 25, 50, 100)
DISTANCES = ("euclidean", "cosine")  # k-NN metrics


def _check_metric(metric: str) -> None:
    if metric not in DISTANCES:
        raise ValueError(f"k-NN metric must be one of {list(DISTANCES)}, not {metric!r}")


def for_metric(embeddings: np.ndarray, metric: str) -> np.ndarray:
    """Embeddings whose Euclidean distances are ``metric``'s: as they are, or L2-normalised (cosine)."""
    _check_metric(metric)
    if metric == "euclidean":
        return embeddings
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


@torch.no_grad()
def embed(
    encoder: CSFEncoder, images: np.ndarray, batch_size: int = 64, keep_bands: Sequence[int] | None = None,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Embeddings (N, C_last) of normalised ``images`` (N, C, H, W); ``keep_bands`` zeroes the rest."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder = encoder.to(device).eval()
    c = images.shape[1]
    scale = torch.zeros(c)
    kept = list(range(c)) if keep_bands is None else list(keep_bands)
    scale[kept] = c / len(kept)
    scale = scale.view(1, c, 1, 1).to(device)
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device) * scale
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out.append(encoder.embed(x).float().cpu())
    return torch.cat(out).numpy()


def pca_reduce(x: np.ndarray, max_dim: int = 2048) -> np.ndarray:
    """Project centred ``x`` on its top principal components (at most ``max_dim``)."""
    x = x.astype(np.float64) - x.mean(axis=0, keepdims=True)
    dims = min(max_dim, x.shape[0], x.shape[1])
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return (u[:, :dims] * s[:dims]).astype(np.float32)


def knn_scores(
    embeddings: np.ndarray, labels: np.ndarray, ks: Sequence[int] = KS, groups: np.ndarray | None = None
) -> dict[int, dict[str, float]]:
    """Same-class share and leave-one-out majority accuracy of Euclidean k-NN, per k.

    ``groups`` (N,): a chip's neighbours are drawn only from other groups (see the module note); k is
    capped by the fewest candidates any chip has (``k_used``).
    """
    valid = labels >= 0
    x = torch.from_numpy(np.ascontiguousarray(embeddings[valid])).double()
    y = torch.from_numpy(labels[valid]).long()
    n = len(y)
    if n < 2:
        raise ValueError("k-NN needs at least two labelled chips")
    dist = torch.cdist(x, x)
    dist.fill_diagonal_(float("inf"))
    if groups is not None:
        g = torch.from_numpy(np.asarray(groups)[valid])
        dist.masked_fill_(g[:, None] == g[None, :], float("inf"))
    candidates = int(torch.isfinite(dist).sum(dim=1).min())
    if candidates < 1:
        raise ValueError("k-NN needs chips from at least two places (groups)")
    order = dist.argsort(dim=1)
    num_classes = int(y.max()) + 1
    results: dict[int, dict[str, float]] = {}
    for k in ks:
        kk = min(k, candidates)
        neighbours = y[order[:, :kk]]  # (n, kk)
        same = (neighbours == y[:, None]).double().mean(dim=1)
        weights = 1.0 + 1e-6 * (kk - torch.arange(kk, dtype=torch.float64))  # nearer breaks ties
        votes = torch.zeros(n, num_classes, dtype=torch.float64)
        votes.scatter_add_(1, neighbours, weights.expand(n, kk).contiguous())
        accuracy = (votes.argmax(dim=1) == y).double().mean()
        results[k] = {"same_class": float(same.mean()), "accuracy": float(accuracy), "k_used": kk}
    return results


def evaluate_knn(
    encoders: Mapping[str, CSFEncoder],
    chips: ChipSet,
    mean: Sequence[float],
    std: Sequence[float],
    subsets: Mapping[str, Sequence[str]] | None = None,
    ks: Sequence[int] = KS,
    max_dim: int = 2048,
    device: torch.device | str | None = None,
    metric: str = "euclidean",
) -> dict[str, dict[str, dict[int, dict[str, float]]]]:
    """``{encoder: {subset: {k: scores}}}`` for every encoder and band subset.

    ``subsets`` maps a name to band names (default: each sensor alone, plus ``"all"`` when there is
    more than one sensor; with one sensor just ``"all"``); ``metric``: see the module note.
    """
    _check_metric(metric)
    if chips.labels is None:
        raise ValueError("k-NN needs chip labels")
    if subsets is None:
        subsets = dict(chips.sensors) if len(chips.sensors) > 1 else {}
        subsets = {**subsets, "all": list(chips.band_names)}
    images = chips.normalised(mean, std)
    results: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
    for name, encoder in encoders.items():
        results[name] = {}
        for subset, bands in subsets.items():
            missing = [b for b in bands if b not in chips.band_names]
            if missing:
                raise ValueError(f"bands {missing} not in the chips; available: {chips.band_names}")
            keep = [chips.band_names.index(b) for b in bands]
            emb = embed(encoder, images, keep_bands=keep, device=device)
            emb = pca_reduce(for_metric(emb, metric), max_dim)
            results[name][subset] = knn_scores(emb, chips.labels, ks, chips.groups)
    return results


def evaluate_artifact(
    artifact: str,
    data: dict | ChipSet,
    supervised_init: str | None = None,
    ks: Sequence[int] = KS,
    seeds: int = 1,
    device: torch.device | str | None = None,
    metric: str = "euclidean",
) -> dict[str, Any]:
    """k-NN of a finished job's encoder against random init (and a supervised init file, if given).

    ``data`` is a chip-source spec (:func:`csf.data.load_chips`) or loaded chips whose bands are the
    encoder's, in its order; chips are normalised with the statistics stored in the artifact. Random
    init is evaluated for ``seeds`` seeds (0..seeds-1); ``metric``: the k-NN distance. Returns
    ``{init: {subset: {k: {"same_class", "accuracy", "k_used"}}}}`` for ``random`` (seed 0), ``csf``
    and ``supervised``, plus ``random_spread`` (:func:`seed_spread`) when ``seeds >= 2``.
    """
    from search_spaces.errors import DataError

    name, state, meta = load_csf_backbone(artifact)
    chips = data if isinstance(data, ChipSet) else load_chips(data)
    if chips.band_names != meta["band_names"]:
        raise DataError(f"the k-NN chips have bands {chips.band_names}, the encoder expects "
                        f"{meta['band_names']} (same names, same order)")
    encoders: dict[str, CSFEncoder] = {}
    for seed in range(max(1, seeds)):
        torch.manual_seed(seed)
        encoders[f"random_seed{seed}"] = build_encoder(name, meta["in_chans"])
    if supervised_init:
        supervised = build_encoder(name, meta["in_chans"])
        load_init_weights(supervised, supervised_init)
        encoders["supervised"] = supervised
    csf = build_encoder(name, meta["in_chans"], meta["stages"] or (-1,))
    csf.body.load_state_dict(state, strict=True)
    encoders["csf"] = csf
    results: dict[str, Any] = evaluate_knn(encoders, chips, meta["mean"], meta["std"], ks=ks, device=device,
                                               metric=metric)
    randoms = [results.pop(f"random_seed{seed}") for seed in range(max(1, seeds))]
    if seeds >= 2:
        results["random_spread"] = seed_spread(randoms)
    return {"random": randoms[0], **results}


def spread_of(values: Sequence[float]) -> dict[str, Any]:
    """``{"values", "min", "max", "mean", "spread"}`` of one score over seeds; spread = max - min."""
    values = list(values)
    return {"values": values, "min": min(values), "max": max(values), "mean": sum(values) / len(values),
            "spread": max(values) - min(values)}


def seed_spread(
    runs: Sequence[Mapping[str, Mapping[int, Mapping[str, float]]]],
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """How far the same scores move between runs that differ only in their seed (random inits):
    ``{subset: {k: {metric: {"values", "min", "max", "mean", "spread"}}}}`` (``values``: one per run, in
    order), spread = max - min. A gain smaller than the spread is not a gain."""
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for subset, by_k in runs[0].items():
        out[subset] = {}
        for k in by_k:
            out[subset][str(k)] = {}
            for metric in ("same_class", "accuracy"):
                out[subset][str(k)][metric] = spread_of([float(run[subset][k][metric]) for run in runs])
    return out
