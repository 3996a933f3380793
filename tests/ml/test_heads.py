"""Heads on cached embeddings (ml/heads.py, ml/head_training.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ml.core.recipes import RecipeError
from ml.embeddings import EmbeddingArray
from ml.heads import HeadTargets, TrainedHead, load_model
from ml.predict import predict
from ml.train import train_model
from ml.training.interface import Control, TrainingError, TrainingProgress
from tests.ml.factories import balanced_labels, cluster_features, head_recipe, synthetic_space

KINDS = ["linear", "mlp", "cosine"]
INGREDIENTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "balanced sampler": {"balance.min_fraction": 1.0},
    "frozen log-prior bias": {"logit_adjustment.mode": "frozen_bias"},
    "logit-adjusted loss": {"logit_adjustment.mode": "loss"},
    "post-hoc adjustment": {"logit_adjustment.mode": "posthoc"},
    "label smoothing": {"label_smoothing": 0.1},
    "mixup": {"augment.mixup.alpha": 0.4, "augment.mixup.p": 1.0},
    "flooding": {"flooding": 0.05},
    "ema": {"ema.decay": 0.9},
}


def _accuracy(trained: Any, features: EmbeddingArray, labels: np.ndarray) -> float:
    predicted = predict(trained, features, top_k=1)
    return float((predicted.topk_ids[:, 0] == labels).mean())


@pytest.fixture(scope="module")
def data() -> tuple[EmbeddingArray, np.ndarray]:
    labels = balanced_labels(240, 4, seed=1)
    return cluster_features(labels, seed=1), labels


@pytest.mark.parametrize("ingredient", list(INGREDIENTS))
@pytest.mark.parametrize("kind", KINDS)
def test_every_head_trains_with_every_ingredient(
    kind: str, ingredient: str, data: tuple[EmbeddingArray, np.ndarray]
) -> None:
    features, labels = data
    overrides = {"head.kind": kind, **INGREDIENTS[ingredient]}
    train, test = np.arange(160), np.arange(160, 240)

    result = train_model(head_recipe(**overrides), features, labels, num_classes=4, indices=train)

    assert isinstance(result.trained, TrainedHead)
    assert len(result.history) == 15
    assert _accuracy(result.trained, features[test], labels[test]) > 0.9


def test_frozen_bias_holds_the_log_prior_and_is_removed_at_inference(
    data: tuple[EmbeddingArray, np.ndarray],
) -> None:
    features, labels = data
    rows = np.concatenate([np.flatnonzero(labels == 0), np.flatnonzero(labels > 0)[:60]])

    result = train_model(
        head_recipe(**{"logit_adjustment.mode": "frozen_bias"}),
        features,
        labels,
        num_classes=4,
        indices=rows,
    )

    trained = result.trained
    assert isinstance(trained, TrainedHead) and trained.log_prior is not None
    counts = np.bincount(labels[rows], minlength=4)
    expected = torch.log(torch.tensor(counts / counts.sum(), dtype=torch.float32))
    torch.testing.assert_close(trained.model.classifier.bias.detach(), expected)
    assert trained.adjustment == "remove_prior"


def test_logit_adjustment_lifts_balanced_accuracy_on_a_long_tail() -> None:
    labels = np.repeat(np.arange(4), [600, 100, 15, 4])
    test_labels = np.repeat(np.arange(4), 100)
    # One draw, so that both sets share the class centres.
    combined = cluster_features(np.concatenate([labels, test_labels]), spread=2.0, seed=3)
    features, test_features = combined[: labels.size], combined[labels.size :]

    def balanced_accuracy(overrides: dict[str, Any]) -> float:
        recipe = head_recipe(epochs=30, **overrides)
        trained = train_model(recipe, features, labels, num_classes=4).trained
        hits = predict(trained, test_features, top_k=1).topk_ids[:, 0] == test_labels
        return float(np.mean([hits[test_labels == c].mean() for c in range(4)]))

    plain = balanced_accuracy({})
    adjusted = balanced_accuracy({"logit_adjustment.mode": "loss"})

    assert adjusted > plain + 0.1


def test_distillation_from_a_teacher_head(
    tmp_path: Path, data: tuple[EmbeddingArray, np.ndarray]
) -> None:
    """A student that learns only from the teacher (weight 1) on scrambled labels still
    predicts the true classes."""
    features, labels = data
    teacher = train_model(
        head_recipe(), features, labels, num_classes=4, checkpoint_dir=tmp_path / "teacher"
    )
    scrambled = np.random.default_rng(0).permutation(labels)
    assert teacher.checkpoint is not None

    student = train_model(
        head_recipe(
            **{"distillation.teachers": [str(teacher.checkpoint)], "distillation.weight": 1.0}
        ),
        features,
        scrambled,
        num_classes=4,
    )

    assert _accuracy(student.trained, features, labels) > 0.9


def test_a_distilled_head_learns_the_teachers_own_probabilities(tmp_path: Path) -> None:
    """The teacher sees the features it was trained on: a student that learns only from it
    ends up with the teacher's probabilities, not those of a teacher fed features normalised a
    second time (which a common offset, as real embeddings have, makes far off)."""
    labels = balanced_labels(240, 4, seed=1)
    features = cluster_features(labels, seed=1, spread=2.0)  # overlapping: soft probabilities
    teacher = train_model(
        head_recipe(), features, labels, num_classes=4, checkpoint_dir=tmp_path / "teacher"
    )
    assert teacher.checkpoint is not None
    distil = {
        "distillation.teachers": [str(teacher.checkpoint)],
        "distillation.weight": 1.0,
        "distillation.temperature": 1.0,
        "epochs": 40,
    }
    scrambled = np.random.default_rng(0).permutation(labels)

    student = train_model(head_recipe(**distil), features, scrambled, num_classes=4)

    taught = predict(teacher.trained, features, top_k=4, return_probs=True).probs
    learned = predict(student.trained, features, top_k=4, return_probs=True).probs
    assert taught is not None and learned is not None
    # Total variation per sample, on average: 0.005 here, 0.18 with doubly normalised features.
    assert np.abs(taught - learned).sum(axis=1).mean() < 0.05


def test_rows_without_a_label_learn_only_their_soft_target(
    data: tuple[EmbeddingArray, np.ndarray],
) -> None:
    features, labels = data
    unlabelled = labels.copy()
    unlabelled[:120] = -1
    soft = np.eye(4, dtype=np.float32)[labels]

    with_soft = train_model(
        head_recipe(),
        features,
        unlabelled,
        num_classes=4,
        targets=HeadTargets(soft=soft, weights=np.full(240, 0.5)),
    )
    with pytest.raises(TrainingError, match="soft targets"):
        train_model(head_recipe(), features, unlabelled, num_classes=4)

    assert _accuracy(with_soft.trained, features, labels) > 0.9


def test_a_saved_head_loads_and_predicts_the_same(
    tmp_path: Path, data: tuple[EmbeddingArray, np.ndarray]
) -> None:
    features, labels = data
    result = train_model(
        head_recipe(**{"head.kind": "mlp", "logit_adjustment.mode": "posthoc"}),
        features,
        labels,
        num_classes=4,
        class_names=["a", "b", "c", "d"],
        checkpoint_dir=tmp_path / "run",
    )

    loaded = load_model(tmp_path / "run")

    assert isinstance(loaded, TrainedHead)
    assert loaded.class_names == ["a", "b", "c", "d"] and loaded.space == features.space
    np.testing.assert_allclose(
        predict(loaded, features, top_k=4, return_probs=True).probs,
        predict(result.trained, features, top_k=4, return_probs=True).probs,
        rtol=1e-5,
        atol=1e-6,
    )


def test_a_finished_head_is_reused_not_trained_again(
    tmp_path: Path, data: tuple[EmbeddingArray, np.ndarray]
) -> None:
    features, labels = data
    first = train_model(head_recipe(), features, labels, num_classes=4, checkpoint_dir=tmp_path)
    calls: list[TrainingProgress] = []

    second = train_model(
        head_recipe(),
        features,
        labels,
        num_classes=4,
        checkpoint_dir=tmp_path,
        callback=lambda p: calls.append(p),  # type: ignore[func-returns-value]
    )
    other = train_model(
        head_recipe(seed=5), features, labels, num_classes=4, checkpoint_dir=tmp_path / "b"
    )

    assert second.checkpoint == first.checkpoint and not calls
    assert len(second.history) == len(first.history)
    assert other.checkpoint != first.checkpoint


def test_a_stopped_head_saves_nothing(
    tmp_path: Path, data: tuple[EmbeddingArray, np.ndarray]
) -> None:
    features, labels = data

    result = train_model(
        head_recipe(),
        features,
        labels,
        num_classes=4,
        checkpoint_dir=tmp_path,
        callback=lambda p: Control.STOP,
    )

    assert result.stopped and result.checkpoint is None


def test_training_is_deterministic(data: tuple[EmbeddingArray, np.ndarray]) -> None:
    features, labels = data
    recipe = head_recipe(**{"head.kind": "mlp", "augment.mixup.p": 0.5, "head.dropout": 0.2})

    first = train_model(recipe, features, labels, num_classes=4).trained
    second = train_model(recipe, features, labels, num_classes=4).trained

    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_head_refuses_features_of_another_space(data: tuple[EmbeddingArray, np.ndarray]) -> None:
    features, labels = data
    trained = train_model(head_recipe(), features, labels, num_classes=4).trained
    elsewhere = EmbeddingArray(np.asarray(features), synthetic_space(image_size=64))

    with pytest.raises(ValueError, match="embedding space"):
        predict(trained, elsewhere)
    with pytest.raises(ValueError, match="EmbeddingArray"):
        predict(trained, np.asarray(features))


def test_head_recipes_refuse_pixel_augmentations_and_random_backbones() -> None:
    with pytest.raises(RecipeError, match=r"only augment\.mixup"):
        head_recipe(**{"augment.hflip.p": 0.5})
    with pytest.raises(RecipeError, match="pretrained backbone"):
        head_recipe(**{"model.pretrained": False})


@pytest.mark.parametrize("use", ["drop", "soft", "relabel"])
def test_final_training_never_reads_a_rejected_samples_given_label(
    use: str, data: tuple[EmbeddingArray, np.ndarray]
) -> None:
    """Two runs whose given labels differ only on rejected rows train identical weights."""
    from ml.core.cleaning.targets import final_training_targets

    features, labels = data
    kept = np.ones(labels.size, dtype=bool)
    kept[::3] = False
    other = labels.copy()
    other[~kept] = (labels[~kept] + 1) % 4
    probs = np.full((labels.size, 4), 0.02, dtype=np.float32)
    probs[np.arange(labels.size), labels] = 0.94

    def weights(given: np.ndarray) -> dict[str, torch.Tensor]:
        plan = final_training_targets(given, kept, probs, use=use, relabel_threshold=0.9)  # type: ignore[arg-type]
        targets = None if plan.soft is None else HeadTargets(soft=plan.soft, weights=plan.weights)
        result = train_model(
            head_recipe(), features, plan.labels, num_classes=4, indices=plan.rows, targets=targets
        )
        assert isinstance(result.trained, TrainedHead)
        return result.trained.model.state_dict()

    first, second = weights(labels), weights(other)

    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0)
    # The comparison can fail: the same training on the rejected rows' given labels differs.
    changed = train_model(head_recipe(), features, other, num_classes=4).trained
    assert isinstance(changed, TrainedHead)
    assert any(not torch.equal(first[name], changed.model.state_dict()[name]) for name in first)
