"""Contracts of CSF's parts that need no cluster: loss, views, encoder export, k-NN, data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from csf.data import load_chips
from csf.encoder import (
    EncoderMetadata,
    build_encoder,
    create_csf_backbone,
    export_encoder,
    load_csf_backbone,
    load_init_weights,
)
from csf.knn import evaluate_knn, for_metric, knn_scores, pca_reduce
from csf.loss import contrastive_loss, layer_loss
from csf.multisensor import write_multisensor_dataset
from csf.views import (
    ViewConfig,
    channel_dropout,
    dihedral,
    dropout_probability,
    make_views,
    random_crop,
    sensor_dropout,
    sensor_jitter,
    sensor_split,
)
from search_spaces.errors import DataError, GeonasError, SpecError

torch.set_num_threads(1)


# -- loss


def test_loss_is_exactly_symmetric_when_views_are_swapped():
    g = torch.Generator().manual_seed(0)
    layers1 = [torch.randn(6, 8, 4, 4, generator=g) * 5, torch.randn(6, 16, 2, 2, generator=g)]
    layers2 = [torch.randn(6, 8, 4, 4, generator=g) * 5, torch.randn(6, 16, 2, 2, generator=g)]
    a, _ = contrastive_loss(layers1, layers2)
    b, _ = contrastive_loss(layers2, layers1)
    assert a.item() > 0
    assert torch.equal(a, b)  # bitwise, not approximately


def _orthonormal_rows(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, n, generator=g))
    return q.T.contiguous()  # (n, d), distinct unit rows


def test_loss_is_minimal_when_views_agree():
    z = _orthonormal_rows(8, 32, 0)
    at_match = layer_loss(z, z).item()
    g = torch.Generator().manual_seed(1)
    # Without L2 normalisation, scaling features up always lowers the loss, so compare at equal row
    # norms: noisy copies (renormalised), wrong pairings, and a partial shuffle.
    perturbed = []
    for sigma in (0.05, 0.2, 0.5):
        for _ in range(5):
            w = z + sigma * torch.randn(z.shape, generator=g)
            perturbed.append(w / w.norm(dim=1, keepdim=True))
    perturbed.append(z[torch.randperm(8, generator=g)])
    perturbed.append(z[[1, 0, 2, 3, 4, 5, 6, 7]])
    for w in perturbed:
        assert layer_loss(z, w).item() > at_match
        assert layer_loss(w, z).item() > at_match


def test_loss_is_stable_for_huge_unnormalised_features():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(4, 4096, generator=g) * 1e3  # dot products ~ 1e8, / tau ~ 1e9: exp overflows
    z2 = z1 + torch.randn(4, 4096, generator=g) * 1e2
    z1.requires_grad_(True)
    loss, to_backward = contrastive_loss([z1.half()], [z2.half()])
    to_backward.backward()
    assert torch.isfinite(loss) and torch.isfinite(z1.grad).all()


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e2, 1e4])
def test_the_loss_is_finite_and_above_zero_at_any_scale_identical_views_included(scale):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, 512, generator=g) * scale
    noisy = z + 0.1 * scale * torch.randn(32, 512, generator=g)
    bound = math.log(32) + 2 / 0.1  # cosine logits lie in [-1/τ, 1/τ]
    for other in (z, noisy):
        loss = layer_loss(z, other)
        assert torch.isfinite(loss) and 0 < loss.item() <= bound


def test_the_papers_raw_dot_product_saturates_which_is_why_cosine_is_the_default():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, 512, generator=g) * 10  # deep features: dot products in the thousands
    assert layer_loss(z, z, normalize=False).item() == 0.0  # positives lead by far: nothing to learn
    shuffled = z[torch.randperm(32, generator=g)]
    assert layer_loss(z, shuffled, normalize=False).item() > 100  # a negative leads: a huge step
    assert 0 < layer_loss(z, z).item() < layer_loss(z, shuffled).item() < math.log(32) + 20


# -- views


def test_chips_of_a_samples_own_place_are_left_out_of_its_negatives():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g)
    places = torch.tensor([0, 0, 1, 1, 2, 3])
    # every place its own: nothing is left out
    assert torch.equal(layer_loss(z1, z2, places=torch.arange(6)), layer_loss(z1, z2))
    # the same as a cross-entropy over each row without the other chips of its place
    a, b = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    expected = []
    for s, t in ((a, b), (b, a)):
        logits = s @ t.T / 0.1
        for i in range(6):
            keep = [j for j in range(6) if j == i or places[j] != places[i]]
            expected.append(-torch.log_softmax(logits[i, keep], 0)[keep.index(i)])
    masked = layer_loss(z1, z2, places=places)
    assert torch.isclose(masked, torch.stack(expected).mean(), atol=1e-6)
    assert masked < layer_loss(z1, z2)  # fewer negatives
    z1.requires_grad_(True)
    loss, to_backward = contrastive_loss([z1.reshape(6, 4, 2, 2)], [z2.reshape(6, 4, 2, 2)], places=places)
    to_backward.backward()
    assert torch.isfinite(loss) and torch.isfinite(z1.grad).all()
    with pytest.raises(ValueError, match="5 places for 6 samples"):
        layer_loss(z1, z2, places=places[:5])


def test_channel_dropout_keeps_the_expected_value():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 1, 1, generator=g).expand(200_000, 3, 1, 1).contiguous() + 1.0
    for p in (0.3, 0.66):
        y = channel_dropout(x, p, g)
        assert ((y != 0).flatten(1).any(dim=1)).all(), "a sample lost every band"
        kept_share = (y[:, :, 0, 0] != 0).float().mean().item()
        assert kept_share == pytest.approx((1 - p) / (1 - p**3), abs=0.005)
        mean = y.mean(dim=0).flatten()
        assert torch.allclose(mean, x[0].flatten(), rtol=0.01), (p, mean, x[0].flatten())


def test_dropout_ramp_and_views():
    cfg = ViewConfig(crop=16, p_max=0.66, ramp_steps=100)
    assert dropout_probability(0, cfg) == 0.0
    assert dropout_probability(50, cfg) == pytest.approx(0.33)
    assert dropout_probability(10_000, cfg) == pytest.approx(0.66)
    x = torch.randn(4, 5, 24, 24)
    v1, v2 = make_views(x, 0, cfg, torch.Generator().manual_seed(0))
    assert v1.shape == v2.shape == (4, 5, 16, 16)
    assert not torch.equal(v1, v2)  # independent crops
    with pytest.raises(SpecError):
        random_crop(x, 32)
    with pytest.raises(SpecError):
        ViewConfig(p_max=1.0)
    with pytest.raises(SpecError, match="noise_std"):
        ViewConfig(noise_std=-0.1)


def test_sensor_dropout_drops_whole_sensors_and_scales_like_the_knn_single_sensor_view():
    """A view keeps whole sensors (never none) with the kept bands scaled by C / kept: a view of the
    RGB camera alone is then exactly the input k-NN's "rgb" column gives the encoder."""
    g = torch.Generator().manual_seed(0)
    groups = [[0, 1, 2], [3, 4, 5, 6, 7], [8]]  # rgb, a 5-band sensor, a 1-band sensor
    x = torch.ones(4000, 9, 2, 2)
    y = sensor_dropout(x, groups, 0.5, g)[:, :, 0, 0]
    kept = y != 0
    for bands in groups:  # a sensor is kept or dropped as a whole
        assert (kept[:, bands].all(dim=1) | ~kept[:, bands].any(dim=1)).all()
    assert kept.any(dim=1).all(), "a view lost every sensor"
    scale = 9 / kept.sum(dim=1)
    assert torch.allclose(y[kept], scale[:, None].expand_as(y)[kept])
    rgb_only = kept[:, :3].all(dim=1) & ~kept[:, 3:].any(dim=1)
    assert rgb_only.float().mean().item() == pytest.approx(0.125 / (1 - 0.125), abs=0.02)  # never-all redraw
    assert sensor_dropout(x, groups, 0.0, g) is x and sensor_dropout(x, [list(range(9))], 0.5, g) is x
    with pytest.raises(SpecError, match="sensor_dropout"):
        ViewConfig(sensor_dropout=1.0)


