"""Worker processes started by ``thresher serve --local-workers N`` against the server itself.

They run as a dedicated account, ``local-workers`` (an engineer-role account, since worker tokens
belong to engineers and admins only, that nobody can sign in as: its password is random and never
shown), with one worker token per ``serve`` run:

* the token lives only in memory and in the workers' environment (not on their command line,
  where ``ps`` would show it);
* it is revoked when :meth:`LocalWorkers.stop` runs, and a token left behind by a server that
  was killed is revoked by the next start;
* each worker exits when the server process that started it is gone (``--watch-parent``).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from app.auth import repository as auth_repository
from app.auth import service as auth_service
from app.db import create_db_engine, create_session_factory, transaction
from app.errors import AppError
from app.logging import get_logger
from app.models import ApiToken, Role, TokenScope, utcnow
from app.security import generate_password
from app.settings import Settings

log = get_logger(__name__)

LOCAL_WORKER_USER = "local-workers"
LOCAL_TOKEN_NAME = "local workers (thresher serve)"  # noqa: S105 (a label, not a secret)


class LocalWorkersUnavailable(AppError):
    code = "local_workers_unavailable"


@dataclass
class LocalWorkers:
    """The running local workers; :meth:`stop` ends them and revokes their token."""

    settings: Settings
    token_id: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (a running job is handed back at its next step), then SIGKILL after
        ``timeout`` seconds; then revokes the token."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _revoke(self.settings, token_ids=[self.token_id])
        log.info("jobs.local_workers.stopped", count=len(self.processes))


def server_url(settings: Settings) -> str:
    host = settings.host
    if host in ("0.0.0.0", ""):  # noqa: S104 (comparing, not binding)
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    return f"http://{host}:{settings.port}"


def start_local_workers(settings: Settings, n: int, *, device: str = "auto") -> LocalWorkers:
    """Starts ``n`` worker processes against this server (call before serving: they retry
    until it answers). Raises LocalWorkersUnavailable when the ML stack is not installed."""
    if importlib.util.find_spec("torch") is None:
        raise LocalWorkersUnavailable(
            "local workers need the ML stack: pip install 'thresher[ml]' (or run without "
            "--local-workers and start workers elsewhere)"
        )
    token_id, secret = _create_token(settings)
    handle = LocalWorkers(settings=settings, token_id=token_id)
    env = {**os.environ, "THRESHER_WORKER_TOKEN": secret}
    cache_dir = (settings.data_dir / "worker").resolve()
    for index in range(n):
        command = [
            sys.executable,
            "-m",
            "ml.worker",
            "--server",
            server_url(settings),
            "--device",
            device,
            "--name",
            f"local-{index + 1}",
            "--cache-dir",
            str(cache_dir),
            "--poll-max",
            "5",
            "--watch-parent",
            str(os.getpid()),
        ]
        handle.processes.append(subprocess.Popen(command, env=env))
    log.info("jobs.local_workers.started", count=n, server=server_url(settings))
    return handle


def _create_token(settings: Settings) -> tuple[int, str]:
    engine = create_db_engine(settings.resolved_database_url)
    try:
        with transaction(create_session_factory(engine)) as session:
            token, secret = create_local_worker_token(session)
            return token.id, secret
    finally:
        engine.dispose()


def create_local_worker_token(session: Session) -> tuple[ApiToken, str]:
    """A new worker token for the ``local-workers`` account, created as an engineer if missing.
    An account left an annotator by an older version is made an engineer, since a worker token of
    an annotator is refused; tokens left behind by earlier runs are revoked."""
    user = auth_repository.get_user_by_username(session, LOCAL_WORKER_USER)
    if user is None:
        user, _ = auth_service.create_user(
            session, username=LOCAL_WORKER_USER, role=Role.ENGINEER, password=generate_password()
        )
    elif not user.role.includes(Role.ENGINEER):
        auth_service.update_user(session, user=user, by=None, role=Role.ENGINEER)
    stale = auth_repository.revoke_tokens_named(
        session, user_id=user.id, name=LOCAL_TOKEN_NAME, now=utcnow()
    )
    if stale:
        log.info("jobs.local_workers.stale_tokens_revoked", count=stale)
    return auth_service.create_token(
        session, user=user, name=LOCAL_TOKEN_NAME, scope=TokenScope.WORKER
    )


def _revoke(settings: Settings, *, token_ids: list[int]) -> None:
    engine = create_db_engine(settings.resolved_database_url)
    try:
        with transaction(create_session_factory(engine)) as session:
            auth_repository.revoke_tokens(session, token_ids, now=utcnow())
    finally:
        engine.dispose()


def active_local_tokens(settings: Settings) -> int:
    """How many local-worker tokens are not revoked (for tests and diagnostics)."""
    engine = create_db_engine(settings.resolved_database_url)
    try:
        with transaction(create_session_factory(engine)) as session:
            return auth_repository.count_active_tokens_named(session, LOCAL_TOKEN_NAME)
    finally:
        engine.dispose()
