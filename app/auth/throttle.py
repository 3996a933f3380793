"""Sign-in throttling: failed sign-ins per account and per client address, with backoff.

The first ``free`` failures of a key cost nothing; each later one closes the key for a delay
that doubles, from ``base_delay`` up to ``max_delay``. While a key is closed, sign-ins that
match it are refused (429) before the password is checked, so guessing costs the server no
hashing either. A successful sign-in opens the account again, and a key forgets its failures
``max_delay`` after the last one, so the real user is never locked out for longer than that.

A refused sign-in is answered only after ``refusal_delay``: a guesser that retries at once,
whatever Retry-After says, then costs a few requests a second instead of hundreds (at most
``max_held`` are held; beyond that they are answered at once). A closed key is logged once per
closing, not once per refusal, so a flood does not flood the log.

The state is per server process (several processes each count on their own): it bounds how
fast one process can be made to check passwords, which is what the limit is for.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from app.errors import AppError
from app.logging import get_logger

log = get_logger(__name__)


class TooManySignIns(AppError):
    status_code = 429
    code = "too_many_sign_ins"


@dataclass
class _Failures:
    count: int
    last: float
    closed_until: float
    logged_until: float = 0.0


class LoginThrottle:
    """Counts failed sign-ins by account name and by client address (thread-safe)."""

    def __init__(
        self,
        *,
        free: int = 5,
        base_delay: float = 2.0,
        max_delay: float = 900.0,
        max_keys: int = 100_000,
        refusal_delay: float = 1.0,
        max_held: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = free
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_keys = max_keys
        self.refusal_delay = refusal_delay
        self.max_held = max_held
        self._held = 0
        self.clock = clock
        self._lock = threading.Lock()
        self._keys: OrderedDict[str, _Failures] = OrderedDict()

    @staticmethod
    def keys(username: str, client: str | None) -> list[str]:
        return [f"user:{username.strip().lower()}", f"client:{client or '?'}"]

    def check(self, username: str, client: str | None) -> None:
        """Raises :class:`TooManySignIns` while the account or the client is closed."""
        now = self.clock()
        with self._lock:
            closed = [
                entry
                for key in self.keys(username, client)
                if (entry := self._live(key, now)) is not None and entry.closed_until > now
            ]
            first_refusal = any(entry.logged_until != entry.closed_until for entry in closed)
            for entry in closed:
                entry.logged_until = entry.closed_until
        if closed:
            wait = max(1, round(max(entry.closed_until for entry in closed) - now))
            if first_refusal:
                log.warning("auth.login.throttled", username=username, client=client, wait=wait)
            raise TooManySignIns(f"too many failed sign-ins: try again in {wait} s", wait=wait)

    async def hold_refusal(self) -> None:
        """Waits ``refusal_delay`` before a refusal is answered, unless ``max_held`` already
        wait. Call from the event loop only (the count is not locked)."""
        if self._held >= self.max_held:
            return
        self._held += 1
        try:
            await asyncio.sleep(self.refusal_delay)
        finally:
            self._held -= 1

    def failed(self, username: str, client: str | None) -> None:
        now = self.clock()
        with self._lock:
            counts = []
            for key in self.keys(username, client):
                entry = self._live(key, now) or _Failures(0, now, now)
                entry.count += 1
                entry.last = now
                over = entry.count - self.free
                if over > 0:
                    delay = min(self.base_delay * 2 ** (over - 1), self.max_delay)
                    entry.closed_until = now + delay
                self._keys[key] = entry
                self._keys.move_to_end(key)
                counts.append(entry.count)
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        log.info("auth.login.failed", username=username, client=client, failures=max(counts))

    def succeeded(self, username: str, client: str | None) -> None:
        with self._lock:
            for key in self.keys(username, client):
                self._keys.pop(key, None)

    def _live(self, key: str, now: float) -> _Failures | None:
        entry = self._keys.get(key)
        if entry is not None and now - entry.last > self.max_delay:
            del self._keys[key]
            return None
        return entry
