"""The server's structured log (app/logging.py)."""

from __future__ import annotations

import io
import sys

import pytest

from app.logging import configure_logging, get_logger


def test_a_log_line_goes_to_the_stderr_of_the_moment_not_the_one_at_set_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A CLI runner sets logging up while stderr is its own buffer, then closes that buffer:
    later lines must not fail on the closed stream."""
    borrowed = io.StringIO()
    monkeypatch.setattr(sys, "stderr", borrowed)
    configure_logging("json")
    borrowed.close()
    now = io.StringIO()
    monkeypatch.setattr(sys, "stderr", now)

    get_logger("test").info("test.event", answer=42)

    assert '"event": "test.event"' in now.getvalue()
    assert '"answer": 42' in now.getvalue()
