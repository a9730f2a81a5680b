"""Two views of one location: independent random crops and per-sample, per-band channel dropout.

CSF learns sensor fusion by making the two views of a place see different sensors and bands: each
view is its own random crop of the same chip, and each band of each sample is zeroed with
probability ``p``. ``p`` ramps from 0 to ``p_max`` over the first batches so the encoder first
learns from whole stacks, then from ever sparser ones.

A sample never loses all the bands of its stack (a view of nothing cannot be matched). We draw the mask again
for such samples (rejection sampling), so a band is kept with probability ``(1 - p) / (1 - p**C)`` for ``C``
bands; kept bands are scaled by the inverse of that, which is ``1 / (1 - p)`` up to the tiny all-dropped
correction, and keeps every band's expected value exact. The rule counts all ``C`` bands of the stack, also
those sensor dropout (below) has zeroed, so a view left with few bands can lose them all: at ``p = 0.66`` with
sensor dropout 0.5 on the 41-band IDTReeS stack, 16 % of the views are all zeros (two in three height-only
views). Counting only the bands a view still has removes those, but on the IDTReeS plot split it lowered k-NN
(3 CSF seeds, 800 steps: 9 goal cells beyond random init's spread against 13, mean gain 2.7 against 3.6 pp;
the height model gained, the spectrometer and all bands lost), so the rule stays as the paper's band dropout
has it. With the later cpu profile of ``bench/csf_real.py`` (400 steps, ``ema`` 0.99, 3 plot folds, one seed
each, in process) counting only the bands a view still has (``dropout_counts: view``; a band is still there
when it is not zero everywhere in the view, which a dropped sensor's bands are) gave 10, 9 and 10 goal cells
and +1.28, +1.37 and +1.72 pp on fold seeds 0-2 against the rule's 8, 8 and 8 and +1.11, +1.36 and +1.41: the
height model's accuracy gained again, the spectrometer's and all bands' did not. Through the product
(``bench/results/history/csf_real-cv-dropout-counts-view-0fc816b.json``, 3 folds x 3 seeds) it gave 9 goal
cells and +1.02 pp against the profile's 8 and +0.94 (crop 32,
``bench/results/history/csf_real-cv-crop32-3628a3b.json``; cosine k-NN 12 against 11): a little better, still
short of the goal on the same accuracy cells. It stays an option (``stack``, the paper's rule, is the default)
until it wins by more than a rerun moves.

Band dropout itself costs a spectrometer its spectrum's shape: a view keeping a random third of 37 bands,
rescaled, asks the encoder for the same features from any third. On the IDTReeS plot folds (crop 24, in
process, three fold seeds) turning it off (``p_max`` 0; sensor dropout, crops, noise and gains still make the
views) gave 13, 14 and 13 goal cells against 11, 11 and 11, and through the product 13 of 16 against 10
(``bench/results/csf_real.json``); the spectrometer's k-NN accuracy among chips of one site went from below
random init's to above it (fold seed 0). ``p_max`` stays the paper's 0.66 by default; the real-data profile
sets 0.

``sensor_dropout`` (off by default; the paper drops bands, not sensors) zeroes whole sensors: each
sensor of each sample's view is dropped with probability ``sensor_dropout`` (ramped like ``p``),
never all of them, and the kept bands are scaled by ``C / kept`` for that sample, exactly the
convention the k-NN evaluation uses for a single sensor (:mod:`csf.knn`). With per-band dropout
alone, a view of a 41-band stack (37 hyperspectral bands) almost never shows one sensor by itself,
so "RGB only" is a view the encoder never trained on; sensor dropout makes it a common one.

``cross_sensor`` (off by default) goes further: for that share of the samples (ramped like ``p``)
the two views see complementary sensor sets, view 1 a random non-empty proper subset of the sensors
and view 2 exactly the ones view 1 lacks, so a match must come from what both sensor sets show of
the ground (the RGB camera's view of a crown against its height and spectrum), never from a sensor
the two views share.

``dihedral`` (off by default) turns and mirrors each chip at random before both views are cut from
it: overhead imagery has no up, so a small set of chips shows the encoder eight times as many.

Two further view changes are options, off by default (the paper has neither): ``noise_std`` adds
independent Gaussian noise to each view, and ``gain_jitter`` multiplies each band of each view by
``exp(N(0, gain_jitter))``. Both remove a shortcut the paper's two views leave open: the views are
crops of one stack, so where they overlap they share every pixel's sensor noise and exact band
levels, and an encoder can match them on those rather than on what is on the ground. Real sensors
differ in both, which is what the views stand for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from search_spaces.errors import SpecError

__all__ = ["DROPOUT_COUNTS", "ViewConfig", "dropout_probability", "channel_dropout", "random_crop", "sensor_jitter",
           "sensor_dropout", "sensor_split", "dihedral", "make_views"]


#: what band dropout's never-all rule counts: every band of the stack (the paper), or only the bands the view
#: still has after sensor dropout (so a height-only view is never emptied)
DROPOUT_COUNTS = ("stack", "view")


@dataclass(frozen=True)
class ViewConfig:
    """How views are made. Paper: 160 px chips, 128 px crops, p → 0.66 over 8,000 batches."""

    crop: int = 128
    p_max: float = 0.66
    ramp_steps: int = 8000
    noise_std: float = 0.0  # per-view Gaussian noise, in the units of the (normalised) input
    gain_jitter: float = 0.0  # per-view, per-band log-normal gain: std of the log
    sensor_dropout: float = 0.0  # per-view, per-sensor drop probability at the end of the ramp
    cross_sensor: float = 0.0  # share of samples whose two views see complementary sensor sets
    dihedral: bool = False  # turn and mirror each chip (the same for both views) before the crops
    dropout_counts: str = "stack"  # band dropout's never-all rule counts: every band of the stack, or the view's

    def __post_init__(self) -> None:
        if self.crop < 8:
            raise SpecError(f"crop must be at least 8 px, got {self.crop}", field="crop")
        if not 0.0 <= self.p_max < 1.0:
            raise SpecError(f"p_max must be in [0, 1), got {self.p_max}", field="p_max")
        if self.ramp_steps < 0:
            raise SpecError(f"ramp_steps must be >= 0, got {self.ramp_steps}", field="ramp_steps")
        if not 0.0 <= self.sensor_dropout < 1.0:
            raise SpecError(f"sensor_dropout must be in [0, 1), got {self.sensor_dropout}",
                            field="sensor_dropout")
        if not 0.0 <= self.cross_sensor <= 1.0:
            raise SpecError(f"cross_sensor must be in [0, 1], got {self.cross_sensor}", field="cross_sensor")
        if self.dropout_counts not in DROPOUT_COUNTS:
            raise SpecError(f"dropout_counts must be one of {list(DROPOUT_COUNTS)}, got {self.dropout_counts!r}",
                            field="dropout_counts")
        for name in ("noise_std", "gain_jitter"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SpecError(f"{name} must be in [0, 1], got {getattr(self, name)}", field=name)


def dropout_probability(step: int, config: ViewConfig) -> float:
    """The band-dropout probability at a global batch index: linear from 0 to ``p_max``."""
    if config.ramp_steps == 0:
        return config.p_max
    return config.p_max * min(1.0, max(0, step) / config.ramp_steps)


def channel_dropout(x: torch.Tensor, p: float, generator: torch.Generator | None = None,
                    present: torch.Tensor | None = None) -> torch.Tensor:
    """Zero each band of each sample of ``x`` (N, C, H, W) with probability ``p``, never all of them.

    Kept bands are scaled so that every band's expected value is unchanged (see the module note).
    ``present`` (N, C) bool: only these bands count and can be kept (``dropout_counts: view``); the
    never-all rule then holds for each sample's present bands.
    """
    if p <= 0.0:
        return x
    n, c = x.shape[:2]
    device = generator.device if generator is not None else x.device
    allowed = None if present is None else present.to(device)
    if allowed is not None:  # a sample with no band present (an all-zero chip) counts every band, as the paper
        allowed = allowed | ~allowed.any(dim=1, keepdim=True)
    keep = torch.rand((n, c), generator=generator, device=device) >= p
    if allowed is not None:
        keep &= allowed
    dead = ~keep.any(dim=1)
    while bool(dead.any()):
        redraw = torch.rand((int(dead.sum()), c), generator=generator, device=device) >= p
        keep[dead] = redraw if allowed is None else redraw & allowed[dead]
        dead = ~keep.any(dim=1)
    counted = c if allowed is None else allowed.sum(dim=1, keepdim=True).to(x.dtype)
    keep_probability = (1.0 - p) / (1.0 - p**counted)
    scale = keep.to(x.dtype) / keep_probability
    return x * scale.to(x.device)[:, :, None, None]


def _sensor_keep(n: int, sensors: int, p: float, generator: torch.Generator | None,
                 device: torch.device) -> torch.Tensor:
    """(n, sensors) keep flags: each sensor dropped with probability ``p``, never all of a row."""
    keep = torch.rand((n, sensors), generator=generator, device=device) >= p
    dead = ~keep.any(dim=1)
    while bool(dead.any()):
        keep[dead] = torch.rand((int(dead.sum()), sensors), generator=generator, device=device) >= p
        dead = ~keep.any(dim=1)
    return keep


def _apply_sensor_keep(x: torch.Tensor, groups: Sequence[Sequence[int]], keep: torch.Tensor) -> torch.Tensor:
    """Zero the dropped sensors' bands and scale each sample's kept bands by ``C / kept``."""
    n, c = x.shape[:2]
    band_keep = torch.zeros((n, c), dtype=torch.bool, device=keep.device)
    for g, bands in enumerate(groups):
        band_keep[:, list(bands)] = keep[:, g : g + 1]
    scale = band_keep.to(x.dtype) * (c / band_keep.sum(dim=1, keepdim=True).to(x.dtype))
    return x * scale.to(x.device)[:, :, None, None]


def sensor_dropout(x: torch.Tensor, groups: Sequence[Sequence[int]], p: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero each sensor (a group of band indices) of each sample with probability ``p``, never all.

    Kept bands are scaled by ``C / kept`` per sample (the k-NN's single-sensor convention).
    """
    if p <= 0.0 or len(groups) < 2:
        return x
    device = generator.device if generator is not None else x.device
    return _apply_sensor_keep(x, groups, _sensor_keep(len(x), len(groups), p, generator, device))


