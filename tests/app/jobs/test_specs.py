"""Engineers' job requests becoming specs on both engines: each kind takes the parts it needs,
and a request that lacks one is refused naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from app.errors import Invalid
from app.jobs import specs
from app.jobs.schemas import JobCreate
from ml.core.protocol.jobs import (
    JobKind,
    TrainFinalSpec,
    TrainFoldSpec,
    TrainJunkSpec,
    TrainPredictSpec,
)
from tests.app.jobs.factories import store_manifest


def request(data_dir: Path, kind: JobKind, **fields: object) -> JobCreate:
    """A request of ``kind`` whose sample sets are one stored manifest: 10 samples, folds 0, 1."""
    ref = store_manifest(data_dir, 10, folds=[i % 2 for i in range(10)])
    sets = {"train": {"manifest": ref.sha256}, "predict": {"manifest": ref.sha256}}
    return JobCreate.model_validate({"kind": kind, "recipe": "cifar-small", **sets, **fields})


@pytest.mark.parametrize(
    ("kind", "fields", "spec_type"),
    [
        (JobKind.TRAIN_JUNK, {}, TrainJunkSpec),
        (JobKind.TRAIN_FOLD, {"fold": 1, "top_k": 3}, TrainFoldSpec),
        (JobKind.TRAIN_PREDICT, {"keep_probs": True}, TrainPredictSpec),
        (JobKind.TRAIN_FINAL, {}, TrainFinalSpec),
    ],
)
def test_each_training_kind_gets_its_own_spec(
    session: Session,
    data_dir: Path,
    kind: JobKind,
    fields: dict[str, object],
    spec_type: type,
) -> None:
    body = request(data_dir, kind, seed=7, **fields)
    spec = specs.build_spec(session, body=body, data_dir=data_dir)
    assert isinstance(spec, spec_type)
    assert spec.seed == 7
    for name, value in fields.items():
        assert getattr(spec, name) == value


@pytest.mark.parametrize(
    ("kind", "fields", "message"),
    [
        (JobKind.TRAIN_JUNK, {"recipe": None}, "a train_junk job needs a 'recipe'"),
        (JobKind.TRAIN_PREDICT, {"predict": None}, "a train_predict job needs 'predict'"),
        (JobKind.TRAIN_FOLD, {}, "needs 'fold', the held-out fold"),
        (JobKind.PREDICT, {}, "a predict job needs 'model_job_id'"),
        (JobKind.EVALUATE, {"model_job_id": None}, "evaluate job needs 'model_job_id'"),
        (JobKind.TRAIN_FOLD, {"fold": 5}, "no sample of 'train' is in fold 5"),
        (JobKind.KNN, {}, "queued by the pipeline's rounds"),
    ],
)
def test_a_request_lacking_a_part_its_kind_needs_is_refused(
    session: Session, data_dir: Path, kind: JobKind, fields: dict[str, object], message: str
) -> None:
    body = request(data_dir, kind, **fields)
    with pytest.raises(Invalid, match=message):
        specs.build_spec(session, body=body, data_dir=data_dir)


def test_sample_fields_without_a_dataset_are_refused(session: Session, data_dir: Path) -> None:
    body = request(data_dir, JobKind.TRAIN_JUNK, train={"sample_ids": [1, 2]})
    with pytest.raises(Invalid, match="the job needs a 'dataset_id'"):
        specs.build_spec(session, body=body, data_dir=data_dir)
