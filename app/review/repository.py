"""Every query of the review queue.

Leases and decisions are the hot path: a few set-based Core statements each, no ORM objects.
On PostgreSQL a lease takes rows with ``FOR UPDATE SKIP LOCKED`` and a decision locks its
tasks with ``FOR UPDATE`` (in id order, so two batches never deadlock); on SQLite every
transaction already holds the write lock (``BEGIN IMMEDIATE``), and ``FOR UPDATE`` is left out.

The pipeline reads the review tables through the last section, which also withdraws the tasks
a round queued and no longer needs (:func:`cancel_pending_tasks`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Executable,
    Integer,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    case,
    exists,
    false,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from app.models import (
    Base,
    Dataset,
    LabelClass,
    ReviewDecision,
    ReviewTask,
    Sample,
    TaskKind,
    TaskState,
    User,
    Verdict,
)
from app.pipeline.rules import ClassVote

#: Ids per ``IN (...)`` list: well under SQLite's variable limit.
CHUNK = 5_000

T = TypeVar("T")

_T = ReviewTask
_D = ReviewDecision


def cast_table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


_TASKS = cast_table(ReviewTask)
_DECISIONS = cast_table(ReviewDecision)
_SAMPLE_ROWS = cast_table(Sample)
_t = _TASKS.c
_d = _DECISIONS.c

_DECISION_COLUMNS = (
    _d.id,
    _d.task_id,
    _d.kind,
    _d.sample_id,
    _d.class_id,
    _d.user_id,
    _d.verdict,
    _d.seconds,
    _d.idempotency_key,
    _d.supersedes_id,
    _d.created_at,
)


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class TaskRow(NamedTuple):
    """A task's columns as a lease hands them out, with its sample's given class."""

    id: int
    dataset_id: int
    kind: TaskKind
    sample_id: int | None
    class_id: int | None
    priority: float
    score: float | None
    source: str
    reason: str
    suggestions: list[list[float]] | None
    lease_version: int
    lease_expires_at: datetime | None
    given_class_id: int | None


class LockedTask(NamedTuple):
    """What a decision needs to know about its task, read under a row lock."""

    id: int
    dataset_id: int
    kind: TaskKind
    sample_id: int | None
    class_id: int | None
    state: TaskState
    lease_owner_id: int | None
    lease_version: int
    given_class_id: int | None


class DecisionRow(NamedTuple):
    id: int
    task_id: int
    kind: TaskKind
    sample_id: int | None
    class_id: int | None
    user_id: int
    verdict: Verdict
    seconds: float
    idempotency_key: str
    supersedes_id: int | None
    created_at: datetime


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


# --- lookups ------------------------------------------------------------------------------------


def get_dataset(session: Session, dataset_id: int) -> Dataset | None:
    return session.get(Dataset, dataset_id)


def get_dataset_by_name(session: Session, name: str) -> Dataset | None:
    return session.scalars(select(Dataset).where(Dataset.name == name)).one_or_none()


def existing_sample_ids(session: Session, dataset_id: int, ids: Collection[int]) -> set[int]:
    found: set[int] = set()
    for part in chunks(sorted(ids)):
        found.update(
            session.scalars(
                select(Sample.id).where(Sample.dataset_id == dataset_id, Sample.id.in_(part))
            )
        )
    return found


def existing_class_ids(session: Session, dataset_id: int, ids: Collection[int]) -> set[int]:
    found: set[int] = set()
    for part in chunks(sorted(ids)):
        found.update(
            session.scalars(
                select(LabelClass.id).where(
                    LabelClass.dataset_id == dataset_id, LabelClass.id.in_(part)
                )
            )
        )
    return found


def class_names(session: Session, ids: Collection[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = session.execute(select(LabelClass.id, LabelClass.name).where(LabelClass.id.in_(ids)))
    return {class_id: name for class_id, name in rows}


def class_sizes(session: Session, ids: Collection[int]) -> dict[int, tuple[str, int]]:
    """Name and usable sample count (as of the last import) of each class."""
    if not ids:
        return {}
    rows = session.execute(
        select(LabelClass.id, LabelClass.name, LabelClass.sample_count).where(
            LabelClass.id.in_(ids)
        )
    )
    return {class_id: (name, count) for class_id, name, count in rows}


def dataset_classes(session: Session, dataset_id: int) -> list[tuple[int, str]]:
    rows = session.execute(
        select(LabelClass.id, LabelClass.name)
        .where(LabelClass.dataset_id == dataset_id)
        .order_by(LabelClass.name)
    )
    return [(class_id, name) for class_id, name in rows]


def usable_sample_ids(session: Session, dataset_id: int) -> list[int]:
    """Every decodable, present sample of the dataset, in id order."""
    return list(
        session.scalars(
            select(Sample.id)
            .where(
                Sample.dataset_id == dataset_id, Sample.error.is_(None), Sample.missing.is_(False)
            )
            .order_by(Sample.id)
        )
    )


def usernames(session: Session, user_ids: Collection[int]) -> dict[int, str]:
    if not user_ids:
        return {}
    rows = session.execute(select(User.id, User.username).where(User.id.in_(user_ids)))
    return {user_id: name for user_id, name in rows}


# --- creating tasks -----------------------------------------------------------------------------


def insert_tasks(session: Session, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Inserts tasks, skipping any already queued for the same (kind, subject, source) or the
    same origin; returns the ids of the rows inserted."""
    if not rows:
        return []
    dialect = _dialect(session)
    statement: Any
    if dialect == "postgresql":
        statement = postgresql.insert(_T).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(_T).on_conflict_do_nothing()
    else:  # pragma: no cover - the two supported engines are above
        raise NotImplementedError(dialect)
    ids: list[int] = []
    for part in chunks(rows, 1_000):
        ids.extend(session.scalars(statement.returning(_T.id), list(part)))
    return ids