def test_cross_sensor_views_share_no_sensor():
    """With ``cross_sensor`` a sample's two views see complementary, non-empty sensor sets: the RGB
    camera on one side must match what the height model and the spectrometer show on the other."""
    g = torch.Generator().manual_seed(0)
    keep1, keep2 = sensor_split(5000, 3, 0.5, 1.0, g)
    assert (keep1 ^ keep2).all() and keep1.any(dim=1).all() and keep2.any(dim=1).all()
    share_single = (keep1.sum(dim=1) == 1).float().mean().item()
    assert share_single == pytest.approx(0.5, abs=0.03)  # 3 of the 6 proper subsets hold one sensor
    keep1, keep2 = sensor_split(5000, 3, 0.5, 0.3, g)  # a share of the samples only
    crossed = (keep1 ^ keep2).all(dim=1).float().mean().item()
    independent_complement = 6 / 49  # two independent never-empty draws that happen to be complements
    assert crossed == pytest.approx(0.3 + 0.7 * independent_complement, abs=0.03)
    groups = [[0, 1, 2], [3, 4, 5, 6, 7], [8]]
    cfg = ViewConfig(crop=8, p_max=0.0, ramp_steps=0, cross_sensor=1.0)
    v1, v2 = make_views(torch.ones(500, 9, 8, 8), 0, cfg, g, groups)
    k1, k2 = v1[:, :, 0, 0] != 0, v2[:, :, 0, 0] != 0
    assert (k1 ^ k2).all()  # every band is in exactly one view
    assert torch.allclose(v1[:, :, 0, 0][k1], (9 / k1.sum(dim=1))[:, None].expand_as(k1)[k1])
    with pytest.raises(SpecError, match="cross_sensor"):
        ViewConfig(cross_sensor=1.5)


