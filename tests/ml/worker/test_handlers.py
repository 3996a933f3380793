"""The registry of job kinds (ml/worker/handlers.py)."""

from __future__ import annotations

import pytest

from ml.core.protocol.jobs import JobKind
from ml.worker.handlers import HANDLERS, UnknownKind, handler_for


def test_every_job_kind_has_a_handler() -> None:
    assert set(HANDLERS) == {kind.value for kind in JobKind}


def test_an_unknown_kind_names_the_valid_ones() -> None:
    valid = "valid kinds: confident_learning, embed, evaluate, knn, predict, score_junk"
    with pytest.raises(UnknownKind, match=valid):
        handler_for("train_everything")