def done_tasks_without_second_opinion(
    session: Session, dataset_id: int, kind: TaskKind
) -> list[tuple[int, int]]:
    """(task id, id of its current decider) of every decided first-opinion task that has no
    second-opinion task yet and whose decision stands (not undone)."""
    second = aliased(ReviewTask)
    current = _current_decision_ids(by=_D.task_id).subquery()
    rows = session.execute(
        select(_T.id, _D.user_id)
        .join(_D, _D.task_id == _T.id)
        .join(current, current.c.id == _D.id)
        .where(
            _T.dataset_id == dataset_id,
            _T.kind == kind,
            _T.state == TaskState.DONE,
            _T.origin_task_id.is_(None),
            ~exists().where(second.origin_task_id == _T.id),
        )
        .order_by(_T.id)
    )
    return [(task_id, user_id) for task_id, user_id in rows]


def task_copies(session: Session, task_ids: Collection[int]) -> list[dict[str, Any]]:
    """The columns a second-opinion copy takes from each task."""
    result: list[dict[str, Any]] = []
    for part in chunks(sorted(task_ids)):
        rows = session.execute(
            select(
                _T.id,
                _T.dataset_id,
                _T.kind,
                _T.sample_id,
                _T.class_id,
                _T.priority,
                _T.score,
                _T.source,
                _T.reason,
                _T.suggestions,
            ).where(_T.id.in_(part))
        )
        result.extend(row._asdict() for row in rows)
    return result


# --- leasing ------------------------------------------------------------------------------------
#
# The hot path (a lease, a decision) runs prebuilt Core statements on the tables: no ORM
# bookkeeping and no statement building per request. Task states are written into the SQL as
# literals so that PostgreSQL can match the partial indexes even in a generic (prepared) plan.

_IS_PENDING = _t.state == literal_column("'pending'")
_IS_LEASED = _t.state == literal_column("'leased'")

_LEASE_RETURNING = (
    _t.id,
    _t.dataset_id,
    _t.kind,
    _t.sample_id,
    _t.class_id,
    _t.priority,
    _t.score,
    _t.source,
    _t.reason,
    _t.suggestions,
    _t.lease_version,
    _t.lease_expires_at,
    # A scalar subquery, so that an UPDATE … RETURNING hands back the given class too.
    select(_SAMPLE_ROWS.c.class_id)
    .where(_SAMPLE_ROWS.c.id == _t.sample_id)
    .scalar_subquery()
    .label("given_class_id"),
)


def _held(by_dataset: bool, excluding: bool) -> Select[Any]:
    """The caller's live leases of the queue, best first, locked."""
    held = select(_t.id).where(
        _IS_LEASED,
        _t.lease_expires_at >= bindparam("p_now"),
        _t.lease_owner_id == bindparam("p_user"),
        _t.kind == bindparam("p_kind"),
    )
    if by_dataset:
        held = held.where(_t.dataset_id == bindparam("p_dataset"))
    if excluding:
        held = held.where(_t.id.not_in(bindparam("p_exclude", expanding=True)))
    return held.order_by(_t.priority.desc(), _t.id.desc()).limit(bindparam("p_n")).with_for_update()


_VOTE = _DECISIONS.alias("vote")
_VOTE_UNDONE = _DECISIONS.alias("vote_undone")


def _not_voted_on_the_class() -> ColumnElement[bool]:
    """The caller has no standing class_check vote on the task's class: a class drop needs
    distinct people, so nobody is asked about a class twice (read from the partial index
    ``ix_review_decisions_class_vote``)."""
    vote, undone = _VOTE.c, _VOTE_UNDONE.c
    return ~exists().where(
        vote.class_id == _t.class_id,
        vote.kind == literal_column("'class_check'"),
        vote.user_id == bindparam("p_user"),
        vote.verdict != literal_column("'undo'"),
        ~exists().where(undone.supersedes_id == vote.id),
    )


