"""The job state machine's rules that need no database."""

from __future__ import annotations

from app.jobs import lifecycle
from tests.app.jobs.factories import CONFIG


def test_backoff_doubles_each_attempt_up_to_the_cap() -> None:
    assert [lifecycle.backoff(a, CONFIG).total_seconds() for a in (1, 2, 3, 4, 5)] == [
        10,
        20,
        40,
        80,
        100,
    ]
