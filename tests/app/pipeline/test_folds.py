"""The server's cross-validation and ``thresher ml crossval`` draw the same folds: the folds a
server round writes into its manifest (the ones its fold jobs train on) are those the ML steps
draw for the same labels and seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.jobs import manifests
from app.models import Job, RoundKind, Stage, User
from app.pipeline.config import PipelineEnv
from ml.core.protocol.bundles import JobManifest
from ml.core.protocol.jobs import TrainFoldSpec, parse_spec
from ml.manifest import Manifest, Sample
from ml.recipes import load_recipe
from ml.steps import cleaning
from tests.app.pipeline.factories import Toy
from tests.app.pipeline.loop import Loop


class _FoldsDrawn(Exception):
    def __init__(self, folds: NDArray[np.int64]) -> None:
        super().__init__("folds drawn")
        self.folds = folds


def _server_fold_manifest(loop: Loop, seed: int) -> JobManifest:
    loop.update(stage=Stage.LABEL)
    loop.start(RoundKind.CROSS_VALIDATION, seed=seed)
    with transaction(loop.factory) as session:
        specs = [parse_spec(job.spec) for job in session.scalars(select(Job).order_by(Job.id))]
    [train] = {spec.train for spec in specs if isinstance(spec, TrainFoldSpec)}
    return manifests.load_manifest(loop.env.data_dir, train.sha256)


def _crossval_folds(
    manifest: Manifest, folds: int, seed: int, monkeypatch: pytest.MonkeyPatch
) -> NDArray[np.int64]:
    """The folds ``thresher ml crossval`` trains on, caught before any training."""

    class NoInputs:
        def __init__(self, *_: object) -> None: ...

        def for_recipe(self, _recipe: object) -> None:
            return None

    def caught(
        _recipe: object, _inputs: object, _labels: object, fold_array: Any, **_: Any
    ) -> None:
        raise _FoldsDrawn(fold_array)

    monkeypatch.setattr(cleaning, "StepInputs", NoInputs)
    monkeypatch.setattr(cleaning, "out_of_fold_predictions", caught)
    with pytest.raises(_FoldsDrawn) as drawn:
        cleaning.run_crossval(
            manifest, load_recipe("pretrained-cpu"), Path("unused"), folds=folds, seed=seed
        )
    return drawn.value.folds


@pytest.mark.parametrize("seed", [0, 11])
def test_server_rounds_and_ml_crossval_draw_the_same_folds(
    session_factory: sessionmaker[Session],
    env: PipelineEnv,
    toy: Toy,
    engineer: User,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    seed: int,
) -> None:
    loop = Loop(session_factory, env, toy, engineer)
    loop.create(folds=3)
    server = _server_fold_manifest(loop, seed)
    assert set(server.folds.tolist()) == {0, 1, 2}
    local = Manifest(
        samples=tuple(
            Sample(path=tmp_path / path, label=int(label), sample_id=str(sample_id))
            for path, label, sample_id in zip(
                server.paths, server.labels, server.sample_ids, strict=True
            )
        ),
        classes=tuple(server.class_names),
    )
    monkeypatch.chdir(tmp_path)

    folds = _crossval_folds(local, 3, seed, monkeypatch)

    np.testing.assert_array_equal(folds, server.folds)