def _available(by_dataset: bool, limit: Any, voting: bool) -> Select[Any]:
    """The best ``limit`` tasks of the queue the caller may take: pending tasks and expired
    leases, each read from its own partial index, skipping rows other transactions hold.
    ``voting`` (class_check): not the classes the caller voted on already."""
    branches = []
    for state in (_IS_PENDING, and_(_IS_LEASED, _t.lease_expires_at < bindparam("p_now"))):
        branch = select(_t.id, _t.priority).where(
            state,
            _t.kind == bindparam("p_kind"),
            or_(_t.exclude_user_id.is_(None), _t.exclude_user_id != bindparam("p_user")),
        )
        if by_dataset:
            branch = branch.where(_t.dataset_id == bindparam("p_dataset"))
        if voting:
            branch = branch.where(_not_voted_on_the_class())
        best = (
            branch.order_by(_t.priority.desc(), _t.id.desc())
            .limit(limit)
            .with_for_update(skip_locked=True)
            .subquery()
        )
        branches.append(select(best.c.id, best.c.priority))
    both = union_all(*branches).subquery()
    return select(both.c.id).order_by(both.c.priority.desc(), both.c.id.desc()).limit(limit)


def _renew(held: Select[Any]) -> Update:
    return (
        update(_TASKS)
        .where(_t.id.in_(held.scalar_subquery()))
        .values(lease_expires_at=bindparam("p_expires"))
        .returning(*_LEASE_RETURNING)
    )


def _take(by_dataset: bool, limit: Any, voting: bool) -> Update:
    return (
        update(_TASKS)
        .where(_t.id.in_(_available(by_dataset, limit, voting).scalar_subquery()))
        .values(
            state=TaskState.LEASED,
            lease_owner_id=bindparam("p_user"),
            lease_expires_at=bindparam("p_expires"),
            lease_version=_t.lease_version + 1,
        )
        .returning(*_LEASE_RETURNING)
    )


@cache
def _sqlite_lease(by_dataset: bool, excluding: bool, voting: bool) -> tuple[Update, Update]:
    return _renew(_held(by_dataset, excluding)), _take(by_dataset, bindparam("p_n"), voting)


@cache
def _postgres_lease(by_dataset: bool, excluding: bool, voting: bool) -> Executable:
    """A whole lease in one statement (one round trip), as data-modifying CTEs: ``renewed``,
    the caller's own live leases; ``taken``, available tasks up to ``p_n`` in all. And
    ``no_flush``: this commit need not wait for the disk, since a lease lost in a crash costs
    nothing (the task is leased again, and a decision made under the lost lease is refused).
    """
    no_flush = select(func.set_config("synchronous_commit", "off", True).label("v")).cte("no_flush")
    held = _held(by_dataset, excluding).where(exists(select(no_flush.c.v)))
    renewed = _renew(held).cte("renewed")
    left: Any = bindparam("p_n") - select(func.count()).select_from(renewed).scalar_subquery()
    taken = _take(by_dataset, left, voting).cte("taken")
    return union_all(select(renewed), select(taken)).add_cte(no_flush)


def lease(
    session: Session,
    *,
    user_id: int,
    kind: TaskKind,
    dataset_id: int | None,
    exclude: Collection[int],
    n: int,
    now: datetime,
    expires_at: datetime,
) -> list[TaskRow]:
    """Leases up to ``n`` tasks of a queue to ``user_id`` until ``expires_at``: first its own
    live leases (other than ``exclude``), renewed, then available tasks by priority (newest
    first on ties): pending ones and expired leases of anyone. Rows other transactions hold
    are skipped, so concurrent leases never wait on each other nor take the same task. A
    class_check task is never handed to someone who voted on its class already.
    """
    params: dict[str, Any] = {
        "p_user": user_id,
        "p_kind": kind,
        "p_n": n,
        "p_now": now,
        "p_expires": expires_at,
    }
    if dataset_id is not None:
        params["p_dataset"] = dataset_id
    if exclude:
        params["p_exclude"] = list(exclude)
    by_dataset, excluding = dataset_id is not None, bool(exclude)
    voting = kind is TaskKind.CLASS_CHECK
    if _dialect(session) == "postgresql":
        rows = session.execute(_postgres_lease(by_dataset, excluding, voting), params)
        return [TaskRow._make(row) for row in rows]
    renew, take = _sqlite_lease(by_dataset, excluding, voting)
    found = [TaskRow._make(row) for row in session.execute(renew, params)]
    if len(found) < n:
        rows = session.execute(take, {**params, "p_n": n - len(found)})
        found += [TaskRow._make(row) for row in rows]
    return found


def renew_leases(
    session: Session, *, user_id: int, task_ids: Collection[int], expires_at: datetime
) -> list[int]:
    """Moves the expiry of ``user_id``'s leases on these tasks to ``expires_at``: live ones,
    and expired ones nobody took since (the owner is still ``user_id``). Returns their ids."""
    renewed: list[int] = []
    for part in chunks(sorted(task_ids)):
        renewed.extend(
            session.scalars(
                update(_TASKS)
                .where(_t.id.in_(part), _IS_LEASED, _t.lease_owner_id == user_id)
                .values(lease_expires_at=expires_at)
                .returning(_t.id)
            )
        )
    return renewed


