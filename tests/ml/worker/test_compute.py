"""The worker's compute layer in one process: job kinds on tiny data, class mapping."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ml.core.protocol.bundles import JobManifest
from ml.core.protocol.jobs import (
    ArtifactRef,
    EvaluateSpec,
    ManifestRef,
    ModelRef,
    ScoreJunkSpec,
    TrainFinalSpec,
    TrainFoldSpec,
    TrainJunkSpec,
)
from ml.crossval import train_fold
from ml.recipes import recipe_from_dict
from ml.runtime import JobStopped, LocalRuntime
from ml.training.interface import TrainingProgress
from ml.worker.compute import run_task
from ml.worker.task import SampleSet, Task

REF = ManifestRef(sha256="ab" * 32, count=1, num_classes=2)
MODEL = ModelRef(
    job_id=1,
    files=[ArtifactRef(id=1, job_id=1, name="model.safetensors", sha256="cd" * 32, byte_size=1)],
)


class Recorder:
    """A single-process runtime that records what it is told."""

    rank = 0
    world = 1
    device = "cpu"

    def __init__(self, stop_after: int | None = None) -> None:
        self.steps = 0
        self.epochs: list[tuple[int, dict[str, float]]] = []
        self.stop_after = stop_after

    def training(self, progress: TrainingProgress) -> bool:
        self.steps += 1
        return self.stop_after is not None and self.steps >= self.stop_after

    def predicting(self, done: int, total: int) -> bool:
        return False

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        self.epochs.append((epoch, values))

    def stop_reason(self) -> str:
        return "test stop"

    def any_rank(self, flag: bool) -> bool:
        return flag

    def gather(self, parts: object, name: str) -> None:
        raise AssertionError


def sample_set(
    labels: list[int], names: list[str], class_ids: list[int], seed: int = 0
) -> SampleSet:
    n = len(labels)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(n, 16, 16, 3), dtype=np.uint8)
    for row, label in enumerate(labels):
        images[row, ..., label % 3] += 180  # a class is a colour
    manifest = JobManifest(
        root="/x",
        sample_ids=np.arange(1000, 1000 + n, dtype=np.int64),
        labels=np.asarray(labels, dtype=np.int32),
        folds=np.full(n, -1, dtype=np.int8),
        sha256=np.zeros((n, 32), dtype=np.uint8),
        paths=[f"{i}.png" for i in range(n)],
        class_ids=np.asarray(class_ids, dtype=np.int64),
        class_names=names,
    )
    return SampleSet(manifest=manifest, images=images)


def tiny_recipe() -> object:
    return recipe_from_dict(
        {
            "name": "t",
            "model": {"name": "cifar_convnet_s"},
            "image_size": 16,
            "epochs": 2,
            "batch_size": 8,
            "optimizer": {"name": "sgd", "lr": 0.05},
            "loader_workers": 0,
            "channels_last": False,
        }
    )


def test_junk_training_scores_the_predict_set_and_a_score_job_reproduces_it(tmp_path: Path) -> None:
    train = sample_set([0, 1] * 10 + [-1] * 4, ["normal", "junk"], [0, 1])
    predict = sample_set([0, 1, 0, 1, 0, 1], ["normal", "junk"], [0, 1], seed=1)
    spec = TrainJunkSpec(recipe="x", train=REF, predict=REF)
    runtime = Recorder()
    trained = run_task(
        Task(spec, tmp_path, recipe=tiny_recipe(), train=train, predict=predict),
        runtime,  # type: ignore[arg-type]
    )
    assert trained.results is not None and trained.results.junk_score is not None
    assert trained.results.sample_id.tolist() == predict.manifest.sample_ids.tolist()
    assert ((trained.results.junk_score >= 0) & (trained.results.junk_score <= 1)).all()
    assert [epoch for epoch, _ in runtime.epochs] == [0, 1]
    assert trained.model_dir is not None and (trained.model_dir / "model.safetensors").is_file()

    scored = run_task(
        Task(
            ScoreJunkSpec(model=MODEL, predict=REF),
            tmp_path,
            model_dir=trained.model_dir,
            predict=predict,
        ),
        Recorder(),
    )
    assert scored.results is not None and scored.results.junk_score is not None
    np.testing.assert_allclose(scored.results.junk_score, trained.results.junk_score, atol=1e-5)


def test_evaluation_maps_the_models_classes_by_name(tmp_path: Path) -> None:
    train = sample_set([0, 1, 2] * 6, ["a", "b", "c"], [11, 12, 13])
    final = run_task(
        Task(TrainFinalSpec(recipe="x", train=REF), tmp_path, recipe=tiny_recipe(), train=train),  # type: ignore[arg-type]
        Recorder(),
    )
    assert final.model_dir is not None
    # The evaluation set lists the classes in another order and with one the model never saw.
    evaluation = sample_set([1, 0, 2, 3], ["c", "b", "a", "d"], [13, 12, 11, 14])
    outcome = run_task(
        Task(
            EvaluateSpec(model=MODEL, eval=REF, top_k=2),
            tmp_path,
            model_dir=final.model_dir,
            eval=evaluation,
        ),
        Recorder(),
    )
    assert outcome.results is not None and outcome.results.topk_class_id is not None
    assert set(outcome.results.topk_class_id.ravel().tolist()) <= {11, 12, 13}
    assert outcome.summary["unknown_labels"] == 1
    assert outcome.summary["eval"]["num_samples"] == 3


def test_a_stop_at_a_step_boundary_raises_job_stopped(tmp_path: Path) -> None:
    train = sample_set([0, 1] * 10, ["normal", "junk"], [0, 1])
    with pytest.raises(JobStopped, match="test stop"):
        run_task(
            Task(TrainJunkSpec(recipe="x", train=REF), tmp_path, recipe=tiny_recipe(), train=train),  # type: ignore[arg-type]
            Recorder(stop_after=1),
        )


def test_a_fold_job_is_the_libraries_train_fold_in_server_classes(tmp_path: Path) -> None:
    data = sample_set([0, 1, 2] * 6, ["a", "b", "c"], [11, 12, 13])
    folds = np.array([0, 1] * 9, dtype=np.int8)
    data = SampleSet(replace(data.manifest, folds=folds), data.images)
    spec = TrainFoldSpec(recipe="x", train=REF, fold=1, top_k=2, keep_probs=True)

    job = run_task(Task(spec, tmp_path / "job", recipe=tiny_recipe(), train=data), Recorder())  # type: ignore[arg-type]
    library = train_fold(
        tiny_recipe(),  # type: ignore[arg-type]
        data.images,
        data.labels,
        folds,
        1,
        num_classes=3,
        class_names=data.class_names,
        top_k=2,
        runtime=LocalRuntime("cpu"),
    )

    assert job.results is not None and library is not None
    heldout = np.flatnonzero(folds == 1)
    assert job.results.sample_id.tolist() == data.manifest.sample_ids[heldout].tolist()
    expected = data.class_ids[library.predictions.topk_ids]
    assert job.results.topk_class_id is not None
    assert job.results.topk_class_id.tolist() == expected.tolist()
    assert job.summary["heldout_samples"] == heldout.size
    assert set(job.files) == {"probs.npy", "probs_sample_ids.npy"}
