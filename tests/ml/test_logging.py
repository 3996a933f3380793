"""Structured logging in ml/ and the worker (ml/logging.py): events reach the standard library's
handlers as ``event key=value`` lines, and a configured process prints the server's format."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest

from ml.logging import configure_logging, get_logger


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers, root.level = handlers, level


def test_an_event_reaches_a_job_handler_as_event_and_fields(root_logging: None) -> None:
    logging.getLogger().setLevel(logging.INFO)
    lines = Lines()
    logging.getLogger("ml").addHandler(lines)
    try:
        get_logger("ml.train").info("ml.train.resumed", checkpoint="/runs/a", epoch=2)
    finally:
        logging.getLogger("ml").removeHandler(lines)
    assert lines.lines == ["ml.train.resumed checkpoint=/runs/a epoch=2"]


def test_a_configured_process_prints_the_servers_console_format(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("console", force=True)
    get_logger("ml.worker").warning("worker.job.handing_back", job=3, reason="shutdown")
    logging.getLogger("httpx").info("quiet below warnings")

    err = capsys.readouterr().err
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z \[warning\s*\] worker\.job\.handing_back\s+"
        r"job=3 reason=shutdown\n",
        err,
    ), err


def test_json_format_keeps_the_fields(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", force=True)
    get_logger("ml.worker").info("worker.started", procs=2)

    err = capsys.readouterr().err
    assert '"event": "worker.started"' in err and '"procs": 2' in err
