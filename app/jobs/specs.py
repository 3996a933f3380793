"""An engineer's job request becomes a spec: sample sets become stored manifests, job ids become
model refs, and each kind takes only the parts it can use (:data:`ENGINEER_KINDS`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from app.datasets import repository as datasets_repository
from app.errors import Invalid, NotFound
from app.jobs import manifests, service
from app.jobs.config import JobSettings
from app.jobs.schemas import JobCreate, SampleSet
from app.models import Job, User
from ml.core.protocol.jobs import (
    EvaluateSpec,
    JobKind,
    JobSpec,
    ManifestRef,
    ModelRef,
    PredictSpec,
    ScoreJunkSpec,
    TrainFinalSpec,
    TrainFoldSpec,
    TrainJunkSpec,
    TrainPredictSpec,
)

#: Kinds whose specs only the pipeline builds (from its rounds' state); engineers create the rest.
PIPELINE_ONLY_KINDS = frozenset({JobKind.EMBED, JobKind.KNN, JobKind.CONFIDENT_LEARNING})
ENGINEER_KINDS = frozenset(JobKind) - PIPELINE_ONLY_KINDS


def create_job_from_request(
    session: Session, *, body: JobCreate, user: User, data_dir: Path, config: JobSettings
) -> Job:
    """Builds the spec of an engineer's request (storing its manifests) and queues the job."""
    spec = build_spec(session, body=body, data_dir=data_dir)
    return service.create_job(
        session,
        spec=spec,
        config=config,
        device=body.device,
        priority=body.priority,
        max_attempts=body.max_attempts,
        dataset_id=body.dataset_id,
        user=user,
    )


def build_spec(session: Session, *, body: JobCreate, data_dir: Path) -> JobSpec:
    """The spec of ``body``: sample sets become stored manifests, job ids become model refs.

    Raises:
        Invalid: a part the kind needs is missing, or one it cannot use is given.
    """
    if body.kind in PIPELINE_ONLY_KINDS:
        raise Invalid(
            f"{body.kind.value} jobs are queued by the pipeline's rounds (embed: also `thresher ml "
            "embed`); create one of: " + ", ".join(sorted(k.value for k in ENGINEER_KINDS))
        )
    spec = _BUILDERS[body.kind](_Parts(session, body, data_dir))
    if isinstance(spec, TrainFoldSpec):
        ids = manifests.result_sample_ids(data_dir, spec.train.sha256, spec.fold)
        if ids.shape[0] == 0:
            raise Invalid(f"no sample of 'train' is in fold {spec.fold}")
    return spec


@dataclass(frozen=True)
class _Parts:
    """The parts of a request a spec is built from, each checked as a builder takes it: a part
    the kind needs and the request lacks is Invalid. Taking a sample set stores its manifest."""

    session: Session
    body: JobCreate
    data_dir: Path

    def _needs(self, what: str) -> Invalid:
        return Invalid(f"a {self.body.kind.value} job needs {what}")

    def manifest(self, name: str, value: SampleSet | None) -> ManifestRef:
        if value is None:
            raise self._needs(f"'{name}'")
        return _sample_set_manifest(self.session, self.data_dir, self.body.dataset_id, value, name)

    def optional(self, name: str, value: SampleSet | None) -> ManifestRef | None:
        return None if value is None else self.manifest(name, value)

    def recipe(self) -> str | dict[str, object]:
        if self.body.recipe is None:
            raise self._needs("a 'recipe'")
        return self.body.recipe

    def model(self) -> ModelRef:
        if self.body.model_job_id is None:
            raise self._needs("'model_job_id'")
        return service.model_ref(self.session, self.body.model_job_id)


def _train_junk(parts: _Parts) -> JobSpec:
    body = parts.body
    return TrainJunkSpec(
        recipe=parts.recipe(),
        train=parts.manifest("train", body.train),
        predict=parts.optional("predict", body.predict),
        seed=body.seed,
    )


def _score_junk(parts: _Parts) -> JobSpec:
    body = parts.body
    return ScoreJunkSpec(
        model=parts.model(), predict=parts.manifest("predict", body.predict), seed=body.seed
    )


def _train_fold(parts: _Parts) -> JobSpec:
    body = parts.body
    if body.fold is None:
        raise Invalid("a train_fold job needs 'fold', the held-out fold")
    return TrainFoldSpec(
        recipe=parts.recipe(),
        train=parts.manifest("train", body.train),
        fold=body.fold,
        top_k=body.top_k,
        keep_probs=body.keep_probs,
        seed=body.seed,
    )


def _train_predict(parts: _Parts) -> JobSpec:
    body = parts.body
    return TrainPredictSpec(
        recipe=parts.recipe(),
        train=parts.manifest("train", body.train),
        predict=parts.manifest("predict", body.predict),
        top_k=body.top_k,
        keep_probs=body.keep_probs,
        seed=body.seed,
    )


def _predict(parts: _Parts) -> JobSpec:
    body = parts.body
    return PredictSpec(
        model=parts.model(),
        predict=parts.manifest("predict", body.predict),
        top_k=body.top_k,
        keep_probs=body.keep_probs,
        seed=body.seed,
    )


def _train_final(parts: _Parts) -> JobSpec:
    body = parts.body
    return TrainFinalSpec(
        recipe=parts.recipe(),
        train=parts.manifest("train", body.train),
        eval=parts.optional("eval", body.eval),
        teachers=[service.model_ref(parts.session, job_id) for job_id in body.teacher_job_ids],
        seed=body.seed,
    )


def _evaluate(parts: _Parts) -> JobSpec:
    body = parts.body
    return EvaluateSpec(
        model=parts.model(),
        eval=parts.manifest("eval", body.eval),
        train=parts.optional("train", body.train),
        top_k=body.top_k,
        seed=body.seed,
    )


_BUILDERS: dict[JobKind, Callable[[_Parts], JobSpec]] = {
    JobKind.TRAIN_JUNK: _train_junk,
    JobKind.SCORE_JUNK: _score_junk,
    JobKind.TRAIN_FOLD: _train_fold,
    JobKind.TRAIN_PREDICT: _train_predict,
    JobKind.PREDICT: _predict,
    JobKind.TRAIN_FINAL: _train_final,
    JobKind.EVALUATE: _evaluate,
}


def _sample_set_manifest(
    session: Session, data_dir: Path, dataset_id: int | None, value: SampleSet, name: str
) -> ManifestRef:
    if value.manifest is not None:
        if any(v is not None for v in (value.sample_ids, value.class_ids, value.junk, value.folds)):
            raise Invalid(f"'{name}': give a manifest or sample fields, not both")
        stored = manifests.load_manifest(data_dir, value.manifest)
        return ManifestRef(sha256=value.manifest, count=len(stored), num_classes=stored.num_classes)
    if dataset_id is None:
        raise Invalid(f"'{name}' selects samples: the job needs a 'dataset_id'")
    dataset = datasets_repository.get_dataset(session, dataset_id)
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id}")
    return manifests.dataset_manifest(
        session,
        data_dir,
        dataset=dataset,
        sample_ids=value.sample_ids,
        class_ids=value.class_ids,
        junk=value.junk,
        folds=value.folds,
    )
