"""The architecture language: every sampled spec builds and runs; hashes are canonical and stable."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from search_spaces.builder import build_model
from search_spaces.errors import SpecError
from search_spaces.nasfpn import ArchSpec, Cell, NasFpnSpace, SearchSpaceConfig
from search_spaces.ops import list_ops

torch.set_num_threads(1)
BACKBONE = "mobilenetv3_small_050"
ALL_OPS = tuple(list_ops())


def _space(**kw) -> NasFpnSpace:
    base = dict(backbones=(BACKBONE,), num_cells=(2, 3, 5), channels=(8, 16), ops=ALL_OPS)
    base.update(kw)
    return NasFpnSpace(SearchSpaceConfig(**base))


@pytest.mark.parametrize("bands", [3, 4, 13])
def test_every_sampled_spec_builds_and_runs(bands):
    space = _space()
    rng = np.random.default_rng(bands)
    for _ in range(4):
        arch = space.sample(rng)
        model = build_model(arch, in_chans=bands, num_classes=3).eval()
        with torch.inference_mode():
            out = model(torch.randn(2, bands, 32, 32))
        assert out.shape == (2, 3, 32, 32)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("op", ALL_OPS)
def test_every_op_builds_across_levels(op):
    levels = (2, 3, 4, 5)
    # one cell per (input level pair, output level) combination, chained through the pool
    for out_level in levels:
        cells = [Cell(a, b, out_level, op) for a, b in itertools.combinations(range(4), 2)]
        arch = ArchSpec(BACKBONE, levels, 8, tuple(cells))
        model = build_model(arch, 4, 2).eval()
        with torch.inference_mode():
            assert model(torch.randn(1, 4, 64, 64)).shape == (1, 2, 64, 64)


def test_encode_decode_round_trip():
    space = _space()
    rng = np.random.default_rng(0)
    for _ in range(200):
        arch = space.sample(rng)
        assert space.decode(space.encode(arch)) == arch


def test_canonical_form_collapses_swapped_inputs():
    a = ArchSpec(BACKBONE, (2, 3, 4, 5), 16, (Cell(0, 3, 3, "sum"), Cell(4, 1, 2, "global_attention")))
    b = ArchSpec(BACKBONE, (2, 3, 4, 5), 16, (Cell(3, 0, 3, "sum"), Cell(1, 4, 2, "global_attention")))
    c = ArchSpec(BACKBONE, (2, 3, 4, 5), 16, (Cell(0, 3, 3, "max"), Cell(1, 4, 2, "global_attention")))
    assert a != b and a.hash == b.hash
    assert a.hash != c.hash


def test_global_attention_is_symmetric_in_its_inputs():
    torch.manual_seed(0)
    a = ArchSpec(BACKBONE, (2, 3, 4, 5), 8, (Cell(0, 3, 3, "global_attention"),))
    b = ArchSpec(BACKBONE, (2, 3, 4, 5), 8, (Cell(3, 0, 3, "global_attention"),))
    ma = build_model(a, 4, 2).eval()
    mb = build_model(b, 4, 2).eval()
    mb.load_state_dict(ma.state_dict())
    x = torch.randn(1, 4, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(ma(x), mb(x))


def test_hash_is_stable_across_processes():
    arch = ArchSpec(BACKBONE, (2, 3, 4, 5), 16, (Cell(0, 3, 3, "sum"), Cell(4, 1, 2, "global_attention")))
    code = (
        "import json,sys; from search_spaces.nasfpn import ArchSpec;"
        "print(ArchSpec.from_dict(json.loads(sys.argv[1])).hash)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(arch.to_dict())], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == arch.hash


def test_masks_keep_inputs_inside_the_pool():
    space = _space(num_cells=(3,))
    rng = np.random.default_rng(1)
    for _ in range(100):
        arch = space.sample(rng)
        for i, cell in enumerate(arch.cells):
            assert cell.a < 4 + i and cell.b < 4 + i and cell.a != cell.b


def test_allows_agrees_with_the_mask_and_decode_refuses_what_it_does_not_allow():
    space = _space()
    rng = np.random.default_rng(3)
    for _ in range(30):
        tokens = list(space.encode(space.sample(rng)))
        for position, size in enumerate(space.sizes):
            mask = space.mask(position, tokens[:position])
            assert [space.allows(position, tokens, t) for t in range(-1, size + 1)] == [False, *mask, False]
    tokens = list(space.encode(space.sample(rng)))
    tokens[4] = tokens[3]  # the second input of the first cell equals its first
    with pytest.raises(SpecError, match="not allowed at position 4"):
        space.decode(tokens)


@pytest.mark.parametrize(
    "bad, field",
    [
        (lambda: ArchSpec(BACKBONE, (2, 3), 8, (Cell(0, 5, 2, "sum"),)), "cells"),
        (lambda: ArchSpec(BACKBONE, (2, 3), 8, (Cell(0, 0, 2, "sum"),)), "cells"),
        (lambda: ArchSpec(BACKBONE, (2, 3), 8, (Cell(0, 1, 4, "sum"),)), "cells"),
        (lambda: ArchSpec(BACKBONE, (2, 3), 8, (Cell(0, 1, 2, "nope"),)), "cells"),
        (lambda: SearchSpaceConfig(ops=("sum", "conv9")), "ops"),
    ],
)
def test_invalid_specs_name_the_problem(bad, field):
    with pytest.raises(SpecError) as info:
        bad()
    assert info.value.field == field


def test_missing_backbone_level_is_a_clear_error():
    arch = ArchSpec(BACKBONE, (2, 3, 4, 5, 6), 8, (Cell(0, 1, 2, "sum"),))
    with pytest.raises(SpecError, match="offers levels"):
        build_model(arch, 4, 2)
