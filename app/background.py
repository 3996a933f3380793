"""Runs long server-side tasks (imports) off the request thread, one at a time."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from app.logging import get_logger

log = get_logger(__name__)


class BackgroundRunner:
    """A single background thread. Requests only enqueue; the work's state lives in the database."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="thresher-bg")

    def submit(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        future = self._executor.submit(fn, *args, **kwargs)
        future.add_done_callback(lambda done: _log_failure(name, done))
        return future

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)


def _log_failure(name: str, future: Future[Any]) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("background.task.failed", task=name, error=repr(exc))
