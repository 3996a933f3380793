"""Creating timm models by name, with optional local weights (ml/models.py, ml/cifar_models.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from ml.models import ModelError, classifier_of, create_model, data_config


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize(
    "name", ["cifar_convnet_s", "cifar_convnet_m", "cifar_resnet8", "cifar_resnet20"]
)
def test_cifar_models_are_timm_models(name: str) -> None:
    model = timm.create_model(name, num_classes=7)

    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert isinstance(model.get_classifier(), nn.Linear)
    assert name in timm.list_models("cifar_*")


def test_any_timm_architecture_by_name() -> None:
    model = create_model("resnet18", num_classes=3)

    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    assert data_config(model)["mean"] == pytest.approx((0.485, 0.456, 0.406))


def test_weights_file_is_loaded(tmp_path: Path) -> None:
    source = create_model("cifar_resnet8", num_classes=10)
    save_file(
        {k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "w.safetensors"
    )

    loaded = create_model("cifar_resnet8", num_classes=10, weights_file=tmp_path / "w.safetensors")

    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_weights_file_for_another_class_count_keeps_the_backbone(tmp_path: Path) -> None:
    source = create_model("cifar_resnet8", num_classes=10)
    save_file(
        {k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "w.safetensors"
    )

    loaded = create_model("cifar_resnet8", num_classes=4, weights_file=tmp_path / "w.safetensors")

    assert loaded.get_classifier().out_features == 4
    assert torch.equal(loaded.stem[0].weight, source.stem[0].weight)


def test_missing_weights_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        create_model("cifar_resnet8", num_classes=2, weights_file=tmp_path / "none.safetensors")


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(ModelError, match="resnet50"):
        create_model("resnet5O", num_classes=2)


def test_classifier_of_needs_a_linear_head_with_bias() -> None:
    model = create_model("cifar_resnet8", num_classes=3)
    assert classifier_of(model) is model.get_classifier()

    model.reset_classifier(0)
    with pytest.raises(ModelError, match="not a linear layer"):
        classifier_of(model)
