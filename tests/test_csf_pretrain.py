"""A tiny CSF pretraining job on the real local Ray cluster: 2 workers, checkpoints, resume, export."""

from __future__ import annotations

import pytest
import timm
import torch

from csf.encoder import load_csf_backbone
from csf.multisensor import write_multisensor_dataset
from csf.train import run_pretraining
from search_spaces.errors import SpecError


@pytest.fixture(scope="module")
def chips_root(tmp_path_factory):
    return write_multisensor_dataset(tmp_path_factory.mktemp("ms"), n_chips=16, size=32, seed=1)


def _spec(root, steps: int) -> dict:
    return {
        "name": "csf-tiny", "num_workers": 2, "use_gpu": False,
        "data": {"kind": "multisensor", "root": str(root)},
        "backbone": "resnet18", "steps": steps, "batch_size": 4, "crop": 24,
        "warmup_steps": 2, "ramp_steps": 3, "checkpoint_every": 2, "ema": 0.9,
    }


@pytest.mark.slow
def test_pretrain_two_workers_exports_a_strict_backbone_and_resumes(ray_cluster, chips_root, tmp_path):
    seen: list[dict] = []
    first = run_pretraining(_spec(chips_root, 4), str(tmp_path), progress=seen.append)
    assert [m["step"] for m in seen] == [1, 2, 3, 4]
    assert first["steps"] == 4 and first["num_workers"] == 2
    assert all(m["loss"] > 0 for m in first["loss_curve"])

    name, state, meta = load_csf_backbone(first["artifact"])
    assert meta["in_chans"] == 12 and meta["band_names"][0] == "aerial_blue" and meta["steps"] == 4
    backbone = timm.create_model(name, features_only=True, in_chans=meta["in_chans"], pretrained=False)
    backbone.load_state_dict(state, strict=True)
    assert backbone.eval()(torch.zeros(1, 12, 32, 32))[-1].shape[1] == 512

    # Same name, more steps: continues from the step-4 checkpoint instead of starting over.
    seen.clear()
    second = run_pretraining(_spec(chips_root, 6), str(tmp_path), progress=seen.append)
    assert [m["step"] for m in seen] == [5, 6]
    assert [h["loss"] for h in second["loss_curve"][:4]] == [h["loss"] for h in first["loss_curve"]]
    _, state2, meta2 = load_csf_backbone(second["artifact"])
    assert meta2["steps"] == 6
    assert not torch.equal(state2["conv1.weight"], state["conv1.weight"])


def test_bad_spec_fails_before_anything_runs(tmp_path):
    with pytest.raises(SpecError, match="valid"):
        run_pretraining({"data": {"kind": "multisensor", "root": "x"}, "stpes": 3}, str(tmp_path))
    with pytest.raises(SpecError, match="negatives"):
        run_pretraining({"data": {"kind": "multisensor", "root": "x"}, "batch_size": 1}, str(tmp_path))
