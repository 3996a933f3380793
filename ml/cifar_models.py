"""Small networks for 32×32 images, registered in timm's model registry.

They make CPU tests and benchmarks feasible and are created like any timm model:
``timm.create_model("cifar_convnet_s", num_classes=10)`` once this module is imported
(:func:`ml.models.create_model` imports it). None has pretrained weights.

* ``cifar_convnet_s`` / ``cifar_convnet_m``: a conv stem and three stages of
  conv → 2×2 max-pool → BN → GELU → conv → BN → GELU, global max pool, linear head. The fastest
  to train per point of accuracy on a CPU (``_s``: 85k parameters).
* ``cifar_resnet8`` / ``cifar_resnet20``: the CIFAR ResNets of He et al. (2016), three stages of
  basic blocks at 16/32/64 channels, 1×1 projection shortcuts.

All follow timm's classifier interface: ``forward_features`` → ``[B, F, h, w]``,
``forward_head`` → logits ``[B, C]``, ``get_classifier()`` (an ``nn.Linear``),
``reset_classifier(num_classes)``, ``num_features``, ``pretrained_cfg``.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

__all__ = [
    "CifarConvNet",
    "CifarResNet",
    "cifar_convnet_m",
    "cifar_convnet_s",
    "cifar_resnet8",
    "cifar_resnet20",
]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _cfg(**overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": (4, 4),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR_MEAN,
        "std": CIFAR_STD,
        "first_conv": "stem.0",
        "classifier": "fc",
    }
    cfg.update(overrides)
    return cfg


default_cfgs = generate_default_cfgs(
    {
        "cifar_convnet_s": _cfg(),
        "cifar_convnet_m": _cfg(),
        "cifar_resnet8": _cfg(pool_size=(8, 8)),
        "cifar_resnet20": _cfg(pool_size=(8, 8)),
    }
)


class _Classifier(nn.Module):
    """The shared head: global pooling, dropout, linear."""

    num_classes: int
    num_features: int
    fc: nn.Module

    def _init_head(self, num_features: int, num_classes: int, drop_rate: float, pool: str) -> None:
        if pool not in {"avg", "max"}:
            raise ValueError(f"global_pool must be 'avg' or 'max', got {pool!r}")
        self.num_features = num_features
        self.num_classes = num_classes
        self.global_pool = pool
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """``[B, F, h, w]`` features → logits ``[B, C]`` (or pooled ``[B, F]``)."""
        pooled = x.amax(dim=(2, 3)) if self.global_pool == "max" else x.mean(dim=(2, 3))
        dropped: Tensor = self.drop(pooled)
        if pre_logits:
            return dropped
        logits: Tensor = self.fc(dropped)
        return logits

    def forward(self, x: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` (normalised) → logits ``[B, C]``."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]


class CifarConvNet(_Classifier):
    """Conv stem and three conv/pool stages; see the module docstring.

    Args:
        widths: channels of the three stages.
        stem_width: channels of the stem convolution.
        num_classes: ``C``; 0 for a features-only model.
        drop_rate: dropout before the classifier.
        global_pool: ``"max"`` or ``"avg"``.
    """

    def __init__(
        self,
        widths: tuple[int, int, int] = (24, 48, 48),
        stem_width: int = 24,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "max",
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_chans, stem_width), nn.GELU())
        stages: list[nn.Module] = []
        cin = stem_width
        for width in widths:
            stages.append(
                nn.Sequential(
                    nn.Conv2d(cin, width, 3, 1, 1, bias=False),
                    nn.MaxPool2d(2),
                    nn.BatchNorm2d(width),
                    nn.GELU(),
                    *_conv_bn(width, width),
                    nn.GELU(),
                )
            )
            cin = width
        self.stages = nn.Sequential(*stages)
        self._init_head(cin, num_classes, drop_rate, global_pool)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` → ``[B, F, H/8, W/8]``."""
        out: Tensor = self.stages(self.stem(x))
        return out


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(_Classifier):
    """ResNet-(6n+2) for 32×32 inputs, stages at 16/32/64 channels (times ``width``).

    Args:
        blocks: basic blocks per stage (``n``: 1 for ResNet-8, 3 for ResNet-20).
        width: channel multiplier.
        num_classes, drop_rate, global_pool: as in :class:`CifarConvNet` (pool default avg).
    """

    def __init__(
        self,
        blocks: int = 3,
        width: int = 1,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        widths = [16 * width, 32 * width, 64 * width]
        self.stem = nn.Sequential(*_conv_bn(in_chans, widths[0]), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        cin = widths[0]
        for stage, cout in enumerate(widths):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(_BasicBlock(cin, cout, stride))
                cin = cout
        self.stages = nn.Sequential(*layers)
        self._init_head(cin, num_classes, drop_rate, global_pool)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` → ``[B, F, H/4, W/4]``."""
        out: Tensor = self.stages(self.stem(x))
        return out


def _create(cls: type[nn.Module], variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    model: nn.Module = build_model_with_cfg(cls, variant, pretrained, **kwargs)
    return model


@register_model
def cifar_convnet_s(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Conv/pool net, stages 24/48/48, 85k parameters."""
    args: dict[str, Any] = {"widths": (24, 48, 48), "stem_width": 24}
    return _create(CifarConvNet, "cifar_convnet_s", pretrained, **{**args, **kwargs})


@register_model
def cifar_convnet_m(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Conv/pool net, stages 64/128/128, 0.57M parameters."""
    args: dict[str, Any] = {"widths": (64, 128, 128), "stem_width": 32}
    return _create(CifarConvNet, "cifar_convnet_m", pretrained, **{**args, **kwargs})


@register_model
def cifar_resnet8(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-8 for 32×32 inputs, 78k parameters."""
    return _create(CifarResNet, "cifar_resnet8", pretrained, **{"blocks": 1, **kwargs})


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-20 for 32×32 inputs, 0.27M parameters."""
    return _create(CifarResNet, "cifar_resnet20", pretrained, **{"blocks": 3, **kwargs})
