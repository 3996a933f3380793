"""The training loop: determinism, resume, stop signal, recipe features (ml/train.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from ml.checkpoint import CheckpointError, load_trained_model
from ml.predict import predict, predict_logits
from ml.recipes import Recipe
from ml.train import train_model
from ml.training.interface import (
    Control,
    EvalSet,
    TrainingError,
    TrainingProgress,
    TrainResult,
)
from tests.ml.factories import balanced_labels, colour_images, tiny_recipe

Data = tuple[NDArray[np.uint8], NDArray[np.int64]]


@pytest.fixture
def data() -> Data:
    labels = balanced_labels(96, 3, seed=0)
    return colour_images(labels, size=16, seed=0), labels


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _stop_after(epoch: int, step: int | None = None) -> Any:
    """A callback that stops after ``step`` steps of ``epoch`` (at its end when ``None``)."""

    def callback(progress: TrainingProgress) -> Control | None:
        if progress.epoch != epoch:
            return None
        if step is None and progress.epoch_end is not None:
            return Control.STOP
        if step is not None and progress.step == step and progress.epoch_end is None:
            return Control.STOP
        return None

    return callback


def _stopped_then_resumed(
    recipe: Recipe, data: Data, run_dir: Path, stop: Any
) -> tuple[TrainResult, TrainResult]:
    """A run that ``stop`` stops, checkpointing into ``run_dir``, and the run resumed from there."""
    images, labels = data
    first = train_model(
        recipe, images, labels, num_classes=3, device="cpu", checkpoint_dir=run_dir, callback=stop
    )
    resumed = train_model(
        recipe, images, labels, num_classes=3, device="cpu", checkpoint_dir=run_dir
    )
    return first, resumed


def test_cpu_training_is_deterministic_under_a_seed(data: Data) -> None:
    images, labels = data
    recipe = tiny_recipe(augment={"hflip": {"p": 0.5}, "mixup": {"alpha": 0.4, "p": 0.5}})

    first = train_model(recipe, images, labels, num_classes=3, device="cpu")
    second = train_model(recipe, images, labels, num_classes=3, device="cpu")
    other_seed = train_model(
        recipe.model_copy(update={"seed": 1}), images, labels, num_classes=3, device="cpu"
    )

    _assert_same_weights(_weights(first.trained.model), _weights(second.trained.model))
    assert not torch.equal(
        first.trained.model.get_classifier().weight,
        other_seed.trained.model.get_classifier().weight,
    )


def test_resume_after_an_epoch_matches_an_uninterrupted_run(data: Data, tmp_path: Path) -> None:
    images, labels = data
    recipe = tiny_recipe(
        ema={"decay": 0.9},
        model={
            "name": "cifar_convnet_s",
            "drop_rate": 0.2,
            "kwargs": {"widths": [8, 16, 16], "stem_width": 8},
        },
    )
    straight = train_model(recipe, images, labels, num_classes=3, device="cpu")

    first, resumed = _stopped_then_resumed(recipe, data, tmp_path / "run", _stop_after(epoch=0))

    assert first.stopped and len(first.history) == 1
    assert not resumed.stopped and len(resumed.history) == 2
    _assert_same_weights(_weights(straight.trained.model), _weights(resumed.trained.model))


def test_resume_mid_epoch_matches_an_uninterrupted_run(data: Data, tmp_path: Path) -> None:
    images, labels = data
    recipe = tiny_recipe(optimizer={"name": "adamw", "lr": 0.01})
    straight = train_model(recipe, images, labels, num_classes=3, device="cpu")

    first, resumed = _stopped_then_resumed(
        recipe, data, tmp_path / "run", _stop_after(epoch=1, step=2)
    )

    assert first.stopped and first.checkpoint is not None
    assert first.checkpoint.name == f"step-{6 + 2:09d}"
    _assert_same_weights(_weights(straight.trained.model), _weights(resumed.trained.model))


def test_resuming_with_another_recipe_is_refused(data: Data, tmp_path: Path) -> None:
    images, labels = data
    train_model(
        tiny_recipe(epochs=1), images, labels, num_classes=3, device="cpu", checkpoint_dir=tmp_path
    )

    with pytest.raises(TrainingError, match="another recipe"):
        train_model(
            tiny_recipe(epochs=1, seed=9),
            images,
            labels,
            num_classes=3,
            device="cpu",
            checkpoint_dir=tmp_path,
        )


def test_resuming_on_other_labels_is_refused(data: Data, tmp_path: Path) -> None:
    images, labels = data
    train_model(
        tiny_recipe(epochs=1), images, labels, num_classes=3, device="cpu", checkpoint_dir=tmp_path
    )

    with pytest.raises(TrainingError, match="another training set"):
        train_model(
            tiny_recipe(epochs=1),
            images,
            (labels + 1) % 3,
            num_classes=3,
            device="cpu",
            checkpoint_dir=tmp_path,
        )


def test_progress_is_reported_every_step_with_epoch_metrics_at_the_end(data: Data) -> None:
    images, labels = data
    reports: list[TrainingProgress] = []

    result = train_model(
        tiny_recipe(), images, labels, num_classes=3, device="cpu", callback=reports.append
    )

    assert len(reports) == 2 * 6
    assert [r.global_step for r in reports] == list(range(1, 13))
    ends = [r.epoch_end for r in reports if r.epoch_end is not None]
    assert ends == result.history
    assert all(r.images_per_second > 0 and np.isfinite(r.loss) for r in reports)


def test_min_steps_adds_epochs_to_a_small_training_set(data: Data) -> None:
    images, labels = data  # 96 images, batch 16: 6 steps an epoch
    reports: list[TrainingProgress] = []

    result = train_model(
        tiny_recipe(epochs=1, min_steps=15),
        images,
        labels,
        num_classes=3,
        indices=np.arange(32),  # 2 steps an epoch: 8 epochs reach 15 steps
        device="cpu",
        callback=reports.append,
    )

    assert len(result.history) == 8
    assert reports[-1].global_step == reports[-1].total_steps == 16
    assert tiny_recipe(epochs=5, min_steps=15).epochs_for(6) == 5  # already enough


def test_checkpoint_holds_weights_config_and_recipe(data: Data, tmp_path: Path) -> None:
    images, labels = data
    result = train_model(
        tiny_recipe(),
        images,
        labels,
        num_classes=3,
        class_names=["a", "b", "c"],
        device="cpu",
        checkpoint_dir=tmp_path,
    )
    assert result.checkpoint is not None

    files = sorted(p.name for p in result.checkpoint.iterdir())
    config = json.loads((result.checkpoint / "model_config.json").read_text())
    loaded = load_trained_model(tmp_path)

    assert files == [
        "model.safetensors",
        "model_config.json",
        "recipe.yaml",
        "train_state.json",
        "train_state.safetensors",
    ]
    assert config["architecture"] == "cifar_convnet_s"
    assert config["class_names"] == ["a", "b", "c"]
    assert torch.equal(predict_logits(loaded, images), predict_logits(result.trained, images))
    assert [p.name for p in tmp_path.iterdir()] == [result.checkpoint.name]


def test_training_learns_a_separable_task(data: Data) -> None:
    images, labels = data
    held_out = balanced_labels(60, 3, seed=1)

    result = train_model(
        tiny_recipe(epochs=4),
        images,
        labels,
        num_classes=3,
        device="cpu",
        val=EvalSet(colour_images(held_out, size=16, seed=1), held_out),
    )

    last = result.history[-1]
    assert last.val is not None and last.val.top1 >= 0.9
    assert result.history[0].train_loss > last.train_loss


def test_frozen_log_prior_bias_stays_and_is_removed_at_inference(data: Data) -> None:
    images, labels = data
    imbalanced = np.concatenate(
        [
            np.flatnonzero(labels == 0),
            np.flatnonzero(labels == 1)[:8],
            np.flatnonzero(labels == 2)[:4],
        ]
    )
    recipe = tiny_recipe(logit_adjustment={"mode": "frozen_bias"})

    result = train_model(recipe, images, labels, num_classes=3, indices=imbalanced, device="cpu")

    prior = torch.log(torch.tensor([32.0, 8.0, 4.0]) / 44)
    bias = result.trained.model.get_classifier().bias
    assert torch.allclose(bias, prior)
    assert not bias.requires_grad
    assert result.trained.adjustment == "remove_prior"
    raw = result.trained.model(torch.zeros(1, 3, 16, 16))
    assert torch.allclose(result.trained.adjust_logits(raw), raw - prior)


def test_balanced_sampling_sets_the_prior_to_the_sampled_distribution(data: Data) -> None:
    images, labels = data
    imbalanced = np.concatenate([np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)[:3]])
    recipe = tiny_recipe(balance={"min_fraction": 0.5}, logit_adjustment={"mode": "loss"})

    result = train_model(recipe, images, labels, num_classes=3, indices=imbalanced, device="cpu")

    # Class 0: 32 draws; class 1: ceil(0.5 * 32) = 16; class 2: no sample (tiny pseudo-count).
    assert result.trained.log_prior is not None
    probs = result.trained.log_prior.exp()
    assert probs[0] / probs[1] == pytest.approx(2.0, rel=1e-4)
    assert probs[2] < 1e-4
    assert result.trained.adjustment == "none"


@pytest.mark.parametrize(
    "overrides",
    [
        {"logit_adjustment": {"mode": "posthoc", "tau": 0.5}},
        {"flooding": 0.3},
        {"label_smoothing": 0.1, "ema": {"decay": 0.99}},
        {"augment": {"cutmix": {"alpha": 1.0, "p": 1.0}, "rotate4": {"p": 0.5}}},
        {"optimizer": {"name": "adamw", "lr": 0.003, "grad_clip_norm": 1.0}},
        {"schedule": {"warmup_epochs": 1, "min_lr_ratio": 0.1}, "tta_flip": True},
        {"test_image_size": 24},
    ],
    ids=["posthoc", "flooding", "smoothing-ema", "cutmix", "adamw-clip", "warmup-tta", "test-size"],
)
def test_recipe_features_train_and_predict(data: Data, overrides: dict[str, Any]) -> None:
    images, labels = data

    result = train_model(
        tiny_recipe(epochs=1, **overrides), images, labels, num_classes=3, device="cpu"
    )
    predictions = predict(result.trained, images[:10], labels=labels[:10], top_k=2)

    assert np.isfinite(result.history[0].train_loss)
    assert predictions.topk_ids.shape == (10, 2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weights_file": "/etc/passwd"},
        {"pretrained": True},
        {"pretrained_cfg_overlay": {"file": "/elsewhere.pth"}},
        {"drop_rate": {"nested": 1}},
        [],
    ],
)
def test_a_checkpoint_config_cannot_point_the_model_at_other_weights(
    data: Data, tmp_path: Path, kwargs: Any
) -> None:
    images, labels = data
    result = train_model(
        tiny_recipe(epochs=1), images, labels, num_classes=3, device="cpu", checkpoint_dir=tmp_path
    )
    assert result.checkpoint is not None
    config_file = result.checkpoint / "model_config.json"
    config = json.loads(config_file.read_text())
    load_trained_model(tmp_path)  # as written, it loads
    config_file.write_text(json.dumps({**config, "model_kwargs": kwargs}))

    with pytest.raises(CheckpointError, match="model_kwargs"):
        load_trained_model(tmp_path)


def test_distillation_from_teacher_checkpoints(data: Data, tmp_path: Path) -> None:
    images, labels = data
    for seed in (1, 2):
        train_model(
            tiny_recipe(epochs=1, seed=seed),
            images,
            labels,
            num_classes=3,
            device="cpu",
            checkpoint_dir=tmp_path / f"teacher-{seed}",
        )
    recipe = tiny_recipe(
        epochs=1,
        distillation={
            "teachers": [str(tmp_path / "teacher-1"), str(tmp_path / "teacher-2")],
            "weight": 0.5,
            "temperature": 2.0,
        },
    )

    result = train_model(recipe, images, labels, num_classes=3, device="cpu")

    assert np.isfinite(result.history[0].train_loss)


def test_too_few_samples_is_a_clear_error(data: Data) -> None:
    images, labels = data

    with pytest.raises(TrainingError, match="at least 2 training samples"):
        train_model(tiny_recipe(), images, labels, num_classes=3, indices=[0], device="cpu")
