"""The review benchmark's annotators: signed in with a browser session (cookie and CSRF
header), leasing and deciding at human pace or flat out, each call measured by the client into a
:class:`Recorder`.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.review_setup import Browser


@dataclass
class Recorder:
    latencies: dict[str, list[float]] = field(default_factory=dict)  # ms
    decisions: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.latencies.setdefault(name, []).append(seconds * 1000)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def merge(self, other: Recorder) -> None:
        for name, values in other.latencies.items():
            self.latencies.setdefault(name, []).extend(values)
        self.decisions += other.decisions
        for name, count in other.errors.items():
            self.errors[name] = self.errors.get(name, 0) + count


async def _sleep(seconds: float, until: float) -> None:
    """Sleeps ``seconds``, but not past ``until``."""
    await asyncio.sleep(max(0.0, min(seconds, until - time.monotonic())))


def client_for(url: str, browser: Browser) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        cookies={"thresher_session": browser.cookie},
        headers={"X-CSRF-Token": browser.csrf},
        timeout=30,
        limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
    )


class Annotator:
    def __init__(self, client: httpx.AsyncClient, recorder: Recorder, dataset_id: int, seed: int):
        self.client = client
        self.recorder = recorder
        self.dataset_id = dataset_id
        self.rng = random.Random(seed)

    async def call(self, name: str, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        started = time.perf_counter()
        try:
            response = await self.client.post(path, json=body)
        except httpx.HTTPError as exc:
            self.recorder.error(f"{name}: {type(exc).__name__}")
            return None
        self.recorder.add(name, time.perf_counter() - started)
        if response.status_code != 200:
            self.recorder.error(f"{name}: HTTP {response.status_code}")
            return None
        return response.json()  # type: ignore[no-any-return]

    async def lease(self, name: str, kind: str, n: int) -> list[dict[str, Any]]:
        body = {"kind": kind, "dataset_id": self.dataset_id, "n": n}
        found = await self.call(name, "/api/review/leases", body)
        if found is not None and not found["tasks"]:
            # The queue ran dry: the load was too small for the run, and the figures too few.
            self.recorder.error(f"{name}: queue empty")
        return found["tasks"] if found else []

    def label_decision(self, task: dict[str, Any]) -> dict[str, Any]:
        roll = self.rng.random()
        decision: dict[str, Any] = {
            "task_id": task["id"],
            "lease_version": task["lease_version"],
            "idempotency_key": uuid.uuid4().hex,
            "seconds": round(self.rng.uniform(0.5, 3), 3),
        }
        suggested = [
            s["class_id"] for s in task["suggestions"] if s["class_id"] != task["given_class_id"]
        ]
        if roll < 0.6:
            decision["verdict"] = "accept"
        elif roll < 0.8 and suggested:
            decision["verdict"] = "relabel"
            decision["class_id"] = suggested[0]
        elif roll < 0.9:
            decision["verdict"] = "junk"
        else:
            decision["verdict"] = "unsure"
        return decision

    def grid_decisions(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        page = uuid.uuid4().hex[:16]
        return [
            {
                "task_id": task["id"],
                "lease_version": task["lease_version"],
                "verdict": "junk" if self.rng.random() < 0.1 else "not_junk",
                "idempotency_key": f"{page}-{task['id']}",
                "seconds": 0.2,
            }
            for task in tasks
        ]

    async def decide(self, name: str, decisions: list[dict[str, Any]]) -> None:
        if await self.call(name, "/api/review/decisions", {"decisions": decisions}):
            self.recorder.decisions += len(decisions)

    async def label_at_pace(self, until: float, period: float) -> None:
        await _sleep(self.rng.uniform(0, period), until)
        while time.monotonic() < until:
            tick = time.monotonic()
            tasks = await self.lease("lease 1 (label)", "label_check", 1)
            if not tasks:
                return
            await asyncio.sleep(max(0.0, tick + period * 0.8 - time.monotonic()))
            await self.decide("decide 1 (label)", [self.label_decision(tasks[0])])
            await _sleep(tick + period - time.monotonic(), until)

    async def grid_at_pace(self, until: float, period: float) -> None:
        await _sleep(self.rng.uniform(0, period), until)
        while time.monotonic() < until:
            tick = time.monotonic()
            tasks = await self.lease("lease 48 (grid)", "junk_check", 48)
            if not tasks:
                return
            await _sleep(tick + period * 0.9 - time.monotonic(), until)
            if time.monotonic() >= until:
                # The run is over: the page is left as a closed tab leaves it (the lease lapses),
                # so that no call is measured after the other clients have stopped.
                return
            await self.decide("decide 48 (grid)", self.grid_decisions(tasks))
            await _sleep(tick + period - time.monotonic(), until)

    async def singles_flat_out(self, until: float) -> None:
        while time.monotonic() < until:
            tasks = await self.lease("lease 10", "label_check", 10)
            if not tasks:
                return
            for task in tasks:
                await self.decide("decide 1", [self.label_decision(task)])

    async def grids_flat_out(self, until: float) -> None:
        while time.monotonic() < until:
            tasks = await self.lease("lease 48", "junk_check", 48)
            if not tasks:
                return
            await self.decide("decide 48", self.grid_decisions(tasks))
