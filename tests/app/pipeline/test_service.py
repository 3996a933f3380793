"""The pipeline's commands: creating a pipeline (and again), an invalid config, no step while
a round is open, and a retried start with the same request key."""

from __future__ import annotations

import uuid

import pytest

from app.db import transaction
from app.errors import Invalid
from app.models import (
    EventKind,
    RoundKind,
    SampleStatus,
)
from app.pipeline import service
from app.pipeline.service import RoundOpen
from tests.app.pipeline.factories import (
    Toy,
    count_events,
)
from tests.app.pipeline.loop import Loop


def test_a_new_pipeline_takes_every_usable_sample_as_a_candidate(loop: Loop, toy: Toy) -> None:
    loop.create()
    statuses = loop.statuses()
    assert len(statuses) == len(toy.given) + len(toy.duplicates)  # the broken file is left out
    assert {statuses[sid] for sid in toy.duplicates} == {SampleStatus.DUPLICATE}
    assert {statuses[sid] for sid in toy.given} == {SampleStatus.CANDIDATE}
    with transaction(loop.factory) as session:
        assert count_events(session, toy.dataset_id, kind=EventKind.DUPLICATE) == 2


def test_creating_a_pipeline_again_returns_it_unchanged(loop: Loop, toy: Toy) -> None:
    first = loop.create(audit_size=7)
    with transaction(loop.factory) as session:
        again, created = service.create_pipeline(
            session, dataset=loop.dataset(session), config={"audit_size": 9}
        )
    assert not created and again.id == first.id and again.config["audit_size"] == 7


def test_an_invalid_config_is_refused_with_the_field_named(loop: Loop) -> None:
    with pytest.raises(Invalid, match="junk_threshold"):
        loop.create(junk_threshold=2.0)


def test_no_step_starts_while_a_round_is_under_review(loop: Loop) -> None:
    loop.create(seed_random_samples=3)
    loop.start(RoundKind.JUNK_SEED)
    with pytest.raises(RoundOpen, match="junk seed 1"):
        loop.start(RoundKind.JUNK_AUDIT)


def test_a_retried_start_with_the_same_key_returns_the_same_round(loop: Loop) -> None:
    loop.create(seed_random_samples=3)
    key = uuid.uuid4().hex
    first = loop.start(RoundKind.JUNK_SEED, request_key=key)
    again = loop.start(RoundKind.JUNK_SEED, request_key=key)
    assert again.id == first.id
    assert len(loop.rounds()) == 1
    assert len(loop.tasks("junk seed 1")) == first.stats["queued"]
