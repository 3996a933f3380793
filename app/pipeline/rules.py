"""The loop's decisions as pure functions: a sample's status, which human verdict counts, and
what auto mode does next. No database here (the folds are :mod:`ml.core.folds`)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from app.models import ClassState, RoundKind, RoundState, SampleStatus, Stage, Verdict

__all__ = [
    "ClassOutcome",
    "ClassVote",
    "HumanVerdict",
    "NextStep",
    "RoundView",
    "class_outcome",
    "effective_verdict",
    "next_step",
    "resolve_status",
]


@dataclass(frozen=True)
class HumanVerdict:
    """A standing human decision on a sample (``class_id``: the class of an accept/relabel)."""

    decision_id: int
    verdict: Verdict
    class_id: int | None


def effective_verdict(junk: HumanVerdict | None, label: HumanVerdict | None) -> HumanVerdict | None:
    """The decision that sets a sample's status, from its latest junk question (junk_check or
    junk_audit) and its latest label question (label_check), each undo taken into account.

    The newer one wins, except that a newer "unsure" does not undo an older "junk", and a newer
    "not junk" keeps an older label verdict that says what the sample is (accept or relabel)."""
    if junk is None or label is None:
        return junk or label
    if label.decision_id > junk.decision_id:
        if label.verdict is Verdict.UNSURE and junk.verdict is Verdict.JUNK:
            return junk
        return label
    if junk.verdict is Verdict.NOT_JUNK and label.verdict in (Verdict.ACCEPT, Verdict.RELABEL):
        return label
    return junk


def resolve_status(
    model_status: SampleStatus,
    verdict: HumanVerdict | None,
    given_class_id: int,
    dropped: Collection[int],
) -> tuple[SampleStatus, int]:
    """A sample's status and current label, from what the model rules said (``model_status``),
    the human verdict that counts, and the dropped classes. Humans win over models; a dropped
    class wins over everything but junk."""
    if model_status is SampleStatus.DUPLICATE:
        return SampleStatus.DUPLICATE, given_class_id
    kind = verdict.verdict if verdict else None
    label = verdict.class_id if verdict and kind is Verdict.RELABEL and verdict.class_id else None
    label = label if label is not None else given_class_id
    if kind is Verdict.JUNK:
        return SampleStatus.JUNK, label
    if model_status is SampleStatus.JUNK and kind in (None, Verdict.UNSURE):
        return SampleStatus.JUNK, label
    if label in dropped:
        return SampleStatus.DROPPED, label
    if kind is Verdict.ACCEPT:
        return SampleStatus.CONFIRMED, label
    if kind is Verdict.RELABEL:
        return SampleStatus.RELABELLED, label
    if model_status is SampleStatus.JUNK:  # a human said it is not junk after a bulk acceptance
        return SampleStatus.CANDIDATE, label
    return model_status, label


# --- class review -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassVote:
    """A standing class_check decision (keep or drop) on a class, on the task ``task_id``."""

    decision_id: int
    task_id: int
    user_id: int
    verdict: Verdict


@dataclass(frozen=True)
class ClassOutcome:
    """What a class's votes decide: its state (None: nobody voted), the decision behind it,
    and, while a drop waits for more people, the vote to copy for the next one (``ask``)."""

    state: ClassState | None
    decision_id: int | None = None
    drops: int = 0
    ask: ClassVote | None = None


def class_outcome(votes: Sequence[ClassVote], *, required: int) -> ClassOutcome:
    """The class review's rule. Dropping a class removes every image of it, so one key press
    must not do it: each person's latest vote counts once, and the class is dropped when
    ``required`` distinct people say drop and nobody says keep. A keep, from anyone, keeps the
    class (a disagreement keeps it; the keeper can undo). Fewer drops than ``required`` and no
    keep: the class stays under review and another person is asked (``ask``: the latest drop)."""
    if required < 1:
        raise ValueError(f"required must be at least 1, got {required}")
    latest: dict[int, ClassVote] = {}
    for vote in sorted(votes, key=lambda v: v.decision_id):
        latest[vote.user_id] = vote
    keeps = [v for v in latest.values() if v.verdict is Verdict.KEEP]
    drops = sorted(
        (v for v in latest.values() if v.verdict is Verdict.DROP), key=lambda v: v.decision_id
    )
    if keeps:
        newest = max(v.decision_id for v in keeps)
        return ClassOutcome(ClassState.KEPT, newest, drops=len(drops))
    if len(drops) >= required:
        return ClassOutcome(ClassState.DROPPED, drops[-1].decision_id, drops=len(drops))
    if drops:
        return ClassOutcome(ClassState.REVIEW, None, drops=len(drops), ask=drops[-1])
    return ClassOutcome(None)


# --- auto mode ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundView:
    """What auto mode needs to know of a past round."""

    kind: RoundKind
    state: RoundState
    stats: dict[str, object]


@dataclass(frozen=True)
class NextStep:
    """Start ``kind`` (in ``stage``), or with ``kind`` None just move to ``stage``; ``reason``
    says why, in words."""

    stage: Stage
    kind: RoundKind | None
    reason: str


def stats_int(stats: Mapping[str, object], key: str) -> int:
    """A count from a round's ``stats``: 0 when it is absent or not a number."""
    value = stats.get(key, 0)
    return int(value) if isinstance(value, int | float) else 0