def test_view_counted_band_dropout_never_empties_a_view_that_sensor_dropout_left_with_one_band():
    """``dropout_counts: view``: band dropout counts only the bands a view still has, so a height-only
    view (one band left) keeps it, at its own level; the paper's rule (``stack``) counts all nine bands
    and empties most such views."""
    g = torch.Generator().manual_seed(0)
    height_only = torch.zeros(2000, 9, 4, 4)
    height_only[:, 8] = 1.0
    present = height_only.flatten(2).ne(0).any(dim=2)
    kept = channel_dropout(height_only, 0.66, g, present)
    assert torch.allclose(kept, height_only)  # the one band left is always kept, at its own level
    emptied = (channel_dropout(height_only, 0.66, g).flatten(1).abs().amax(dim=1) == 0).float().mean().item()
    assert emptied == pytest.approx(1 - 0.34 / (1 - 0.66**9), abs=0.03)
    blank = torch.zeros(3, 9, 4, 4)  # nothing present: the paper's rule, and no endless redraw
    assert torch.equal(channel_dropout(blank, 0.66, g, torch.zeros(3, 9, dtype=torch.bool)), blank)
    groups = [[0, 1, 2], [3, 4, 5, 6, 7], [8]]
    cfg = ViewConfig(crop=8, p_max=0.66, ramp_steps=0, sensor_dropout=0.5, dropout_counts="view")
    for view in make_views(torch.ones(2000, 9, 8, 8), 0, cfg, g, groups):
        assert view.flatten(1).abs().amax(dim=1).gt(0).all()
    with pytest.raises(SpecError, match="dropout_counts"):
        ViewConfig(dropout_counts="bands")


def test_dihedral_turns_and_mirrors_each_chip_as_a_whole():
    """Each chip becomes one of its eight turns and mirrors, all bands alike; over many chips all
    eight appear; both views are cut from the turned chip."""
    g = torch.Generator().manual_seed(0)
    chip = torch.arange(2 * 4 * 4, dtype=torch.float32).view(2, 4, 4)
    variants = [torch.rot90(chip, k, dims=(1, 2)) for k in range(4)]
    variants += [v.flip(2) for v in variants]
    out = dihedral(chip.expand(400, 2, 4, 4), g)
    seen = {next(i for i, v in enumerate(variants) if torch.equal(o, v)) for o in out}
    assert seen == set(range(8))
    cfg = ViewConfig(crop=8, p_max=0.0, ramp_steps=0, dihedral=True)
    x = torch.arange(8 * 8, dtype=torch.float32).view(1, 1, 8, 8).expand(64, 1, 8, 8)
    v1, v2 = make_views(x, 0, cfg, g)
    assert torch.equal(v1, v2)  # whole-chip crops: the same turn for both views
    assert not all(torch.equal(v, x[0]) for v in v1)


