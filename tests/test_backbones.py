"""The backbone names the API checks against, without importing timm, are the installed timm's."""

from __future__ import annotations

import pytest

from search_spaces.backbones import NAMES_FILE, check_backbone_name, known_backbones
from search_spaces.errors import SpecError


def test_the_name_list_is_the_installed_timms():
    import timm

    header = NAMES_FILE.read_text().splitlines()[0]
    assert header == f"# timm {timm.__version__}", "run `python -m search_spaces.backbones` after a timm upgrade"
    assert known_backbones() == frozenset(timm.list_models())


def test_known_names_pass_with_or_without_a_pretrained_tag():
    assert check_backbone_name("mobilenetv3_small_050") == "mobilenetv3_small_050"
    assert check_backbone_name("resnet18.a1_in1k") == "resnet18.a1_in1k"


def test_a_typo_is_refused_with_the_closest_names():
    with pytest.raises(SpecError, match="did you mean resnet18") as refused:
        check_backbone_name("resnet1888")
    assert refused.value.field == "backbone"