def release_leases(
    session: Session, *, user_id: int, task_ids: Collection[int], now: datetime
) -> list[int]:
    """Ends ``user_id``'s live leases on these tasks now: anyone may lease them from then on,
    and until someone does the owner stays, so its decision or renewal is still taken.
    Returns the ids released."""
    released: list[int] = []
    for part in chunks(sorted(task_ids)):
        released.extend(
            session.scalars(
                update(_TASKS)
                .where(
                    _t.id.in_(part),
                    _IS_LEASED,
                    _t.lease_owner_id == user_id,
                    _t.lease_expires_at > now,
                )
                .values(lease_expires_at=now)
                .returning(_t.id)
            )
        )
    return released


def task_row(session: Session, task_id: int) -> TaskRow:
    return TaskRow._make(session.execute(select(*_LEASE_RETURNING).where(_t.id == task_id)).one())


def reopen_task(session: Session, *, task_id: int, user_id: int, expires_at: datetime) -> TaskRow:
    """Leases a decided task again to ``user_id`` (after an undo), under a new lease version."""
    row = session.execute(
        update(_TASKS)
        .where(_t.id == task_id)
        .values(
            state=TaskState.LEASED,
            lease_owner_id=user_id,
            lease_expires_at=expires_at,
            lease_version=_t.lease_version + 1,
            done_at=None,
        )
        .returning(*_LEASE_RETURNING)
    ).one()
    return TaskRow._make(row)


# --- deciding -----------------------------------------------------------------------------------

_PRIOR = _DECISIONS.alias("prior")
_LOCK = (
    select(
        _t.id,
        _t.dataset_id,
        _t.kind,
        _t.sample_id,
        _t.class_id,
        _t.state,
        _t.lease_owner_id,
        _t.lease_version,
        _SAMPLE_ROWS.c.class_id,
        *(_PRIOR.c[column.key] for column in _DECISION_COLUMNS),
    )
    .select_from(
        _TASKS.outerjoin(_SAMPLE_ROWS, _SAMPLE_ROWS.c.id == _t.sample_id).outerjoin(
            _PRIOR,
            and_(
                _PRIOR.c.task_id == _t.id,
                _PRIOR.c.user_id == bindparam("p_user"),
                _PRIOR.c.idempotency_key.in_(bindparam("p_keys", expanding=True)),
            ),
        )
    )
    .where(_t.id.in_(bindparam("p_ids", expanding=True)))
    .order_by(_t.id)
    .with_for_update(of=_TASKS)
)
_LOCKED_WIDTH = len(LockedTask._fields)
_BY_KEY = select(*_DECISION_COLUMNS).where(
    _d.user_id == bindparam("p_user"), _d.idempotency_key.in_(bindparam("p_keys", expanding=True))
)
_INSERT_DECISIONS = insert(_DECISIONS).returning(*_DECISION_COLUMNS, sort_by_parameter_order=True)
_MARK_DONE = (
    update(_TASKS)
    .where(_t.id.in_(bindparam("p_ids", expanding=True)))
    .values(state=TaskState.DONE, done_at=bindparam("p_now"))
)


def lock_tasks(
    session: Session, task_ids: Collection[int], *, user_id: int, keys: Collection[str]
) -> tuple[dict[int, LockedTask], dict[str, DecisionRow]]:
    """The tasks, each with its sample's given class, row-locked (in id order) until commit;
    and, in the same statement, this user's decisions on them made with any of ``keys``.

    Those decisions are read as of the statement's start: a concurrent decision that
    committed while this one waited for a row lock is not among them (``decisions_by_key``
    finds it).
    """
    tasks: dict[int, LockedTask] = {}
    stored: dict[str, DecisionRow] = {}
    for part in chunks(sorted(task_ids)):
        params = {"p_ids": list(part), "p_user": user_id, "p_keys": list(keys)}
        for row in session.execute(_LOCK, params):
            tasks[row[0]] = LockedTask._make(row[:_LOCKED_WIDTH])
            if row[_LOCKED_WIDTH] is not None:
                prior = DecisionRow._make(row[_LOCKED_WIDTH:])
                stored[prior.idempotency_key] = prior
    return tasks, stored


def decisions_by_key(
    session: Session, user_id: int, keys: Collection[str]
) -> dict[str, DecisionRow]:
    if not keys:
        return {}
    rows = session.execute(_BY_KEY, {"p_user": user_id, "p_keys": list(keys)})
    return {row.idempotency_key: DecisionRow._make(row) for row in rows}


def insert_decisions(session: Session, rows: Sequence[Mapping[str, Any]]) -> list[DecisionRow]:
    """Inserts decisions in one statement; returns them in the order given."""
    if not rows:
        return []
    result = session.execute(_INSERT_DECISIONS, list(rows))
    return [DecisionRow._make(row) for row in result]


def mark_done(session: Session, task_ids: Collection[int], now: datetime) -> None:
    session.execute(_MARK_DONE, {"p_ids": list(task_ids), "p_now": now})


def get_decision(session: Session, decision_id: int) -> DecisionRow | None:
    row = session.execute(select(*_DECISION_COLUMNS).where(_D.id == decision_id)).first()
    return DecisionRow._make(row) if row else None


def superseding_decision(session: Session, decision_id: int) -> int | None:
    return session.scalar(select(_D.id).where(_D.supersedes_id == decision_id))