def next_step(
    stage: Stage,
    rounds: Sequence[RoundView],
    *,
    can_iterate: bool,
    max_junk_iterations: int,
    max_pullback_rounds: int,
    human_fraction: float,
    junk_min_found: int = 10,
) -> NextStep | None:
    """What auto mode does next, given the rounds so far (oldest first), or None when there is
    nothing to do (a round is open, a round failed, or the loop is done).

    Junk stage: seed → (iterations → audit)… until an audit's upper bound is under the target,
    or ``max_junk_iterations`` iterations. Iterations follow each other without an audit while
    the last one's review still confirmed ``junk_min_found`` junk images: an audit costs as many
    decisions as it has samples, so it comes when the model stops finding junk. An iteration
    needs human labels of both kinds (``can_iterate``), else the audit comes straight away.
    Label stage: cross-validation → pull-back rounds until one pulls back nothing (or
    ``max_pullback_rounds`` in a row) → the human sample → pull-back rounds again → class
    stage → final training → done.
    """
    if any(r.state.is_open or r.state is RoundState.FAILED for r in rounds):
        return None
    done = [r for r in rounds if r.state is RoundState.DONE]
    in_stage = [r for r in done if r.kind.stage is stage]
    if stage is Stage.JUNK:
        return _next_junk(
            in_stage,
            can_iterate=can_iterate,
            max_iterations=max_junk_iterations,
            min_found=junk_min_found,
        )
    if stage is Stage.LABEL:
        return _next_label(in_stage, max_pullbacks=max_pullback_rounds, fraction=human_fraction)
    if stage is Stage.CLASS:
        if any(r.kind is RoundKind.CLASS_REVIEW for r in in_stage):
            return NextStep(Stage.FINAL, RoundKind.FINAL_TRAINING, "the class review is done")
        return NextStep(Stage.CLASS, RoundKind.CLASS_REVIEW, "the label stage is done")
    if stage is Stage.FINAL:
        if any(r.kind is RoundKind.FINAL_TRAINING for r in in_stage):
            return NextStep(Stage.DONE, None, "the final model is trained")
        return NextStep(Stage.FINAL, RoundKind.FINAL_TRAINING, "the class stage is done")
    return None


def _next_junk(
    done: list[RoundView], *, can_iterate: bool, max_iterations: int, min_found: int
) -> NextStep:
    kinds = [r.kind for r in done]
    if RoundKind.JUNK_SEED not in kinds:
        return NextStep(Stage.JUNK, RoundKind.JUNK_SEED, "the junk stage starts with its seed")
    iterations = kinds.count(RoundKind.JUNK_ITERATION)
    last = next(
        (r for r in reversed(done) if r.kind in (RoundKind.JUNK_ITERATION, RoundKind.JUNK_AUDIT)),
        None,
    )
    if last is not None and last.kind is RoundKind.JUNK_AUDIT:
        if last.stats.get("meets_target"):
            return NextStep(
                Stage.LABEL, RoundKind.CROSS_VALIDATION, "the last audit is under the target"
            )
        if iterations >= max_iterations or not can_iterate:
            why = (
                "the junk iterations are used up"
                if iterations >= max_iterations
                else "there are not enough human junk labels to train on"
            )
            return NextStep(Stage.LABEL, RoundKind.CROSS_VALIDATION, why + "; moving on")
        return NextStep(Stage.JUNK, RoundKind.JUNK_ITERATION, "the last audit found too much junk")
    if can_iterate and iterations < max_iterations:
        if last is None:
            return NextStep(Stage.JUNK, RoundKind.JUNK_ITERATION, "the seed is reviewed")
        found = stats_int(last.stats, "junk")
        if found >= min_found:
            return NextStep(
                Stage.JUNK,
                RoundKind.JUNK_ITERATION,
                f"the last iteration still found {found} junk images",
            )
    return NextStep(Stage.JUNK, RoundKind.JUNK_AUDIT, "measure the junk left")


def _next_label(done: list[RoundView], *, max_pullbacks: int, fraction: float) -> NextStep:
    cv = [i for i, r in enumerate(done) if r.kind is RoundKind.CROSS_VALIDATION]
    if not cv:
        return NextStep(Stage.LABEL, RoundKind.CROSS_VALIDATION, "the label stage starts")
    since = done[cv[-1] + 1 :]
    samples = [i for i, r in enumerate(since) if r.kind is RoundKind.HUMAN_SAMPLE]
    tail = since[samples[-1] + 1 :] if samples else since
    pullbacks = [r for r in tail if r.kind is RoundKind.PULL_BACK]
    exhausted = bool(pullbacks) and stats_int(pullbacks[-1].stats, "pulled_back") == 0
    if not exhausted and len(pullbacks) < max_pullbacks:
        return NextStep(Stage.LABEL, RoundKind.PULL_BACK, "pull back what the models now confirm")
    if not samples and fraction > 0:
        return NextStep(Stage.LABEL, RoundKind.HUMAN_SAMPLE, "annotators check a random sample")
    return NextStep(Stage.CLASS, RoundKind.CLASS_REVIEW, "pull-back rounds found nothing new")
