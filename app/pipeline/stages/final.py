"""The class review (classes left under the minimum kept count) and the final training."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence

from app.jobs import repository as jobs_repository
from app.jobs import service as jobs
from app.models import (
    TRAINABLE,
    ClassState,
    Job,
    JobState,
    RoundKind,
    SampleStatus,
    Stage,
    TaskKind,
)
from app.pipeline import repository, sample_repository
from app.pipeline.config import (
    recipe_label,
)
from app.pipeline.sample_repository import SampleState
from app.pipeline.stages.context import (
    RoundContext,
    StepRefused,
    classes_of,
    finish,
    queue_tasks,
    review_or_done,
    set_phase,
)
from app.pipeline.stages.round_jobs import (
    build_manifest,
    labelled_manifest,
    queue_job,
    recipe_for,
)
from app.review.records import TaskItem
from app.review.repository import tasks as task_repository
from ml.core.protocol.jobs import (
    ModelRef,
    ProbsRef,
    TrainFinalSpec,
)

# --- class stage --------------------------------------------------------------------------------


def start_class_review(ctx: RoundContext) -> None:
    session = ctx.session
    minimum = ctx.config.min_class_size
    kept = sample_repository.class_counts(session, ctx.dataset.id, statuses=TRAINABLE)
    present = sample_repository.class_counts(session, ctx.dataset.id, by_given=True)
    classes = sample_repository.pipeline_classes(session, ctx.dataset.id)
    busy = task_repository.open_class_tasks(session, ctx.dataset.id)
    small = sorted(
        cid
        for cid, row in classes.items()
        if row.state in (ClassState.ACTIVE, ClassState.REVIEW)
        and (present.get(cid, 0) or kept.get(cid, 0))
        and kept.get(cid, 0) < minimum
        and cid not in busy
    )
    items = [
        TaskItem(
            class_id=cid,
            score=float(kept.get(cid, 0)),
            priority=-float(kept.get(cid, 0)),
            reason=f"{kept.get(cid, 0)} kept samples, under the minimum of {minimum}",
        )
        for cid in small
    ]
    queued = queue_tasks(ctx, TaskKind.CLASS_CHECK, items, reason="class under the minimum")
    for cid in small:
        classes[cid].state = ClassState.REVIEW
        classes[cid].round_id = ctx.round.id
    ctx.stats(
        minimum=minimum,
        classes=len(classes),
        queued=queued,
        sizes={str(cid): kept.get(cid, 0) for cid in small},
    )
    review_or_done(ctx, queued)


def finish_class_review(ctx: RoundContext) -> None:
    """The round's classes as their votes left them (a drop still short of people is
    ``awaiting_votes``: it stays under review, and a later vote still applies)."""
    tasks = task_repository.tasks_of_source(ctx.session, ctx.dataset.id, ctx.round.source)
    class_ids = {t.class_id for t in tasks if t.class_id is not None}
    rows = sample_repository.pipeline_classes(ctx.session, ctx.dataset.id)
    states = {cid: rows[cid].state for cid in class_ids if cid in rows}
    counts = Counter(states.values())
    ctx.stats(
        decided=counts[ClassState.KEPT] + counts[ClassState.DROPPED],
        kept_classes=counts[ClassState.KEPT],
        dropped_classes=counts[ClassState.DROPPED],
        awaiting_votes=counts[ClassState.REVIEW],
        dropped=sorted(cid for cid, state in states.items() if state is ClassState.DROPPED),
    )


# --- final training -----------------------------------------------------------------------------


def start_final_training(ctx: RoundContext) -> None:
    """Trains on the final set less an evaluation set (:func:`_final_split`), with the rejected
    samples offered unlabelled and the fold models as teachers when the config asks."""
    config = ctx.config
    train, evaluation, source = _final_split(ctx)
    classes = classes_of(train)
    if len(classes) < 2:
        raise StepRefused(f"the final set has {len(classes)} class(es): nothing to train")
    rejects, probs, probs_classes = _rejects(ctx)
    index = {cid: i for i, cid in enumerate(classes)}
    train_ref = build_manifest(
        ctx,
        [s.sample_id for s in train] + [s.sample_id for s in rejects],
        [index.get(s.label_class_id, -1) for s in train] + [-1] * len(rejects),
        classes,
    )
    eval_ref = labelled_manifest(ctx, evaluation, classes) if evaluation else None
    teachers, teacher_note = _teachers(ctx, classes)
    recipe = recipe_for(ctx, "final")
    job = queue_job(
        ctx,
        TrainFinalSpec(
            recipe=recipe,
            train=train_ref,
            eval=eval_ref,
            teachers=teachers,
            seed=config.seed,
            rejects=config.final_rejects if probs else "drop",
            reject_weight=config.reject_weight,
            relabel_threshold=config.relabel_threshold,
            probs=probs,
            probs_class_ids=probs_classes,
        ),
        "final",
    )
    ctx.round.params = {
        **ctx.round.params,
        "train_manifest": train_ref.model_dump(mode="json"),
        "eval_manifest": eval_ref.model_dump(mode="json") if eval_ref else None,
        "classes": classes,
    }
    set_phase(ctx, "training", [job.id])
    ctx.stats(
        train=len(train),
        eval=len(evaluation),
        eval_source=source,
        classes=len(classes),
        teachers=[t.job_id for t in teachers],
        teacher_note=teacher_note,
        recipe=recipe_label(recipe),
        rejects=config.final_rejects if probs else "drop",
        rejected_offered=len(rejects),
    )


def _final_split(ctx: RoundContext) -> tuple[list[SampleState], list[SampleState], str]:
    """The final set split into (train, evaluation, where the evaluation set comes from):
    human-verified samples (confirmed or relabelled) when there are ``min_eval_samples`` of
    them, else a random held-out split; either way a stratified ``val_fraction`` of the final
    set (at least ``min_eval_samples``), and never a class's last training sample."""
    config = ctx.config
    final = sample_repository.states_where(ctx.session, ctx.dataset.id, statuses=TRAINABLE)
    verified = [s for s in final if s.status in (SampleStatus.CONFIRMED, SampleStatus.RELABELLED)]
    wanted = max(config.min_eval_samples, math.ceil(config.val_fraction * len(final)))
    if len(verified) >= config.min_eval_samples:
        source = "human_verified"
        held = evaluation_set(verified, final, min(wanted, len(verified)), ctx.seed)
    else:
        source = "held_out"
        held = evaluation_set(final, final, round(config.val_fraction * len(final)), ctx.seed)
    train = [s for s in final if s.sample_id not in held]
    evaluation = [s for s in final if s.sample_id in held]
    return train, evaluation, source