def current_decision_of_task(session: Session, task_id: int) -> int | None:
    """The id of the task's standing decision (the latest that is not an undo nor undone)."""
    return session.scalar(_current_decision_ids(by=_D.task_id).where(_D.task_id == task_id))


def _not_withdrawn() -> ColumnElement[bool]:
    undo = aliased(ReviewDecision)
    return and_(_D.verdict != Verdict.UNDO, ~exists().where(undo.supersedes_id == _D.id))


def _current_decision_ids(*, by: Any) -> Select[int]:
    """Per value of ``by`` (a sample or a task), the id of its latest standing decision."""
    return select(func.max(_D.id).label("id")).where(_not_withdrawn()).group_by(by)


# --- reading verdicts ---------------------------------------------------------------------------


def current_decisions(
    session: Session,
    *,
    dataset_id: int | None = None,
    sample_ids: Collection[int] | None = None,
    kinds: Collection[TaskKind] | None = None,
) -> list[DecisionRow]:
    """Per sample, its latest standing decision (among ``kinds`` when given)."""

    def query(extra: list[ColumnElement[bool]]) -> list[DecisionRow]:
        latest = _current_decision_ids(by=_D.sample_id).where(_D.sample_id.is_not(None), *extra)
        rows = session.execute(
            select(*_DECISION_COLUMNS).where(_D.id.in_(latest.scalar_subquery()))
        )
        return [DecisionRow._make(row) for row in rows]

    conditions: list[ColumnElement[bool]] = []
    if dataset_id is not None:
        conditions.append(_D.dataset_id == dataset_id)
    if kinds is not None:
        conditions.append(_D.kind.in_(list(kinds)))
    if sample_ids is None:
        return query(conditions)
    result: list[DecisionRow] = []
    for part in chunks(sorted(sample_ids)):
        result.extend(query([*conditions, _D.sample_id.in_(part)]))
    return result


def current_decisions_of_tasks(
    session: Session, task_ids: Collection[int]
) -> dict[int, DecisionRow]:
    result: dict[int, DecisionRow] = {}
    for part in chunks(sorted(task_ids)):
        latest = _current_decision_ids(by=_D.task_id).where(_D.task_id.in_(part))
        rows = session.execute(
            select(*_DECISION_COLUMNS).where(_D.id.in_(latest.scalar_subquery()))
        )
        result.update({row.task_id: DecisionRow._make(row) for row in rows})
    return result


class HistoryRow(NamedTuple):
    decision: DecisionRow
    username: str
    source: str
    reason: str
    score: float | None
    withdrawn: bool


def sample_history(session: Session, sample_id: int) -> list[HistoryRow]:
    """Every decision on the sample, oldest first, with the decider's name, the task's source,
    reason and score, and whether a later undo withdrew it."""
    undo = aliased(ReviewDecision)
    withdrawn = exists().where(undo.supersedes_id == _D.id).label("withdrawn")
    rows = session.execute(
        select(*_DECISION_COLUMNS, User.username, _T.source, _T.reason, _T.score, withdrawn)
        .join(User, User.id == _D.user_id)
        .join(_T, _T.id == _D.task_id)
        .where(_D.sample_id == sample_id)
        .order_by(_D.id)
    )
    width = len(_DECISION_COLUMNS)
    return [
        HistoryRow(
            decision=DecisionRow._make(row[:width]),
            username=row.username,
            source=row.source,
            reason=row.reason,
            score=row.score,
            withdrawn=bool(row.withdrawn),
        )
        for row in rows
    ]


def second_opinion_pairs(
    session: Session, dataset_id: int | None
) -> list[tuple[TaskKind, int, int]]:
    """(kind, original task id, second-opinion task id) where both are decided."""
    origin = aliased(ReviewTask)
    query = (
        select(_T.kind, origin.id, _T.id)
        .join(origin, origin.id == _T.origin_task_id)
        .where(_T.state == TaskState.DONE, origin.state == TaskState.DONE)
    )
    if dataset_id is not None:
        query = query.where(_T.dataset_id == dataset_id)
    return [(kind, first, second) for kind, first, second in session.execute(query)]


# --- references for the label and class pages --------------------------------------------------


def confirmed_samples(
    session: Session, class_ids: Sequence[int], *, per_class: int
) -> dict[int, list[int]]:
    """Up to ``per_class`` samples per class that a human confirmed in it (accept or relabel,
    not undone), most recent first."""
    if not class_ids:
        return {}
    parts = [
        select(_D.class_id.label("class_id"), _D.sample_id.label("sample_id"))
        .where(
            _D.class_id == class_id,
            # Literals, as in the partial index's predicate, so PostgreSQL can match them.
            _D.kind == literal_column("'label_check'"),
            _D.verdict.in_([literal_column("'accept'"), literal_column("'relabel'")]),
            _not_withdrawn(),
        )
        .order_by(_D.id.desc())
        .limit(per_class)
        .subquery()
        for class_id in class_ids
    ]
    return _grouped(session, parts)