def test_pretraining_spec_carries_the_view_options_to_the_trainer():
    from csf.train import PretrainConfig
    from service.pretrain_driver import csf_config
    from service.specs import PretrainingSpec

    spec = PretrainingSpec.model_validate({"name": "p", "data": {"kind": "multisensor", "path": "/data/ms"},
                                           "cross_sensor": 0.5, "dihedral": True, "sensor_dropout": 0.3,
                                           "place_negatives": False, "dropout_counts": "view"})
    config = csf_config(spec, "p")
    trainer = PretrainConfig.from_dict({k: v for k, v in config.items() if k not in ("name", "num_workers")})
    views = trainer.views()
    assert (views.cross_sensor, views.dihedral, views.sensor_dropout) == (0.5, True, 0.3)
    assert views.dropout_counts == "view" and PretrainingSpec.model_fields["dropout_counts"].default == "stack"
    assert trainer.place_negatives is False
    assert PretrainingSpec.model_fields["place_negatives"].default is True  # the paper's loss unless asked


def test_ema_exports_a_moving_average_of_the_weights_and_resumes_it():
    from csf.train import CSFStep, PretrainConfig
    from service.pretrain_driver import csf_config
    from service.specs import PretrainingSpec

    cfg = PretrainConfig.from_dict({"data": {"kind": "multisensor"}, "backbone": "resnet18", "crop": 24,
                                    "warmup_steps": 0, "ramp_steps": 0, "ema": 0.5})
    batch = torch.randn(4, 5, 32, 32, generator=torch.Generator().manual_seed(0))

    def run(step: CSFStep, steps: range) -> None:
        for i in steps:
            step(batch, i, torch.Generator().manual_seed(i))

    torch.manual_seed(0)
    model = build_encoder("resnet18", 5)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    step = CSFStep(model, cfg, torch.device("cpu"))
    for i in range(3):  # by hand: the first step's weights, then halfway towards each next step's
        step(batch, i, torch.Generator().manual_seed(i))
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                expected[key] = value.clone() if i == 0 else 0.5 * expected[key] + 0.5 * value
    averaged = step.encoder.state_dict()
    assert step.encoder is not model and averaged.keys() == expected.keys()
    for key, value in expected.items():
        if value.is_floating_point():  # BatchNorm statistics are averaged too
            torch.testing.assert_close(averaged[key], value)
    assert not torch.equal(averaged["body.conv1.weight"], model.state_dict()["body.conv1.weight"])

    # A resumed run (weights, optimiser and average from a checkpoint) ends where an unbroken one does.
    torch.manual_seed(0)
    unbroken = CSFStep(build_encoder("resnet18", 5), cfg, torch.device("cpu"))
    run(unbroken, range(4))
    torch.manual_seed(0)
    first = CSFStep(build_encoder("resnet18", 5), cfg, torch.device("cpu"))
    run(first, range(2))
    resumed = CSFStep(build_encoder("resnet18", 5), cfg, torch.device("cpu"))
    resumed.model.load_state_dict(first.model.state_dict())
    resumed.load_state_dict(first.state_dict())
    run(resumed, range(2, 4))
    for key, value in unbroken.encoder.state_dict().items():
        torch.testing.assert_close(resumed.encoder.state_dict()[key], value)
    plain = CSFStep(build_encoder("resnet18", 5), PretrainConfig.from_dict({"data": {}}), torch.device("cpu"))
    with pytest.raises(GeonasError, match="moving average"):
        resumed.load_state_dict(plain.state_dict())  # started without ema: nothing to resume the average from
    assert plain.encoder is plain.model and plain.state_dict()["average"] is None

    with pytest.raises(SpecError, match="ema"):
        PretrainConfig.from_dict({"data": {}, "ema": 1.0})
    spec = PretrainingSpec.model_validate({"name": "p", "data": {"kind": "multisensor", "path": "/d"}, "ema": 0.99})
    assert csf_config(spec, "p")["ema"] == 0.99 and PretrainingSpec.model_fields["ema"].default == 0.0


