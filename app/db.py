"""Engine and session factory, built at start-up; the per-request session dependency.

**Reads take no write lock.** A request that only reads (GET, HEAD, OPTIONS) runs in a
read-only transaction: on SQLite it begins DEFERRED, so it never waits for, or holds up, a
writer; on both databases a flush in it raises :class:`ReadOnlyTransaction`, so a GET that
starts writing is caught by the tests rather than by a "database is locked" in production.
Writes begin IMMEDIATE on SQLite (see ``_begin_sqlite_transaction``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager, nullcontext
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: The execution option (and ``Session.info`` key) that marks a read-only transaction.
READ_ONLY = "thresher_read_only"
#: The execution option of a write that would rather fail than wait for the write lock.
NO_WAIT = "thresher_no_wait"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Ids per ``IN (...)`` list: well under SQLite's variable limit.
CHUNK = 5_000

T = TypeVar("T")


class ReadOnlyTransaction(RuntimeError):
    """A read-only transaction tried to write: a bug in the code, never the client's fault."""


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size`` (for ``IN`` lists and bulk writes)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``. SQLite connections get WAL, foreign keys and a busy timeout."""
    if is_sqlite(url):
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **kwargs,
        )
        event.listen(engine, "connect", _configure_sqlite_connection)
        event.listen(engine, "begin", _begin_sqlite_transaction)
        return engine
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 20)
        kwargs.setdefault("max_overflow", 20)
        kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling defers BEGIN until the first write, which lets two
    # writers deadlock on lock upgrade; we issue BEGIN ourselves (see _begin_sqlite_transaction).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _begin_sqlite_transaction(connection: Any) -> None:
    if connection.get_execution_options().get(READ_ONLY):
        # A reader sees a snapshot (WAL) and needs no lock: writers go on while it reads.
        connection.exec_driver_sql("BEGIN")
        return
    # IMMEDIATE takes the write lock up front, so a read-then-write transaction (a lease, an
    # import) waits its turn instead of failing with "database is locked" halfway through.
    if not connection.get_execution_options().get(NO_WAIT):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        return
    connection.exec_driver_sql("PRAGMA busy_timeout=0")
    try:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    finally:
        connection.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    event.listen(factory, "before_flush", _refuse_writes_when_read_only)
    return factory


def _refuse_writes_when_read_only(session: Session, _context: Any, _instances: Any) -> None:
    if session.info.get(READ_ONLY) and (session.new or session.dirty or session.deleted):
        raise ReadOnlyTransaction("a read-only transaction tried to write")


@contextmanager
def transaction(
    factory: sessionmaker[Session], *, read_only: bool = False, no_wait: bool = False
) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back when it raises.

    ``read_only`` transactions take no write lock on SQLite and may not write (see above).
    ``no_wait`` ones fail with OperationalError at once, rather than wait, when SQLite's write
    lock is taken: for writes worth skipping under contention."""
    with factory(info={READ_ONLY: read_only}) as session:
        if read_only or no_wait:
            # Procures the connection now, with the option the begin listener reads.
            session.connection(execution_options={READ_ONLY if read_only else NO_WAIT: True})
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def write_gate(url: str) -> asyncio.Lock | None:
    """The app's turnstile for write transactions: on SQLite, one at a time per process.

    SQLite has one writer at a time anyway; what the turnstile changes is *where* the others
    wait. Without it, each waits in ``BEGIN IMMEDIATE`` on a thread of the request pool; once
    every thread waits there, the writer that holds the lock cannot get a thread to finish on,
    and nothing moves until the busy timeout breaks the jam. Waiting on the event loop costs
    no thread. PostgreSQL locks rows, not the database: no turnstile."""
    return asyncio.Lock() if is_sqlite(url) else None


def write_turn(request: Request) -> AbstractAsyncContextManager[object]:
    """Waits for the app's write gate, where it has one (see :func:`write_gate`)."""
    gate: asyncio.Lock | None = request.app.state.write_gate
    return nullcontext() if gate is None else gate


async def hold_write_gate(request: Request) -> AsyncIterator[None]:
    """For a request that writes: its turn at the app's write gate, until its transaction
    has committed or rolled back."""
    if request.method in SAFE_METHODS:
        yield
        return
    async with write_turn(request):
        yield


WriteGate = Annotated[None, Depends(hold_write_gate, scope="function")]


def get_session(request: Request, _: WriteGate) -> Iterator[Session]:
    """One session per request: committed when the route returns, rolled back if it raises.
    Requests that only read (GET, HEAD) get a read-only one; the others wait their turn at
    the write gate first."""
    read_only = request.method in SAFE_METHODS
    with transaction(request.app.state.session_factory, read_only=read_only) as session:
        yield session


# scope="function" commits before the response is sent, so a 2xx always means "stored".
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