def class_samples(
    session: Session,
    class_ids: Sequence[int],
    *,
    per_class: int,
    exclude: Collection[int] = (),
) -> dict[int, list[int]]:
    """Up to ``per_class`` usable samples of each class, in id order."""
    if not class_ids:
        return {}
    parts = []
    for class_id in class_ids:
        query = select(Sample.class_id.label("class_id"), Sample.id.label("sample_id")).where(
            Sample.class_id == class_id, Sample.error.is_(None), Sample.missing.is_(False)
        )
        if exclude:
            query = query.where(Sample.id.not_in(list(exclude)))
        parts.append(query.order_by(Sample.id).limit(per_class).subquery())
    return _grouped(session, parts)


def _grouped(session: Session, parts: Sequence[Any]) -> dict[int, list[int]]:
    statement = union_all(*(select(part.c.class_id, part.c.sample_id) for part in parts))
    grouped: dict[int, list[int]] = {}
    for class_id, sample_id in session.execute(statement):
        grouped.setdefault(class_id, []).append(sample_id)
    return grouped


# --- counts and statistics ----------------------------------------------------------------------


def queue_counts(
    session: Session, now: datetime, *, dataset_id: int | None = None
) -> list[tuple[int, str, TaskKind, TaskState, bool, int]]:
    """(dataset id, dataset name, kind, state, lease expired, count) over every task."""
    expired = and_(_T.state == TaskState.LEASED, _T.lease_expires_at < now)
    expired_flag = case((expired, literal(True)), else_=false())
    query = (
        select(_T.dataset_id, Dataset.name, _T.kind, _T.state, expired_flag, func.count())
        .join(Dataset, Dataset.id == _T.dataset_id)
        .group_by(_T.dataset_id, Dataset.name, _T.kind, _T.state, expired_flag)
    )
    if dataset_id is not None:
        query = query.where(_T.dataset_id == dataset_id)
    return [
        (ds, name, kind, state, bool(is_expired), count)
        for ds, name, kind, state, is_expired, count in session.execute(query)
    ]


def open_counts(session: Session, now: datetime) -> list[tuple[int, str, TaskKind, int, int]]:
    """(dataset id, name, kind, available, leased) for every queue with open tasks, where
    available counts pending tasks and expired leases. Reads the partial indexes only."""
    counts: dict[tuple[int, TaskKind], list[int]] = {}
    pending = session.execute(
        select(_T.dataset_id, _T.kind, func.count())
        .where(_T.state == TaskState.PENDING)
        .group_by(_T.dataset_id, _T.kind)
    )
    for dataset_id, kind, count in pending:
        counts.setdefault((dataset_id, kind), [0, 0])[0] += count
    expired = (_T.lease_expires_at < now).label("expired")
    leased = session.execute(
        select(_T.dataset_id, _T.kind, expired, func.count())
        .where(_T.state == TaskState.LEASED)
        .group_by(_T.dataset_id, _T.kind, expired)
    )
    for dataset_id, kind, is_expired, count in leased:
        counts.setdefault((dataset_id, kind), [0, 0])[0 if is_expired else 1] += count
    rows = session.execute(
        select(Dataset.id, Dataset.name).where(
            Dataset.id.in_({dataset_id for dataset_id, _ in counts})
        )
    )
    names = {dataset_id: name for dataset_id, name in rows}
    return sorted(
        (dataset_id, names[dataset_id], kind, available, held)
        for (dataset_id, kind), (available, held) in counts.items()
    )


def available_count(
    session: Session,
    *,
    kind: TaskKind,
    dataset_id: int,
    user_id: int,
    now: datetime,
    cap: int,
) -> int:
    """Tasks of the queue this user could still be handed (not their own leases), counted up
    to ``cap`` so the count stays cheap on a long queue."""
    waiting = (
        select(literal(1))
        .select_from(_T)
        .where(
            _T.dataset_id == dataset_id,
            _T.kind == kind,
            or_(
                _T.state == TaskState.PENDING,
                and_(_T.state == TaskState.LEASED, _T.lease_expires_at < now),
            ),
            or_(_T.exclude_user_id.is_(None), _T.exclude_user_id != user_id),
        )
        .limit(cap)
        .subquery()
    )
    return int(session.scalar(select(func.count()).select_from(waiting)) or 0)


def _hour_bucket(session: Session) -> Any:
    if _dialect(session) == "postgresql":
        return func.date_trunc("hour", func.timezone("UTC", _D.created_at))
    return func.strftime("%Y-%m-%d %H:00:00", _D.created_at)


def decisions_by_user_hour(
    session: Session, since: datetime, *, dataset_id: int | None = None
) -> list[tuple[int, Any, int]]:
    """(user id, hour bucket, decisions) since ``since``; undo rows not counted. The bucket is a
    naive UTC datetime on PostgreSQL and 'YYYY-MM-DD HH:00:00' (UTC) text on SQLite."""
    bucket = _hour_bucket(session).label("hour")
    query = (
        select(_D.user_id, bucket, func.count())
        .where(_D.created_at >= since, _D.verdict != Verdict.UNDO)
        .group_by(_D.user_id, bucket)
        .order_by(_D.user_id, bucket)
    )
    if dataset_id is not None:
        query = query.where(_D.dataset_id == dataset_id)
    return [(user_id, hour, count) for user_id, hour, count in session.execute(query)]