def test_the_learning_rate_warms_up_then_decays_along_a_cosine_to_zero_or_holds():
    from csf.schedule import lr_factor
    from csf.train import PretrainConfig

    cosine = [lr_factor("cosine", step, 10, 110) for step in range(110)]
    assert cosine[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert cosine[10] == 1.0 and cosine[60] == pytest.approx(0.5) and cosine[-1] < 1e-3
    assert all(a >= b for a, b in zip(cosine[10:-1], cosine[11:], strict=True))
    assert [lr_factor("constant", step, 10, 110) for step in (9, 10, 109)] == [1.0, 1.0, 1.0]
    assert lr_factor("cosine", 0, 0, 1) == 1.0  # no warm-up: the first step runs at the base rate
    with pytest.raises(SpecError, match="lr_schedule must be one of") as info:
        PretrainConfig.from_dict({"data": {"kind": "multisensor", "root": "x"}, "lr_schedule": "step"})
    assert info.value.field == "lr_schedule"


def test_pretraining_spec_carries_the_schedule_to_the_trainer_and_refuses_an_unknown_one():
    from pydantic import ValidationError

    from service.pretrain_driver import csf_config
    from service.specs import PretrainingSpec

    base = {"name": "p", "data": {"kind": "multisensor", "path": "/data/ms"}}
    assert csf_config(PretrainingSpec.model_validate(base), "p")["lr_schedule"] == "constant"
    spec = PretrainingSpec.model_validate({**base, "lr_schedule": "cosine"})
    assert csf_config(spec, "p")["lr_schedule"] == "cosine"
    with pytest.raises(ValidationError, match="lr_schedule"):
        PretrainingSpec.model_validate({**base, "lr_schedule": "linear"})


def test_sensor_jitter_gives_each_view_its_own_noise_and_gains():
    g = torch.Generator().manual_seed(0)
    x = torch.full((20_000, 4, 2, 2), 2.0)
    assert sensor_jitter(x, 0.0, 0.0, g) is x  # the paper's views: untouched
    noisy = sensor_jitter(x, 0.3, 0.0, g)
    assert (noisy - x).mean().item() == pytest.approx(0.0, abs=0.01)
    assert (noisy - x).std().item() == pytest.approx(0.3, rel=0.02)
    gained = sensor_jitter(x, 0.0, 0.2, g)
    per_band = gained[:, :, 0, 0] / 2.0
    assert torch.allclose(gained, per_band[:, :, None, None] * 2.0)  # one gain per sample and band
    assert per_band.log().std().item() == pytest.approx(0.2, rel=0.05)  # log-normal, median 1
    assert per_band.median().item() == pytest.approx(1.0, abs=0.01)
    cfg = ViewConfig(crop=8, p_max=0.0, ramp_steps=0, noise_std=0.3)
    v1, v2 = make_views(torch.zeros(8, 3, 8, 8), 0, cfg, g)  # same crop (whole chip), different noise
    assert not torch.allclose(v1, v2)


# -- encoder export


def _metadata(c: int) -> EncoderMetadata:
    return EncoderMetadata("resnet18", c, [f"b{i}" for i in range(c)], [0.0] * c, [1.0] * c,
                           {"s": [f"b{i}" for i in range(c)]}, [3, 4], 7)


def test_encoder_export_loads_into_the_model_builder_backbone(tmp_path):
    enc = build_encoder("resnet18", 5, stages=[-2, -1])
    assert enc.stages == (3, 4)
    path = export_encoder(enc, tmp_path / "enc.safetensors", _metadata(5))
    name, state, meta = load_csf_backbone(path)
    assert (name, meta["in_chans"], meta["band_names"][0], meta["steps"]) == ("resnet18", 5, "b0", 7)
    target = timm.create_model(name, features_only=True, in_chans=5, pretrained=False)
    target.load_state_dict(state, strict=True)
    model, _ = create_csf_backbone(path)
    x = torch.randn(1, 5, 32, 32)
    enc.eval(), model.eval()
    assert torch.allclose(enc.forward_all(x)[-1], model(x)[-1])


def test_encoder_errors_say_what_to_do(tmp_path):
    with pytest.raises(SpecError, match="timm.list_models"):
        build_encoder("no_such_net", 3)
    with pytest.raises(SpecError, match="out of range"):
        build_encoder("resnet18", 3, stages=[9])
    with pytest.raises(DataError, match="does not exist"):
        load_csf_backbone(tmp_path / "missing.safetensors")


def test_supervised_init_adapts_the_stem(tmp_path):
    rgb = timm.create_model("resnet18", pretrained=False)  # a classifier's state dict, 3 bands
    torch.save(rgb.state_dict(), tmp_path / "sup.pth")
    enc = build_encoder("resnet18", 7)
    ignored = load_init_weights(enc, tmp_path / "sup.pth")
    assert "fc.weight" in ignored
    assert enc.body.conv1.weight.shape[1] == 7
    assert torch.equal(enc.body.layer1[0].conv1.weight, rgb.layer1[0].conv1.weight)


# -- k-NN


def test_knn_scores_perfect_and_random():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)
    clustered = rng.normal(size=(120, 8)) * 0.01 + np.eye(8)[labels] * 10
    scores = knn_scores(pca_reduce(clustered, 2048), labels, ks=(10, 25))
    assert scores[10]["same_class"] == 1.0 and scores[25]["accuracy"] == 1.0
    noise = knn_scores(rng.normal(size=(120, 8)), labels, ks=(10,))
    assert noise[10]["same_class"] < 0.5
    assert knn_scores(clustered, labels, ks=(500,))[500]["k_used"] == 119


