"""Fixtures of the pipeline tests: the toy dataset, its pipeline environment, a fake worker and
a fake annotator. The app's background reconciler is off: tests reconcile when they choose."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.models import Role, User
from app.pipeline.config import PipelineEnv
from app.settings import Settings
from tests.app.pipeline.factories import JOB_CONFIG, FakeAnnotator, Toy, make_toy
from tests.app.pipeline.fake_worker import FakeWorker
from tests.app.pipeline.loop import Loop
from tests.app.review.factories import make_user


@pytest.fixture(autouse=True)
def _no_background_reconciler(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("THRESHER_PIPELINE_RECONCILE_SECONDS", "0")
    yield


@pytest.fixture
def toy(session_factory: sessionmaker[Session], tmp_path: Path) -> Toy:
    with transaction(session_factory) as session:
        return make_toy(session, tmp_path / "toy", duplicates=2)


@pytest.fixture
def env(settings: Settings) -> PipelineEnv:
    """The pipeline's environment in the app's data folder: the fake worker stores manifests
    and artifacts where the app reads them."""
    return PipelineEnv(data_dir=settings.ensure_data_dir(), jobs=JOB_CONFIG)


@pytest.fixture
def engineer(session_factory: sessionmaker[Session]) -> User:
    with transaction(session_factory) as session:
        return make_user(session, "eng", Role.ENGINEER)


@pytest.fixture
def worker(session_factory: sessionmaker[Session], env: PipelineEnv, toy: Toy) -> FakeWorker:
    return FakeWorker(session_factory, env, toy)


@pytest.fixture
def annotator(session_factory: sessionmaker[Session], toy: Toy) -> FakeAnnotator:
    with transaction(session_factory) as session:
        user = make_user(session, "ann")
    return FakeAnnotator(session_factory, toy, user)


@pytest.fixture
def loop(
    session_factory: sessionmaker[Session], env: PipelineEnv, toy: Toy, engineer: User
) -> Loop:
    """The toy's pipeline, driven by the engineer (test files with other needs define theirs)."""
    return Loop(session_factory, env, toy, engineer)


@pytest.fixture
def finished(
    session_factory: sessionmaker[Session],
    env: PipelineEnv,
    toy: Toy,
    worker: FakeWorker,
    annotator: FakeAnnotator,
) -> Loop:
    """A toy pipeline run through cross-validation, a human sample and final training."""
    loop = Loop(session_factory, env, toy)
    loop.run_through_final(worker, annotator)
    return loop