def median_seconds(
    session: Session,
    since: datetime,
    *,
    dataset_id: int | None = None,
    user_id: int | None = None,
    per_user: bool = False,
) -> dict[int | None, float]:
    """Median ``seconds`` of the decisions since ``since`` (undo rows left out), overall (key
    None) or per user; computed in SQL with window functions, the same on both engines."""
    partition = [_D.user_id] if per_user else []
    ranked = select(
        (_D.user_id if per_user else literal(None, Integer)).label("user_id"),
        _D.seconds.label("seconds"),
        func.row_number().over(partition_by=partition, order_by=_D.seconds).label("rn"),
        func.count().over(partition_by=partition).label("n"),
    ).where(_D.created_at >= since, _D.verdict != Verdict.UNDO)
    if dataset_id is not None:
        ranked = ranked.where(_D.dataset_id == dataset_id)
    if user_id is not None:
        ranked = ranked.where(_D.user_id == user_id)
    sub = ranked.subquery()
    middle = or_(sub.c.rn == (sub.c.n + 1) // 2, sub.c.rn == (sub.c.n + 2) // 2)
    rows = session.execute(
        select(sub.c.user_id, func.avg(sub.c.seconds)).where(middle).group_by(sub.c.user_id)
    )
    return {user: float(value) for user, value in rows if value is not None}


def decisions_by_kind(session: Session, *, user_id: int, since: datetime) -> dict[TaskKind, int]:
    rows = session.execute(
        select(_D.kind, func.count())
        .where(_D.user_id == user_id, _D.created_at >= since, _D.verdict != Verdict.UNDO)
        .group_by(_D.kind)
    )
    return {kind: count for kind, count in rows}


# --- what the pipeline reads and withdraws ------------------------------------------------------


class DecisionStub(NamedTuple):
    id: int
    kind: TaskKind
    sample_id: int | None
    class_id: int | None
    created_at: datetime


def decisions_after(
    session: Session, dataset_id: int, after_id: int, *, limit: int = 50_000
) -> list[DecisionStub]:
    """Decisions (undo rows included) on the dataset with an id above ``after_id``, by id."""
    rows = session.execute(
        select(
            ReviewDecision.id,
            ReviewDecision.kind,
            ReviewDecision.sample_id,
            ReviewDecision.class_id,
            ReviewDecision.created_at,
        )
        .where(ReviewDecision.dataset_id == dataset_id, ReviewDecision.id > after_id)
        .order_by(ReviewDecision.id)
        .limit(limit)
    )
    return [DecisionStub._make(row) for row in rows]


def decided_sample_ids(session: Session, dataset_id: int) -> set[int]:
    query = select(func.distinct(ReviewDecision.sample_id)).where(
        ReviewDecision.dataset_id == dataset_id, ReviewDecision.sample_id.is_not(None)
    )
    return {int(sid) for sid in session.scalars(query)}


def class_votes(
    session: Session, dataset_id: int, class_ids: Collection[int]
) -> dict[int, list[ClassVote]]:
    """The standing class_check decisions on these classes (neither an undo nor undone),
    oldest first, by class."""
    undo = aliased(ReviewDecision)
    result: dict[int, list[ClassVote]] = {}
    for part in chunks(sorted(class_ids)):
        rows = session.execute(
            select(
                ReviewDecision.class_id,
                ReviewDecision.id,
                ReviewDecision.task_id,
                ReviewDecision.user_id,
                ReviewDecision.verdict,
            )
            .where(
                ReviewDecision.dataset_id == dataset_id,
                ReviewDecision.kind == TaskKind.CLASS_CHECK,
                ReviewDecision.class_id.in_(part),
                ReviewDecision.verdict != Verdict.UNDO,
                ~exists().where(undo.supersedes_id == ReviewDecision.id),
            )
            .order_by(ReviewDecision.id)
        )
        for class_id, decision_id, task_id, user_id, verdict in rows:
            result.setdefault(int(class_id or 0), []).append(
                ClassVote(
                    decision_id=int(decision_id),
                    task_id=int(task_id),
                    user_id=int(user_id),
                    verdict=verdict,
                )
            )
    return result


def last_class_decision_id(session: Session, dataset_id: int, class_id: int) -> int:
    """The id of the newest class_check decision on the class (undo rows too), 0 if none."""
    newest = session.scalar(
        select(func.max(ReviewDecision.id)).where(
            ReviewDecision.dataset_id == dataset_id,
            ReviewDecision.kind == TaskKind.CLASS_CHECK,
            ReviewDecision.class_id == class_id,
        )
    )
    return int(newest or 0)


def decision_usernames(session: Session, decision_ids: Collection[int]) -> dict[int, str]:
    result: dict[int, str] = {}
    for part in chunks(sorted(decision_ids)):
        rows = session.execute(
            select(ReviewDecision.id, User.username)
            .join(User, User.id == ReviewDecision.user_id)
            .where(ReviewDecision.id.in_(part))
        )
        result.update({int(did): name for did, name in rows})
    return result


class TaskStub(NamedTuple):
    id: int
    sample_id: int | None
    class_id: int | None
    state: TaskState


def tasks_of_source(session: Session, dataset_id: int, source: str) -> list[TaskStub]:
    """The first-opinion tasks a round queued (its ``source``), by id."""
    rows = session.execute(
        select(ReviewTask.id, ReviewTask.sample_id, ReviewTask.class_id, ReviewTask.state)
        .where(
            ReviewTask.dataset_id == dataset_id,
            ReviewTask.source == source,
            ReviewTask.origin_task_id.is_(None),
        )
        .order_by(ReviewTask.id)
    )
    return [TaskStub._make(row) for row in rows]


def task_state_counts(session: Session, dataset_id: int, source: str) -> dict[TaskState, int]:
    rows = session.execute(
        select(ReviewTask.state, func.count())
        .where(ReviewTask.dataset_id == dataset_id, ReviewTask.source == source)
        .group_by(ReviewTask.state)
    )
    return {state: int(n) for state, n in rows}


def open_task_samples(session: Session, dataset_id: int, kinds: Collection[TaskKind]) -> set[int]:
    """Samples with a task of one of ``kinds`` waiting or leased."""
    query = select(func.distinct(ReviewTask.sample_id)).where(
        ReviewTask.dataset_id == dataset_id,
        ReviewTask.kind.in_(list(kinds)),
        ReviewTask.state.in_([TaskState.PENDING, TaskState.LEASED]),
        ReviewTask.sample_id.is_not(None),
    )
    return {int(sid) for sid in session.scalars(query)}


class TaskHold(NamedTuple):
    """Open tasks of a round of one kind: under a live lease of ``username`` until ``until``,
    or (``username`` None) waiting for an annotator."""

    kind: TaskKind
    username: str | None
    tasks: int
    until: datetime | None


def open_task_holds(
    session: Session, dataset_id: int, source: str, now: datetime
) -> list[TaskHold]:
    """Who holds the round's open tasks (its ``source``, copies included): live leases by
    holder, then the tasks nobody holds (pending, or leased once and lapsed)."""
    of_round = and_(ReviewTask.dataset_id == dataset_id, ReviewTask.source == source)
    live = and_(ReviewTask.state == TaskState.LEASED, ReviewTask.lease_expires_at >= now)
    held = session.execute(
        select(ReviewTask.kind, User.username, func.count(), func.max(ReviewTask.lease_expires_at))
        .join(User, User.id == ReviewTask.lease_owner_id)
        .where(of_round, live)
        .group_by(ReviewTask.kind, User.username)
        .order_by(func.count().desc(), User.username)
    )
    free = session.execute(
        select(ReviewTask.kind, func.count())
        .where(
            of_round,
            or_(
                ReviewTask.state == TaskState.PENDING,
                and_(ReviewTask.state == TaskState.LEASED, ReviewTask.lease_expires_at < now),
            ),
        )
        .group_by(ReviewTask.kind)
        .order_by(ReviewTask.kind)
    )
    return [TaskHold(kind, name, int(n), until) for kind, name, n, until in held] + [
        TaskHold(kind, None, int(n), None) for kind, n in free
    ]


def open_class_tasks(session: Session, dataset_id: int) -> set[int]:
    """Classes with a class_check task waiting or leased."""
    query = select(func.distinct(ReviewTask.class_id)).where(
        ReviewTask.dataset_id == dataset_id,
        ReviewTask.kind == TaskKind.CLASS_CHECK,
        ReviewTask.state.in_([TaskState.PENDING, TaskState.LEASED]),
        ReviewTask.class_id.is_not(None),
    )
    return {int(cid) for cid in session.scalars(query)}


def cancel_pending_tasks(
    session: Session,
    dataset_id: int,
    *,
    kinds: Collection[TaskKind],
    sample_ids: Collection[int] | None = None,
    source: str | None = None,
) -> int:
    """Withdraws first-opinion tasks nobody holds (pending ones) of ``kinds``: of these
    samples, or queued by ``source``. Returns how many."""
    conditions: list[ColumnElement[bool]] = [
        ReviewTask.dataset_id == dataset_id,
        ReviewTask.kind.in_(list(kinds)),
        ReviewTask.state == TaskState.PENDING,
        ReviewTask.origin_task_id.is_(None),  # second opinions are asked on purpose
    ]
    if source is not None:
        conditions.append(ReviewTask.source == source)
    total = 0
    parts: list[Sequence[int] | None] = (
        list(chunks(sorted(sample_ids))) if sample_ids is not None else [None]
    )
    for part in parts:
        where = list(conditions)
        if part is not None:
            if not part:
                continue
            where.append(ReviewTask.sample_id.in_(part))
        result = session.execute(update(ReviewTask).where(*where).values(state=TaskState.CANCELLED))
        total += int(result.rowcount)  # type: ignore[attr-defined]
    return total
