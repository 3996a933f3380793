"""Who else calls the server while the annotators of the review benchmark work: an engineer
with an API token calling ``GET /api/me`` at a steady rate, clients sending wrong passwords to
the sign-in form, and clients trickling request bodies a byte at a time over raw sockets.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.review_annotators import Recorder
from bench.review_setup import Browser

LOGIN_CSRF_COOKIE = "thresher_login_csrf"
#: What a trickler declares as its body's length; it never sends that many bytes.
TRICKLE_BYTES = 10_000


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


def trickle_headers(path: str, browser: Browser | None) -> dict[str, str]:
    if path == "/login" or browser is None:
        return {"Content-Type": "application/x-www-form-urlencoded"}
    return {
        "Content-Type": "application/json",
        "Cookie": f"thresher_session={browser.cookie}",
        "X-CSRF-Token": browser.csrf,
    }
