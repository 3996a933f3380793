"""Structured logging for ``ml`` and the worker: dotted event names with key-value fields
(``log.info("worker.job.succeeded", job=3, results=10)``), rendered like the server's
(:mod:`app.logging`: an ISO UTC time, the level, the event, the fields; or JSON).

Events go through the standard library's loggers, as a line ``event key=value …`` with the fields
kept on the record, so that every handler still sees them: a job's log tail on the server
(:class:`~ml.worker.context.JobLogHandler`), a DDP rank's event file, and the library's quiet
default when nothing is configured (the ``thresher ml`` CLI, tests). :func:`configure_logging`
gives a process (the worker, a DDP rank) the server's console or JSON format.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "get_logger"]

#: The record attribute holding an event's fields, for :func:`configure_logging`'s formatter.
_FIELDS = "structlog_fields"


def _to_stdlib(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> tuple[tuple[str], dict[str, Any]]:
    """The last processor: the event as a ``event key=value …`` message for the standard
    library's logger, its fields on the record, exception info passed on."""
    fields = dict(event_dict)
    extra: dict[str, Any] = {
        key: fields.pop(key) for key in ("exc_info", "stack_info") if key in fields
    }
    pairs = [f"{key}={value}" for key, value in fields.items() if key != "event"]
    text = " ".join([str(fields["event"]), *pairs])
    return (text,), {**extra, "extra": {_FIELDS: fields}}


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structured logger that writes through ``logging.getLogger(name)``."""
    logger: structlog.stdlib.BoundLogger = structlog.wrap_logger(
        logging.getLogger(name),
        processors=[structlog.stdlib.filter_by_level, _to_stdlib],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    return logger


def _fields(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """An event's own fields in place of its message, for records written by :func:`get_logger`
    (other records, e.g. from httpx, keep their message as the event)."""
    record = event_dict.get("_record")
    fields = getattr(record, _FIELDS, None)
    if fields is not None:
        event_dict.update(fields)
    return event_dict


def configure_logging(
    fmt: str = "console", level: int = logging.INFO, *, force: bool = False
) -> None:
    """Log to stderr at ``level`` in the server's ``console`` or ``json`` format. Like
    :func:`logging.basicConfig`, it leaves a root logger that has handlers already (e.g. a test
    runner's) as it is, unless ``force``."""
    root = logging.getLogger()
    if root.handlers and not force:
        return
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                _fields,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root.handlers = [handler]
    root.setLevel(level)
    # One line per poll of the server would drown the worker's own log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