def test_cosine_knn_reads_directions_and_ignores_each_chips_scale():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 40)
    directions = np.eye(6)[labels] + rng.normal(size=(120, 6)) * 0.2
    scaled = directions * 10.0 ** rng.uniform(-3, 3, size=(120, 1))  # norms over six orders of magnitude
    cosine = knn_scores(pca_reduce(for_metric(scaled, "cosine")), labels, ks=(10,))[10]
    euclidean = knn_scores(pca_reduce(for_metric(scaled, "euclidean")), labels, ks=(10,))[10]
    assert cosine["same_class"] == 1.0 and euclidean["same_class"] < 0.9
    assert np.array_equal(for_metric(scaled, "euclidean"), scaled)
    with pytest.raises(ValueError, match="euclidean"):
        for_metric(scaled, "manhattan")


# -- data


@pytest.fixture(scope="module")
def multisensor_root(tmp_path_factory):
    # No per-pass light and haze here, so the co-registration check sees geometry alone.
    return write_multisensor_dataset(tmp_path_factory.mktemp("ms"), n_chips=24, size=32, seed=3, acquisition=0.0)


def test_multisensor_dataset_is_co_registered_and_labelled(multisensor_root):
    import rasterio

    with rasterio.open(multisensor_root / "landsat.tif") as src:
        assert src.res == (4.0, 4.0) and src.crs.to_epsg() == 32640 and src.count == 4
    chips = load_chips({"kind": "multisensor", "root": str(multisensor_root)})
    assert chips.images.shape == (24, 12, 32, 32)
    assert list(chips.sensors) == ["aerial", "smallsat", "landsat"]
    assert chips.band_names[4] == "smallsat_blue" and chips.labels.shape == (24,)
    # The coarse sensor, warped onto the fine grid, sees the same place: bands correlate.
    red_fine = chips.images[:, 2].ravel()
    red_coarse = chips.images[:, 10].ravel()
    assert np.corrcoef(red_fine, red_coarse)[0, 1] > 0.8
    one = load_chips({"kind": "multisensor", "root": str(multisensor_root), "sensors": ["landsat"]})
    assert one.band_names == ["landsat_blue", "landsat_green", "landsat_red", "landsat_nir"]
    with pytest.raises(SpecError, match="available"):
        load_chips({"kind": "multisensor", "root": str(multisensor_root), "sensors": ["sentinel"]})
    with pytest.raises(SpecError, match="valid"):
        load_chips({"kind": "nope"})