def sensor_split(n: int, sensors: int, p_dropout: float, p_cross: float,
                 generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Both views' (n, sensors) keep flags: independent whole-sensor dropout, or, for a share
    ``p_cross`` of the samples, complementary sensor sets (view 1 a random non-empty proper subset,
    view 2 exactly the sensors view 1 lacks), so the two views share no sensor."""
    device = torch.device(device)
    keep1 = _sensor_keep(n, sensors, p_dropout, generator, device)
    keep2 = _sensor_keep(n, sensors, p_dropout, generator, device)
    if p_cross > 0.0 and sensors >= 2:
        cross = torch.rand(n, generator=generator, device=device) < p_cross
        subset = _sensor_keep(n, sensors, 0.5, generator, device)
        full = subset.all(dim=1)
        while bool(full.any()):  # a proper subset: its complement must not be empty
            subset[full] = _sensor_keep(int(full.sum()), sensors, 0.5, generator, device)
            full = subset.all(dim=1)
        keep1 = torch.where(cross[:, None], subset, keep1)
        keep2 = torch.where(cross[:, None], ~subset, keep2)
    return keep1, keep2


def dihedral(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each sample of ``x`` (N, C, H, W) turned by a random multiple of 90 degrees and maybe mirrored.

    Overhead imagery has no up: the eight turns and mirrors of a chip show the same ground.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    turns = torch.randint(0, 4, (len(x),), generator=generator, device=device).tolist()
    mirror = torch.randint(0, 2, (len(x),), generator=generator, device=device).tolist()
    out = [torch.rot90(s, k, dims=(1, 2)) for s, k in zip(x, turns, strict=True)]
    return torch.stack([s.flip(2) if m else s for s, m in zip(out, mirror, strict=True)])


def random_crop(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """An independent random ``size``×``size`` crop of every sample of ``x`` (N, C, H, W)."""
    n, _, h, w = x.shape
    if size > h or size > w:
        raise SpecError(f"crop {size} px is larger than the chips ({h}×{w} px); use a smaller crop",
                        field="crop")
    device = generator.device if generator is not None else torch.device("cpu")
    tops = torch.randint(0, h - size + 1, (n,), generator=generator, device=device).tolist()
    lefts = torch.randint(0, w - size + 1, (n,), generator=generator, device=device).tolist()
    crops = [x[i, :, t : t + size, s : s + size] for i, (t, s) in enumerate(zip(tops, lefts, strict=True))]
    return torch.stack(crops)


def sensor_jitter(x: torch.Tensor, noise_std: float, gain_jitter: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Own noise and own per-band gain for each sample of ``x`` (N, C, H, W); identity when both are 0.

    The gain is log-normal with median 1, so a band's median level is unchanged; the noise has mean 0.
    """
    if noise_std <= 0.0 and gain_jitter <= 0.0:
        return x
    device = generator.device if generator is not None else x.device
    if gain_jitter > 0.0:
        gain = torch.exp(gain_jitter * torch.randn(x.shape[:2], generator=generator, device=device))
        x = x * gain.to(x.device, x.dtype)[:, :, None, None]
    if noise_std > 0.0:
        noise = torch.randn(x.shape, generator=generator, device=device)
        x = x + noise_std * noise.to(x.device, x.dtype)
    return x


def make_views(
    x: torch.Tensor, step: int, config: ViewConfig, generator: torch.Generator | None = None,
    groups: Sequence[Sequence[int]] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views of each chip in ``x``: own crop, own sensor jitter, own sensor and band dropout.

    ``groups`` are the band indices of each sensor (for ``sensor_dropout`` and ``cross_sensor``).
    """
    p = dropout_probability(step, config)
    ramp = 1.0 if config.ramp_steps == 0 else min(1.0, max(0, step) / config.ramp_steps)
    if config.dihedral:
        x = dihedral(x, generator)
    keeps = None
    if len(groups) >= 2 and config.cross_sensor > 0:
        device = generator.device if generator is not None else x.device
        keeps = sensor_split(len(x), len(groups), config.sensor_dropout * ramp, config.cross_sensor * ramp,
                             generator, device)
    views = []
    for i in range(2):
        view = random_crop(x, config.crop, generator)
        view = sensor_jitter(view, config.noise_std, config.gain_jitter, generator)
        if keeps is not None:
            view = _apply_sensor_keep(view, groups, keeps[i])
        else:
            view = sensor_dropout(view, groups, config.sensor_dropout * ramp, generator)
        present = view.flatten(2).ne(0).any(dim=2) if config.dropout_counts == "view" and p > 0 else None
        views.append(channel_dropout(view, p, generator, present))
    return views[0], views[1]
