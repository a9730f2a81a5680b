"""Hand-built baselines from segmentation-models-pytorch on the same timm backbone (``tu-<name>``)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .errors import SpecError

__all__ = ["register_baseline", "create_baseline", "list_baselines"]

BaselineFactory = Callable[[str, int, int], nn.Module]
_BASELINES: dict[str, BaselineFactory] = {}


def register_baseline(name: str) -> Callable[[BaselineFactory], BaselineFactory]:
    def decorator(factory: BaselineFactory) -> BaselineFactory:
        _BASELINES[name] = factory
        return factory

    return decorator


def list_baselines() -> list[str]:
    return sorted(_BASELINES)


def create_baseline(name: str, backbone: str, in_chans: int, num_classes: int) -> nn.Module:
    try:
        factory = _BASELINES[name]
    except KeyError:
        raise SpecError(
            f"unknown baseline {name!r}; valid baselines: {', '.join(list_baselines())}", field="baselines"
        ) from None
    return factory(backbone, in_chans, num_classes)


def _smp(cls_name: str) -> BaselineFactory:
    def factory(backbone: str, in_chans: int, num_classes: int) -> nn.Module:
        import segmentation_models_pytorch as smp

        cls = getattr(smp, cls_name)
        return cls(
            encoder_name=f"tu-{backbone}", encoder_weights=None, in_channels=in_chans, classes=num_classes
        )

    return factory


register_baseline("unet")(_smp("Unet"))
register_baseline("fpn")(_smp("FPN"))
