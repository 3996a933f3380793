"""The review benchmark's clients, each group in its own processes, all started together:

- annotators, signed in with browser sessions, at human pace or flat out;
- an engineer with an API token calling ``GET /api/me`` at a steady rate;
- hostile neighbours: clients sending wrong passwords to the sign-in form, and clients
  trickling request bodies a byte at a time over raw sockets.

Every client measures its own calls; a process returns one :class:`Recorder`.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.review_setup import Browser

LOGIN_CSRF_COOKIE = "thresher_login_csrf"
#: What a trickler declares as its body's length; it never sends that many bytes.
TRICKLE_BYTES = 10_000
#: Seconds a client process may take to start.
START_TIMEOUT = 120.0


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


# --- annotators ---------------------------------------------------------------------------------


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


# --- the engineer and the hostile neighbours ----------------------------------------------------


@dataclass(frozen=True)
class Neighbours:
    """Who else calls the server while the annotators work.

    ``engineer_token``: an engineer's API token, calling ``GET /api/me`` every
    ``probe_period`` seconds. ``wrong_logins`` clients send wrong passwords to the sign-in form
    for the names in ``login_targets`` ("" stands for a new random name each time),
    ``login_rate`` times a second each (0: as fast as the server answers), from
    ``login_addresses`` client addresses in turn (``X-Forwarded-For``, which uvicorn trusts from
    127.0.0.1 as from a reverse proxy; 0: one address per client). ``tricklers`` clients send a
    POST whose declared body never fully comes, a byte at a time (see :func:`trickler_plan`);
    half of them signed in as ``trickler``, half anonymous on the sign-in form, the one route
    that reads an anonymous body.
    """

    engineer_token: str | None = None
    probe_period: float = 0.5
    wrong_logins: int = 0
    login_targets: tuple[str, ...] = ("",)
    login_rate: float = 0.0
    login_addresses: int = 0
    tricklers: int = 0
    trickler: Browser | None = None

    def login_address(self, client: int) -> str:
        """The address the ``client``-th wrong-sign-in client claims (a documentation range)."""
        addresses = self.login_addresses or self.wrong_logins
        return f"198.51.100.{client % addresses + 1}"


def trickler_plan(index: int) -> tuple[str, float]:
    """The ``index``-th trickler's route and seconds between bytes: alternately the sign-in form
    (anonymous) and the decisions API (signed in); the first pair a byte a second (under the
    pause limit, so only the total limit stops them), the next pair a byte every 20 s (over the
    15 s pause limit)."""
    path = ("/login", "/api/review/decisions")[index % 2]
    interval = (1.0, 20.0)[(index // 2) % 2]
    return path, interval


async def probe_me(
    url: str, token: str, *, period: float, until: float, recorder: Recorder
) -> None:
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        next_at = time.monotonic() + random.uniform(0, period)
        while next_at < until:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += period
            started = time.perf_counter()
            try:
                response = await client.get("/api/me")
            except httpx.HTTPError as exc:
                recorder.error(f"GET /api/me: {type(exc).__name__}")
                continue
            recorder.add("GET /api/me (engineer)", time.perf_counter() - started)
            if response.status_code != 200:
                recorder.error(f"GET /api/me: HTTP {response.status_code}")


async def send_wrong_logins(
    url: str, neighbours: Neighbours, *, address: str, until: float, recorder: Recorder, seed: int
) -> None:
    """Wrong passwords, one sign-in at a time, until ``until``; each answer is recorded under its
    status (401: the password was checked; 429: refused by the throttle before checking)."""
    rng = random.Random(seed)
    async with httpx.AsyncClient(
        base_url=url, headers={"X-Forwarded-For": address}, timeout=30
    ) as client:
        csrf = ""
        while time.monotonic() < until:
            tick = time.monotonic()
            try:
                if not csrf:
                    page = await client.get("/login")
                    csrf = page.cookies.get(LOGIN_CSRF_COOKIE) or ""
                    if not csrf:
                        recorder.add(f"sign-in form → {page.status_code}", 0.0)
                        await asyncio.sleep(0.5)
                        continue
                username = rng.choice(neighbours.login_targets) or f"nobody{rng.randrange(10**9)}"
                started = time.perf_counter()
                response = await client.post(
                    "/login",
                    data={
                        "username": username,
                        "password": f"guess {rng.randrange(10**9)}",
                        "csrf_token": csrf,
                        "next": "/",
                    },
                )
            except httpx.HTTPError as exc:
                recorder.add(f"wrong sign-in → {type(exc).__name__}", 0.0)
                await asyncio.sleep(0.5)
                continue
            recorder.add(f"wrong sign-in → {response.status_code}", time.perf_counter() - started)
            # Every answer sets a fresh form token.
            csrf = response.cookies.get(LOGIN_CSRF_COOKIE) or csrf
            if neighbours.login_rate > 0:
                await asyncio.sleep(max(0.0, tick + 1 / neighbours.login_rate - time.monotonic()))


async def trickle_bodies(
    url: str,
    *,
    path: str,
    headers: dict[str, str],
    interval: float,
    until: float,
    recorder: Recorder,
) -> None:
    """Opens a connection, declares a body of :data:`TRICKLE_BYTES` bytes and sends one byte
    every ``interval`` seconds until the server answers or closes, then starts again. Each
    connection is recorded under its outcome, with how long the server kept it open."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    label = f"trickle {path}, 1 B/{interval:g} s"
    head = "".join(
        f"{name}: {value}\r\n"
        for name, value in {
            "Host": f"{host}:{port}",
            "Content-Length": str(TRICKLE_BYTES),
            **headers,
        }.items()
    )
    while time.monotonic() < until:
        opened = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            recorder.add(f"{label} → {type(exc).__name__}", 0.0)
            await asyncio.sleep(1)
            continue
        answer = asyncio.ensure_future(reader.readline())  # the status line; b"" when closed
        outcome = "open at the end"
        try:
            writer.write(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode())
            while (left := until - time.monotonic()) > 0:
                done, _ = await asyncio.wait({answer}, timeout=min(interval, left))
                if done:
                    line = answer.result()
                    outcome = line.decode().split()[1] if line.startswith(b"HTTP/") else "closed"
                    break
                writer.write(b" ")
                await writer.drain()
        except OSError as exc:
            outcome = type(exc).__name__
        finally:
            answer.cancel()
            writer.close()
        recorder.add(f"{label} → {outcome}", time.monotonic() - opened)


def _trickle_headers(path: str, browser: Browser | None) -> dict[str, str]:
    if path == "/login" or browser is None:
        return {"Content-Type": "application/x-www-form-urlencoded"}
    return {
        "Content-Type": "application/json",
        "Cookie": f"thresher_session={browser.cookie}",
        "X-CSRF-Token": browser.csrf,
    }


# --- processes ----------------------------------------------------------------------------------


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
            headers = _trickle_headers(path, neighbours.trickler)
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
