"""What the loop waits for, in words (``thresher simulate --follow`` prints it): read from the
database as it stands, and said at a modest rate."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.models import Dataset, RoundKind, Stage, TaskKind, utcnow
from app.pipeline import service
from app.pipeline.config import PipelineEnv
from app.pipeline.simulate import WaitLog
from app.pipeline.waiting import waiting_for
from app.review.service import leases as lease_service
from tests.app.pipeline.factories import Toy
from tests.app.pipeline.loop import Loop
from tests.app.review.factories import make_user


def waiting(factory: sessionmaker[Session], toy: Toy, **options: object) -> list[str]:
    with transaction(factory) as session:
        dataset = session.get_one(Dataset, toy.dataset_id)
        pipeline = service.get_pipeline(session, dataset)
        return waiting_for(session, pipeline, dataset, **options)  # type: ignore[arg-type]


def test_waiting_names_who_holds_the_round_tasks_and_until_when(
    session_factory: sessionmaker[Session], env: PipelineEnv, toy: Toy
) -> None:
    loop = Loop(session_factory, env, toy)
    loop.create(seed_random_samples=0)
    seed = loop.start(RoundKind.JUNK_SEED)
    queued = seed.stats["queued"]
    assert queued > 4
    assert waiting(session_factory, toy) == [
        f"waiting: {queued} junk_check tasks for an annotator (junk seed 1)"
    ]
    now = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)
    with transaction(session_factory) as session:
        alice = make_user(session, "alice")
        lease_service.lease_tasks(
            session,
            user=alice,
            kind=TaskKind.JUNK_CHECK,
            n=queued - 1,
            now=now,
            lease_for=timedelta(minutes=3, seconds=10),
        )
    assert waiting(session_factory, toy, now=now + timedelta(seconds=5)) == [
        f"waiting: {queued - 1} junk_check tasks leased by alice until 12:03:10 UTC (junk seed 1)",
        "waiting: 1 junk_check task for an annotator (junk seed 1)",
    ]
    lapsed = waiting(session_factory, toy, now=now + timedelta(minutes=4))
    assert lapsed == [f"waiting: {queued} junk_check tasks for an annotator (junk seed 1)"]


def test_waiting_names_the_worker_jobs_of_a_running_round(
    session_factory: sessionmaker[Session], env: PipelineEnv, toy: Toy
) -> None:
    loop = Loop(session_factory, env, toy)
    loop.create(folds=3)
    loop.update(stage=Stage.LABEL)
    loop.start(RoundKind.CROSS_VALIDATION)
    lines = waiting(session_factory, toy)
    assert len(lines) == 3
    for fold, line in enumerate(lines):
        assert line.startswith("waiting for worker job ")
        assert line.endswith(
            f"(cross validation 1, fold {fold}): queued, no worker has taken it yet"
        )


def test_without_an_open_round_waiting_says_what_would_start_or_that_it_is_done(
    session_factory: sessionmaker[Session], env: PipelineEnv, toy: Toy
) -> None:
    loop = Loop(session_factory, env, toy)
    loop.create()
    assert waiting(session_factory, toy) == [
        "waiting for an engineer: auto mode is off; next would be a junk_seed round"
    ]
    loop.update(stage=Stage.DONE)
    assert waiting(session_factory, toy) == ["nothing: the cleaning is done"]


def test_the_wait_log_says_a_change_at_most_every_few_seconds_and_repeats_rarely() -> None:
    said: list[str] = []
    clock = [0.0]
    log = WaitLog(said.append, every=5.0, repeat=60.0, clock=lambda: clock[0])
    for second in range(0, 130):  # polled every second for two minutes
        clock[0] = float(second)
        log(["waiting: 3 tasks"] if second < 2 or second >= 20 else ["waiting: 2 tasks"])
    # At 0; the change at 2 waits until 5; the one at 20 is said at once; repeated at 80.
    assert said == ["waiting: 3 tasks", "waiting: 2 tasks", "waiting: 3 tasks", "waiting: 3 tasks"]
