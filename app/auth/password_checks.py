"""Where password checks run: one low-priority thread per server process, with a bounded queue.

A password check (argon2id) is slow on purpose and keeps a core busy while it runs. On the
request threads, a flood of wrong sign-ins would take every core from the annotators. Here the
checks run one at a time on a thread of their own whose scheduling priority is lowered (Linux
keeps a nice value per thread, and argon2's lane threads inherit it), so they get the CPU the
annotators leave. At most ``max_waiting`` sign-ins wait for it; the rest are refused at once
with 503 rather than queueing without end.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from app.errors import AppError
from app.logging import get_logger

log = get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

#: How much lower than the server's own the checking thread's priority is (nice steps, 0–19).
NICENESS = 10


class SignInsBusy(AppError):
    status_code = 503
    code = "sign_ins_busy"


class PasswordChecks:
    """Runs password checks off the event loop, one at a time, at low priority.

    Call :meth:`run` from the event loop only: the count of waiting checks is not locked.
    """

    def __init__(self, *, max_waiting: int = 32, niceness: int = NICENESS) -> None:
        self.max_waiting = max_waiting
        self._waiting = 0
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="password-check",
            initializer=_lower_priority,
            initargs=(niceness,),
        )

    async def run(self, check: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``check(*args, **kwargs)`` on the checking thread; :class:`SignInsBusy` if too many
        are waiting already."""
        if self._waiting >= self.max_waiting:
            log.warning("auth.password_checks.busy", waiting=self._waiting)
            raise SignInsBusy("too many sign-ins at once: try again in a few seconds", wait=5)
        self._waiting += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, functools.partial(check, *args, **kwargs)
            )
        finally:
            self._waiting -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _lower_priority(niceness: int) -> None:
    if not sys.platform.startswith("linux") or niceness <= 0:
        return  # elsewhere setpriority takes a process id, not a thread's: leave it be
    thread = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, current + niceness))
    except OSError as exc:  # a sandbox may forbid it: checks still run, at normal priority
        log.warning("auth.password_checks.priority_unchanged", error=str(exc))
