"""Real processes on 127.0.0.1: ``uvicorn app.main:create_app`` on a free port, ready once
``/healthz`` answers, and ``thresher worker`` processes on the CPU.

The server runs in a session of its own, so that stopping it stops every uvicorn worker process
it started; its output goes to a log file that :meth:`ServerProcess.log` reads back.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
#: The signing key of a throwaway server: long enough for the settings' check, secret to no one.
SECRET = "bench-secret-key-that-is-long-enough-0123456789"  # noqa: S105


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str, every: float = 0.2) -> Any:
    """Calls ``condition`` every ``every`` seconds until it returns something truthy, and returns
    that; raises AssertionError (a test's failure) naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class ServerProcess:
    """``uvicorn app.main:create_app`` with ``workers`` processes on a free port of 127.0.0.1,
    on the database at ``db_url``; its output in ``log_path`` (default
    ``<data_dir>/../server-<port>.log``). :meth:`config` is the ``THRESHER_*`` environment a
    subclass adds to; ``extra_env`` overrides it. A context manager: started on entry, stopped
    on exit."""

    db_url: str
    data_dir: Path
    workers: int = 1
    access_log: bool = True
    secret_key: str = SECRET
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, str]:
        return {
            "THRESHER_DATABASE_URL": self.db_url,
            "THRESHER_DATA_DIR": str(self.data_dir),
            "THRESHER_SECRET_KEY": self.secret_key,
        }

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.config(), **self.extra_env}

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
            "--log-level", "warning", *([] if self.access_log else ["--no-access-log"]),
        ]  # fmt: skip

    def start(self, *, timeout: float = 60) -> None:
        """Starts the server and returns once ``/healthz`` answers 200."""
        if self.log_path is None:
            self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._healthy, timeout=timeout, what="the server to answer")

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the server exited: {self.log()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        """SIGTERM to the server and its worker processes; SIGKILL after 30 s."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def log(self) -> str:
        """The last 5,000 characters of the server's output."""
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path else ""

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_worker(
    server: ServerProcess,
    token: str,
    work_dir: Path,
    name: str,
    *extra: str,
    threads: int | None = 1,
    poll_max: float = 0.5,
    embeddings: Path | None = None,
) -> WorkerProcess:
    """A CPU worker process of ``server`` with ``threads`` torch threads (None: torch's
    default), polling at most every ``poll_max`` seconds, its cache in
    ``<work_dir>/cache-NAME``, logging to ``<work_dir>/worker-NAME.log``, its embedding cache in
    ``embeddings`` (default: the user's). ``extra``: more ``thresher worker`` arguments."""
    cache = work_dir / f"cache-{name}"
    log_path = work_dir / f"worker-{name}.log"
    env = {**os.environ, "THRESHER_WORKER_TOKEN": token}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if embeddings is not None:
        env["THRESHER_EMBEDDINGS_DIR"] = str(embeddings)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "ml.worker", "--server", server.url, "--device", "cpu",
                "--name", name, "--cache-dir", str(cache), "--poll-max", str(poll_max),
                # Exit with this process, should it die without stopping the worker.
                "--watch-parent", str(os.getpid()),
                *extra,
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    return WorkerProcess(process, log_path)