def test_each_sensor_pass_has_its_own_light_and_haze(tmp_path):
    """With acquisition conditions two sensors disagree on brightness from place to place; without, not."""

    def red_ratio_spread(acquisition: float) -> float:
        root = write_multisensor_dataset(tmp_path / f"a{acquisition}", n_chips=16, size=32, seed=5,
                                         acquisition=acquisition)
        chips = load_chips({"kind": "multisensor", "root": str(root)})
        aerial, smallsat = chips.images[:, 2].mean(axis=(1, 2)), chips.images[:, 6].mean(axis=(1, 2))
        return float(np.std(np.log(smallsat / aerial)))  # per-chip ratio of the two red bands

    assert red_ratio_spread(1.0) > 4 * red_ratio_spread(0.0)
    with pytest.raises(SpecError, match="acquisition"):
        write_multisensor_dataset(tmp_path / "bad", n_chips=4, size=32, acquisition=-1.0)


def test_evaluate_knn_per_sensor_and_all(multisensor_root):
    chips = load_chips({"kind": "multisensor", "root": str(multisensor_root)})
    mean, std = chips.band_stats()
    enc = build_encoder("resnet18", 12)
    result = evaluate_knn({"random": enc}, chips, mean, std, ks=(10,))
    assert set(result["random"]) == {"aerial", "smallsat", "landsat", "all"}
    assert 0.0 <= result["random"]["all"][10]["accuracy"] <= 1.0


def test_projection_heads_feed_the_loss_and_stay_out_of_the_export(tmp_path):
    enc = build_encoder("resnet18", 5, stages=[-2, -1], projection=16)
    x = torch.randn(2, 5, 64, 64)
    maps = enc(x)
    assert [m.shape[1] for m in maps] == [16, 16]  # the loss sees the heads' outputs
    assert [m.shape[-1] for m in maps] == [f.shape[-1] for f in enc.forward_all(x)[-2:]]  # per pixel
    assert enc.embed(x).shape == (2, 512)  # k-NN and transfer use the body
    meta = EncoderMetadata("resnet18", 5, [f"b{i}" for i in range(5)], [0.0] * 5, [1.0] * 5, {}, [3, 4], 1)
    path = export_encoder(enc, tmp_path / "e.safetensors", meta)
    name, state, _ = load_csf_backbone(path)
    assert not any(k.startswith("heads") for k in state)
    timm.create_model(name, features_only=True, in_chans=5).load_state_dict(state, strict=True)
    with pytest.raises(SpecError, match="projection"):
        build_encoder("resnet18", 5, projection=-1)


def test_knn_never_takes_a_neighbour_from_the_chips_own_place():
    """Overlapping windows of one plot are near-twins: with places, k-NN must look in other plots."""
    twins = np.array([[0.0], [0.01], [5.0], [5.01], [10.0], [10.01]])  # pairs, each pair in one plot
    labels = np.array([0, 0, 1, 1, 0, 0])
    plots = np.array([0, 0, 1, 1, 2, 2])
    assert knn_scores(twins, labels, ks=(1,))[1]["accuracy"] == 1.0  # the twin answers
    by_place = knn_scores(twins, labels, ks=(1, 10), groups=plots)
    # nearest other-plot chip: 0 and 1 -> plot 1 (label 1, wrong); 2, 3 -> plot 0 (wrong); 4, 5 -> plot 1 (wrong)
    assert by_place[1]["accuracy"] == 0.0
    assert by_place[10]["k_used"] == 4  # each chip has 4 candidates outside its plot
    with pytest.raises(ValueError, match="two places"):
        knn_scores(twins, labels, ks=(1,), groups=np.zeros(6, int))


def test_evaluate_artifact_checks_bands_and_compares_inits(multisensor_root, tmp_path):
    from csf.knn import evaluate_artifact

    chips = load_chips({"kind": "multisensor", "root": str(multisensor_root)})
    mean, std = chips.band_stats()
    meta = EncoderMetadata("resnet18", 12, chips.band_names, mean, std, chips.sensors, [3, 4], 1)
    path = export_encoder(build_encoder("resnet18", 12), tmp_path / "e.safetensors", meta)
    data = {"kind": "multisensor", "root": str(multisensor_root)}
    result = evaluate_artifact(str(path), data, ks=(5,))
    assert set(result) == {"random", "csf"} and set(result["csf"]) == {"aerial", "smallsat", "landsat", "all"}
    with pytest.raises(DataError, match="same order"):
        evaluate_artifact(str(path), {**data, "sensors": ["landsat"]}, ks=(5,))