def _rejects(ctx: RoundContext) -> tuple[list[SampleState], list[ProbsRef], list[int]]:
    """The rejected samples the final training may learn from (never by their given label:
    the manifest carries them unlabelled), with the last cross-validation's out-of-fold
    probabilities and the classes of their columns; nothing when the config drops them or no
    cross-validation left probabilities."""
    if ctx.config.final_rejects == "drop":
        return [], [], []
    cv = repository.latest_round(ctx.session, ctx.pipeline.id, [RoundKind.CROSS_VALIDATION])
    if cv is None:
        return [], [], []
    refs = []
    for job, role in repository.round_jobs(ctx.session, cv.id):
        if not role.startswith("fold") or job.state is not JobState.SUCCEEDED:
            continue
        artifacts = {a.name: a for a in jobs.job_detail(ctx.session, job).artifacts}
        probs, ids = artifacts.get("probs.npy"), artifacts.get("probs_sample_ids.npy")
        if probs is None or ids is None:
            return [], [], []
        probs_ref, ids_ref = jobs_repository.artifact_ref(probs), jobs_repository.artifact_ref(ids)
        refs.append(ProbsRef(job_id=job.id, probs=probs_ref, sample_ids=ids_ref))
    if not refs:
        return [], [], []
    rejected = sample_repository.states_where(
        ctx.session, ctx.dataset.id, statuses={SampleStatus.REJECTED}
    )
    return rejected, refs, [int(cid) for cid in cv.params.get("classes", [])]


def evaluation_set(
    candidates: Sequence[SampleState], final: Sequence[SampleState], n: int, seed: int
) -> set[int]:
    """``n`` of ``candidates`` drawn at random (seeded), stratified by label: each class's share
    in proportion to its candidates (largest remainders first), and never so many that a class
    of ``final`` is left without a training sample."""
    by_class: dict[int, list[int]] = {}
    for state in candidates:
        by_class.setdefault(state.label_class_id, []).append(state.sample_id)
    sizes = Counter(state.label_class_id for state in final)
    total = len(candidates)
    if n <= 0 or total == 0:
        return set()
    room = {cid: min(len(ids), sizes[cid] - 1) for cid, ids in by_class.items()}
    exact = {cid: n * len(ids) / total for cid, ids in by_class.items()}
    counts = {cid: min(int(exact[cid]), room[cid]) for cid in by_class}
    for cid in sorted(by_class, key=lambda c: (-(exact[c] - int(exact[c])), c)):
        if sum(counts.values()) >= n:
            break
        if counts[cid] < room[cid]:
            counts[cid] += 1
    rng = random.Random(seed)
    held: set[int] = set()
    for cid in sorted(by_class):
        if counts[cid] > 0:
            held.update(rng.sample(sorted(by_class[cid]), counts[cid]))
    return held


def _teachers(ctx: RoundContext, classes: list[int]) -> tuple[list[ModelRef], str]:
    choice = ctx.config.teacher()
    if choice == "none":
        return [], "no distillation"
    if isinstance(choice, int):
        return [jobs.model_ref(ctx.session, choice)], f"distilled from job {choice}"
    cv = repository.latest_round(ctx.session, ctx.pipeline.id, [RoundKind.CROSS_VALIDATION])
    if cv is None:
        return [], "no distillation: no cross-validation round"
    if cv.params.get("classes") != classes:
        return [], "no distillation: the fold models have other classes than the final set"
    folds = [
        job for job, role in repository.round_jobs(ctx.session, cv.id) if role.startswith("fold")
    ]
    return [jobs.model_ref(ctx.session, job.id) for job in folds], f"distilled from {cv.source}"


def final_training_done(ctx: RoundContext, done: list[Job]) -> None:
    [job] = done
    summary = job.summary or {}
    ctx.stats(
        job_id=job.id,
        metrics=summary.get("eval"),
        train_samples=summary.get("train_samples"),
        sources=summary.get("sources"),
    )
    ctx.pipeline.stage = Stage.DONE
    finish(ctx)
