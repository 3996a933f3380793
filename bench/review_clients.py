"""The review benchmark's clients, each group in its own processes, all started together:

- annotators, signed in with browser sessions, at human pace or flat out;
- an engineer with an API token calling ``GET /api/me`` at a steady rate;
- hostile neighbours: clients sending wrong passwords to the sign-in form, and clients
  trickling request bodies a byte at a time over raw sockets.

Every client measures its own calls; a process returns one :class:`Recorder`. The clients
themselves are in :mod:`bench.review_annotators` and :mod:`bench.review_neighbours`; here are the
processes that run them.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.review_annotators import Annotator, Recorder, client_for
from bench.review_neighbours import (
    Neighbours,
    probe_me,
    send_wrong_logins,
    trickle_bodies,
    trickle_headers,
    trickler_plan,
)
from bench.review_setup import Browser

#: Seconds a client process may take to start.
START_TIMEOUT = 120.0

_start_line: Any = None  # each client process's copy of the run's barrier


def _join_start_line(barrier: Any) -> None:
    global _start_line
    _start_line = barrier


def _start_together() -> None:
    """Waits until every client process of the run is ready, so that all start at once."""
    _start_line.wait(timeout=START_TIMEOUT)


def _annotator_process(
    url: str, browsers: list[Browser], dataset_id: int, mode: str, seconds: float
) -> Recorder:
    async def run() -> Recorder:
        recorder = Recorder()
        clients = [client_for(url, browser) for browser in browsers]
        try:
            until = time.monotonic() + seconds
            annotators = [
                Annotator(client, recorder, dataset_id, seed=index)
                for index, client in enumerate(clients)
            ]
            if mode == "human":
                jobs = [a.label_at_pace(until, 1.0) for a in annotators]
                jobs += [a.grid_at_pace(until, 10.0) for a in annotators]
            elif mode == "single":
                jobs = [a.singles_flat_out(until) for a in annotators]
            else:
                jobs = [a.grids_flat_out(until) for a in annotators]
            await asyncio.gather(*jobs)
        finally:
            for client in clients:
                await client.aclose()
        return recorder

    _start_together()
    return asyncio.run(run())


def _engineer_process(
    url: str, neighbours: Neighbours, seconds: float
) -> tuple[Recorder, Recorder]:
    """The engineer's probe, and the tricklers (which cost their process next to nothing).
    Returns what each measured."""

    async def run() -> tuple[Recorder, Recorder]:
        engineer, tricklers = Recorder(), Recorder()
        until = time.monotonic() + seconds
        jobs = []
        if neighbours.engineer_token:
            jobs.append(
                probe_me(
                    url,
                    neighbours.engineer_token,
                    period=neighbours.probe_period,
                    until=until,
                    recorder=engineer,
                )
            )
        for index in range(neighbours.tricklers):
            path, interval = trickler_plan(index)
            headers = trickle_headers(path, neighbours.trickler)
            jobs.append(
                trickle_bodies(
                    url,
                    path=path,
                    headers=headers,
                    interval=interval,
                    until=until,
                    recorder=tricklers,
                )
            )
        await asyncio.gather(*jobs)
        return engineer, tricklers

    _start_together()
    return asyncio.run(run())


def _wrong_login_process(url: str, neighbours: Neighbours, seconds: float) -> Recorder:
    async def run() -> Recorder:
        recorder = Recorder()
        until = time.monotonic() + seconds
        await asyncio.gather(
            *(
                send_wrong_logins(
                    url,
                    neighbours,
                    address=neighbours.login_address(index),
                    until=until,
                    recorder=recorder,
                    seed=index,
                )
                for index in range(neighbours.wrong_logins)
            )
        )
        return recorder

    _start_together()
    return asyncio.run(run())


@dataclass
class RunResult:
    """What each group measured: the annotators, the engineer's probe (its latencies and
    errors), the hostile neighbours (their answers, keyed by outcome)."""

    annotators: Recorder
    engineer: Recorder
    neighbours: Recorder


def run_clients(
    url: str,
    browsers: list[Browser],
    dataset_id: int,
    mode: str,
    seconds: float,
    processes: int,
    neighbours: Neighbours | None = None,
) -> RunResult:
    """Runs one annotator loop per browser (``mode``: human, single or grid), spread over
    ``processes`` client processes, for ``seconds``; and the ``neighbours``, in processes of
    their own, over the same seconds. Returns what each group measured."""
    neighbours = neighbours or Neighbours()
    groups = [browsers[i::processes] for i in range(processes)]
    engineer = bool(neighbours.engineer_token or neighbours.tricklers)
    size = processes + engineer + bool(neighbours.wrong_logins)
    # Forked, not spawned: a spawned process imports the app again, seconds of a loaded CPU per
    # process and run; this process holds no threads nor connections here.
    context = multiprocessing.get_context("fork")
    # One task per process, each waiting at the barrier for the others: no process takes two.
    barrier = context.Barrier(size)
    with context.Pool(size, initializer=_join_start_line, initargs=(barrier,)) as pool:
        annotators = [
            pool.apply_async(_annotator_process, (url, group, dataset_id, mode, seconds))
            for group in groups
        ]
        probing = (
            pool.apply_async(_engineer_process, (url, neighbours, seconds)) if engineer else None
        )
        flooding = (
            pool.apply_async(_wrong_login_process, (url, neighbours, seconds))
            if neighbours.wrong_logins
            else None
        )
        result = RunResult(Recorder(), Recorder(), Recorder())
        wait = START_TIMEOUT + seconds + 120
        for pending in annotators:
            result.annotators.merge(pending.get(timeout=wait))
        if probing is not None:
            probe, tricklers = probing.get(timeout=wait)
            result.engineer.merge(probe)
            result.neighbours.merge(tricklers)
        if flooding is not None:
            result.neighbours.merge(flooding.get(timeout=wait))
    return result