# -- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_step_uses_amp_and_channels_last_and_learns():
    from csf.train import CSFStep, PretrainConfig

    cfg = PretrainConfig.from_dict({"data": {"kind": "multisensor"}, "backbone": "resnet18", "crop": 48,
                                    "p_max": 0.3, "warmup_steps": 5, "ramp_steps": 0})
    device = torch.device("cuda")
    encoder = build_encoder("resnet18", 12).to(device).to(memory_format=torch.channels_last)
    step = CSFStep(encoder, cfg, device)
    assert step.amp_dtype in (torch.bfloat16, torch.float16)
    g = torch.Generator().manual_seed(0)
    batch = torch.randn(32, 12, 64, 64, generator=g)
    losses = [step(batch, i, g)["loss"] for i in range(40)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])  # the same 32 chips: views become matchable


IDTREES = Path(__file__).resolve().parents[2] / "shared/data/idtrees-multisensor"


def test_plot_folds_evaluate_every_chip_once_by_an_encoder_that_never_saw_its_plot(tmp_path):
    import json

    from bench.csf_real import plot_folds

    if not (IDTREES / "multisensor.json").exists():
        pytest.skip(f"{IDTREES} not present")
    every = json.loads((IDTREES / "multisensor.json").read_text())["chips"]
    evaluated = []
    for pretrain, evaluate in plot_folds(IDTREES, tmp_path, 3, seed=0):
        seen = json.loads((pretrain / "multisensor.json").read_text())["chips"]
        held = json.loads((evaluate / "multisensor.json").read_text())["chips"]
        assert not {c["plot"] for c in seen} & {c["plot"] for c in held}
        assert len(seen) + len(held) == len(every)
        assert len(load_chips({"kind": "multisensor", "root": str(evaluate)}).labels) == len(held)
        evaluated += [c["id"] for c in held]
    assert sorted(evaluated) == sorted(c["id"] for c in every)
    with pytest.raises(ValueError, match="--folds must be between 2"):
        plot_folds(IDTREES, tmp_path, 1, seed=0)


def test_pooled_folds_weigh_each_fold_by_its_chips_and_pair_random_seeds():
    from bench.csf_real import goals, pool_folds

    def job(chips, csf, randoms):
        scores = {"same_class": csf, "accuracy": csf}
        values = {"same_class": {"values": randoms}, "accuracy": {"values": randoms}}
        return {"chips": {"count": chips}, "csf": {"rgb": {"10": scores, "25": scores}},
                "random_spread": {"rgb": {"10": values, "25": values}}}

    # fold A: 100 chips, random seeds 0.50 / 0.60, CSF seeds 0.70 / 0.80; fold B: 300 chips, 0.40 / 0.30, 0.50 / 0.60
    a = [job(100, 0.70, [0.50, 0.60]), job(100, 0.80, [0.50, 0.60])]
    b = [job(300, 0.50, [0.40, 0.30]), job(300, 0.60, [0.40, 0.30])]
    knn = pool_folds([a, b])
    spread = knn["random_spread"]["rgb"]["10"]["accuracy"]
    assert spread["values"] == pytest.approx([0.425, 0.375])  # seed r of A pooled with seed r of B, by chips
    assert spread["spread"] == pytest.approx(0.05)
    assert knn["random"]["rgb"]["10"]["accuracy"] == pytest.approx(0.425)
    assert knn["csf"]["rgb"]["10"]["accuracy"] == pytest.approx(0.60)  # pooled seeds 0.55 and 0.65
    assert knn["csf_spread"]["rgb"]["10"]["accuracy"] == pytest.approx(0.10)
    row = goals(knn)[0]["rgb/k10/accuracy"]
    assert row["gain"] == pytest.approx(0.20) and row["random_spread"] == pytest.approx(0.05) and row["met"]
    assert pool_folds([a])["csf"]["rgb"]["10"]["accuracy"] == pytest.approx(0.75)  # one split: the seeds' mean
