"""A test's handle on one toy pipeline: each command in a transaction of its own, as a request
or the reconciler would run it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.models import (
    Dataset,
    Job,
    Pipeline,
    PipelineClass,
    PipelineRound,
    PipelineSample,
    ReviewTask,
    RoundKind,
    RoundState,
    SampleStatus,
    Stage,
    User,
)
from app.pipeline import export, service
from app.pipeline.config import PipelineEnv, RecipeChoice
from app.pipeline.reconcile import ReconcileResult
from app.pipeline.stages.context import StepParams
from tests.app.pipeline.factories import WHOLE_NETWORK_RECIPES, FakeAnnotator, Toy
from tests.app.pipeline.fake_worker import FakeWorker


@dataclass
class Loop:
    factory: sessionmaker[Session]
    env: PipelineEnv
    toy: Toy
    user: User | None = None

    def dataset(self, session: Session) -> Dataset:
        return session.get_one(Dataset, self.toy.dataset_id)

    def create(self, *, auto: bool = False, **config: Any) -> Pipeline:
        """A pipeline with ``config`` over :data:`WHOLE_NETWORK_RECIPES`."""
        with transaction(self.factory) as session:
            pipeline, _ = service.create_pipeline(
                session,
                dataset=self.dataset(session),
                config={**WHOLE_NETWORK_RECIPES, **config},
                auto=auto,
                user=self.user,
            )
            return pipeline

    def update(self, **changes: Any) -> Pipeline:
        with transaction(self.factory) as session:
            return service.update_pipeline(session, dataset=self.dataset(session), **changes)

    def start(
        self,
        kind: RoundKind,
        *,
        request_key: str | None = None,
        recipe: str | None = None,
        **params: Any,
    ) -> PipelineRound:
        with transaction(self.factory) as session:
            round_, _ = service.start_step(
                session,
                dataset=self.dataset(session),
                kind=kind,
                params=StepParams(recipe=RecipeChoice(name=recipe) if recipe else None, **params),
                env=self.env,
                user=self.user,
                request_key=request_key,
            )
            return round_

    def reconcile(self) -> ReconcileResult:
        with transaction(self.factory) as session:
            return service.reconcile_now(session, dataset=self.dataset(session), env=self.env)

    def finish(self, round_id: int) -> PipelineRound:
        with transaction(self.factory) as session:
            return service.finish_round(
                session, dataset=self.dataset(session), round_id=round_id, env=self.env
            )

    def tasks(self, source: str) -> list[ReviewTask]:
        """The review tasks a round (``source``) queued, oldest first."""
        with transaction(self.factory) as session:
            query = select(ReviewTask).where(ReviewTask.source == source).order_by(ReviewTask.id)
            return list(session.scalars(query))

    def jobs(self) -> list[Job]:
        """Every job of the toy dataset, oldest first."""
        with transaction(self.factory) as session:
            query = select(Job).where(Job.dataset_id == self.toy.dataset_id).order_by(Job.id)
            return list(session.scalars(query))

    def cross_validate(self, worker: FakeWorker) -> None:
        """Skips to the label stage and runs a cross-validation to its end: the folds, then
        confident learning."""
        self.update(stage=Stage.LABEL)
        cv = self.start(RoundKind.CROSS_VALIDATION)
        assert cv.state is RoundState.RUNNING
        worker.run_all()  # the folds
        self.reconcile()
        assert self.round(cv.id).phase == "cleanlab"
        worker.run_all()  # confident learning
        self.reconcile()

    def round(self, round_id: int) -> PipelineRound:
        with transaction(self.factory) as session:
            return session.get_one(PipelineRound, round_id)

    def rounds(self) -> list[PipelineRound]:
        with transaction(self.factory) as session:
            return list(
                session.scalars(
                    select(PipelineRound)
                    .where(PipelineRound.dataset_id == self.toy.dataset_id)
                    .order_by(PipelineRound.id)
                )
            )

    def pipeline(self) -> Pipeline:
        with transaction(self.factory) as session:
            return session.scalars(
                select(Pipeline).where(Pipeline.dataset_id == self.toy.dataset_id)
            ).one()

    def states(self) -> dict[int, PipelineSample]:
        with transaction(self.factory) as session:
            rows = session.scalars(
                select(PipelineSample).where(PipelineSample.dataset_id == self.toy.dataset_id)
            )
            return {row.sample_id: row for row in rows}

    def statuses(self) -> dict[int, SampleStatus]:
        return {sid: row.status for sid, row in self.states().items()}

    def classes(self) -> dict[int, PipelineClass]:
        with transaction(self.factory) as session:
            rows = session.scalars(
                select(PipelineClass).where(PipelineClass.dataset_id == self.toy.dataset_id)
            )
            return {row.class_id: row for row in rows}

    def run(
        self, worker: FakeWorker, annotator: FakeAnnotator, *, until: Stage = Stage.DONE
    ) -> None:
        """Auto mode's loop: jobs run, reviews answered, the pipeline reconciled, until the
        stage is reached (or nothing moves)."""
        for _ in range(60):
            ran = worker.run_all()
            decided = annotator.review_all()
            result = self.reconcile()
            if self.pipeline().stage is until and not any(r.state.is_open for r in self.rounds()):
                return
            if not (ran or decided or result.changed):
                raise AssertionError(f"the loop is stuck: {self.pipeline().note}")
        raise AssertionError("the loop did not finish")

    def run_through_final(self, worker: FakeWorker, annotator: FakeAnnotator) -> None:
        """By hand, from the label stage: cross-validation, a human sample of half the
        rejected set, final training without a teacher."""
        self.create(folds=3, human_fraction=0.5, final_teacher="none")
        self.update(stage=Stage.LABEL)
        self.start(RoundKind.CROSS_VALIDATION)
        for _ in range(2):
            worker.run_all()
            self.reconcile()
        self.start(RoundKind.HUMAN_SAMPLE)
        annotator.review_all()
        self.reconcile()
        self.start(RoundKind.FINAL_TRAINING)
        worker.run_all()
        self.reconcile()

    def export(self, out: Path, *, require_model: bool = False) -> export.ExportResult:
        with transaction(self.factory) as session:
            dataset = self.dataset(session)
            return export.export_dataset(
                session,
                pipeline=service.get_pipeline(session, dataset),
                dataset=dataset,
                out_dir=out,
                data_dir=self.env.data_dir,
                require_model=require_model,
            )
