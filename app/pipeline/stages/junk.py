"""The junk stage's rounds: the seed, iterations of the junk classifier, audits of what is
believed clean, audits of an iteration's strict flags and their bulk acceptance."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.errors import Invalid
from app.jobs import manifests as job_manifests
from app.jobs import service as jobs
from app.models import (
    EventKind,
    Job,
    PipelineRound,
    RoundKind,
    RoundState,
    SampleStatus,
    TaskKind,
    Verdict,
)
from app.pipeline import repository, sample_repository
from app.pipeline.config import (
    PipelineConfig,
    recipe_label,
)
from app.pipeline.estimates import estimate
from app.pipeline.rules import stats_int
from app.pipeline.stages.context import (
    JUNK_KINDS,
    NOT_JUNK,
    ModelChange,
    RoundContext,
    StepRefused,
    apply_model_changes,
    draw,
    finish,
    histogram,
    queue_tasks,
    review_or_done,
    round_verdicts,
    set_phase,
)
from app.pipeline.stages.round_jobs import (
    build_manifest,
    queue_job,
    recipe_for,
)
from app.review.records import TaskItem
from app.review.repository import tasks as task_repository
from ml.core.protocol.jobs import (
    TrainJunkSpec,
)

# --- junk stage ---------------------------------------------------------------------------------


def start_junk_seed(ctx: RoundContext) -> None:
    session = ctx.session
    busy = task_repository.open_task_samples(session, ctx.dataset.id, JUNK_KINDS)
    non_rgb = [
        s.sample_id
        for s in sample_repository.states_where(
            session, ctx.dataset.id, statuses=NOT_JUNK, unverified=True, modes=(False, "RGB")
        )
        if s.sample_id not in busy
    ]
    cap = ctx.config.seed_max_non_rgb
    if cap is not None:
        non_rgb = draw(non_rgb, cap, ctx.seed)
    normal_pool = [
        s.sample_id
        for s in sample_repository.states_where(
            session, ctx.dataset.id, statuses=NOT_JUNK, unverified=True, modes=(True, "RGB")
        )
        if s.sample_id not in busy
    ]
    n = ctx.params.n if ctx.params.n is not None else ctx.config.seed_random_samples
    normal = draw(normal_pool, n, ctx.seed + 1)
    items = [
        TaskItem(sample_id=sid, priority=1.0, reason="not a 3-channel image") for sid in non_rgb
    ] + [TaskItem(sample_id=sid, priority=0.0, reason="a random normal image") for sid in normal]
    queued = queue_tasks(ctx, TaskKind.JUNK_CHECK, items, reason="junk seed")
    ctx.stats(non_rgb=len(non_rgb), random=len(normal), queued=queued)
    review_or_done(ctx, queued)


def finish_junk_review(ctx: RoundContext) -> None:
    """A junk seed or iteration whose junk_check tasks are all decided: how many were junk,
    and the precision of the flags (an iteration's) with its bounds."""
    samples, verdicts = round_verdicts(ctx, TaskKind.JUNK_CHECK)
    junk = sum(1 for v in verdicts.values() if v.verdict is Verdict.JUNK)
    ctx.stats(
        decided=len(verdicts),
        junk=junk,
        not_junk=len(verdicts) - junk,
        precision=estimate(junk, len(verdicts), population=len(samples)).to_dict(),
    )


def junk_labels(session: Session, dataset_id: int) -> tuple[list[int], list[int]]:
    """(junk, normal) sample ids by human verdict: junk from a junk verdict on any question;
    normal from "not junk" or a confirmed or corrected label."""
    junk: list[int] = []
    normal: list[int] = []
    for state in sample_repository.states_where(session, dataset_id):
        if state.human_verdict is Verdict.JUNK:
            junk.append(state.sample_id)
        elif state.human_verdict in (Verdict.NOT_JUNK, Verdict.ACCEPT, Verdict.RELABEL):
            normal.append(state.sample_id)
    return junk, normal


def can_iterate(session: Session, dataset_id: int, config: PipelineConfig) -> bool:
    """Whether there are enough human junk and normal labels (see :func:`junk_labels`)."""
    counts = sample_repository.verdict_counts(session, dataset_id)
    junk = counts.get(Verdict.JUNK, 0)
    normal = sum(counts.get(v, 0) for v in (Verdict.NOT_JUNK, Verdict.ACCEPT, Verdict.RELABEL))
    return min(junk, normal) >= config.junk_min_labels


def start_junk_iteration(ctx: RoundContext) -> None:
    session = ctx.session
    junk, normal = junk_labels(session, ctx.dataset.id)
    needed = ctx.config.junk_min_labels
    if min(len(junk), len(normal)) < needed:
        raise StepRefused(
            f"a junk iteration needs at least {needed} human junk and {needed} normal labels; "
            f"there are {len(junk)} and {len(normal)} (review the junk seed first)"
        )
    train_ids = sorted(junk + normal)
    junk_set = set(junk)
    train = build_manifest(
        ctx,
        train_ids,
        [1 if sid in junk_set else 0 for sid in train_ids],
        [0, 1],
        class_names=job_manifests.JUNK_CLASSES,
    )
    scored = [
        s.sample_id
        for s in sample_repository.states_where(session, ctx.dataset.id, statuses=NOT_JUNK)
    ]
    if not scored:
        raise StepRefused("there is nothing left to score")
    predict = build_manifest(
        ctx, scored, [-1] * len(scored), [0, 1], class_names=job_manifests.JUNK_CLASSES
    )
    recipe = recipe_for(ctx, "junk")
    job = queue_job(
        ctx,
        TrainJunkSpec(recipe=recipe, train=train, predict=predict, seed=ctx.config.seed),
        "train and score",
    )
    threshold = ctx.params.threshold or ctx.config.junk_threshold
    ctx.round.params = {**ctx.round.params, "threshold": threshold}
    set_phase(ctx, "junk model", [job.id])
    ctx.stats(
        train_junk=len(junk),
        train_normal=len(normal),
        scored=len(scored),
        recipe=recipe_label(recipe),
        threshold=threshold,
    )


def junk_iteration_done(ctx: RoundContext, done: list[Job]) -> None:
    session = ctx.session
    [job] = done
    results = jobs.job_results(session, job)
    if results.junk_score is None:
        raise Invalid(f"job {job.id} reported no junk scores")
    scores = {int(s): float(p) for s, p in zip(results.sample_id, results.junk_score, strict=True)}
    sample_repository.set_sample_scores(session, "junk_score", list(scores.items()))
    threshold = float(ctx.round.params.get("threshold", ctx.config.junk_threshold))
    states = sample_repository.sample_states(session, scores)
    busy = task_repository.open_task_samples(session, ctx.dataset.id, JUNK_KINDS)
    flagged = [sid for sid, p in scores.items() if p >= threshold]
    candidates = [
        sid
        for sid in flagged
        if sid in states
        and states[sid].decision_id is None
        and states[sid].status in NOT_JUNK
        and sid not in busy
    ]
    candidates.sort(key=lambda sid: (-scores[sid], sid))
    if ctx.config.junk_max_tasks is not None:
        candidates = candidates[: ctx.config.junk_max_tasks]
    items = [
        TaskItem(
            sample_id=sid,
            priority=scores[sid],
            score=scores[sid],
            reason=f"the junk model gives p(junk) = {scores[sid]:.3f}",
        )
        for sid in candidates
    ]
    queued = queue_tasks(ctx, TaskKind.JUNK_CHECK, items, reason="flagged by the junk model")
    ctx.stats(
        flagged=len(flagged),
        flagged_strict=sum(1 for p in scores.values() if p >= ctx.config.bulk_threshold),
        queued=queued,
        histogram=histogram(list(scores.values())),
        job_id=job.id,
    )
    review_or_done(ctx, queued)


def _iteration(ctx: RoundContext) -> PipelineRound:
    """The junk iteration a flag audit or bulk acceptance is about: the one named, else the
    latest finished."""
    rounds = [
        r
        for r in repository.list_rounds(ctx.session, ctx.pipeline.id)
        if r.kind is RoundKind.JUNK_ITERATION and r.state is RoundState.DONE
    ]
    wanted = ctx.params.iteration
    chosen = [r for r in rounds if wanted is None or r.number == wanted]
    if not chosen:
        which = f"junk iteration {wanted}" if wanted is not None else "a junk iteration"
        raise StepRefused(f"{which} must be finished first")
    return chosen[-1]


def _iteration_scores(
    ctx: RoundContext, iteration: PipelineRound, threshold: float
) -> dict[int, float]:
    """The iteration's flags at ``threshold`` that no human judged and are not junk already."""
    job_id = iteration.stats.get("job_id")
    if not isinstance(job_id, int):
        raise StepRefused(f"{iteration.source} has no scores")
    results = jobs.job_results(ctx.session, jobs.get_job(ctx.session, job_id))
    assert results.junk_score is not None
    flagged = {
        int(s): float(p)
        for s, p in zip(results.sample_id, results.junk_score, strict=True)
        if p >= threshold
    }
    states = sample_repository.sample_states(ctx.session, flagged)
    return {
        sid: p
        for sid, p in flagged.items()
        if sid in states and states[sid].decision_id is None and states[sid].status in NOT_JUNK
    }


def start_flag_audit(ctx: RoundContext) -> None:
    iteration = _iteration(ctx)
    threshold = ctx.params.threshold or ctx.config.bulk_threshold
    flagged = _iteration_scores(ctx, iteration, threshold)
    n = ctx.params.n if ctx.params.n is not None else ctx.config.flag_audit_size
    chosen = draw(sorted(flagged), n, ctx.seed)
    # Asked here at random, they need not wait in the iteration's (by-score) queue as well.
    task_repository.cancel_pending_tasks(
        ctx.session, ctx.dataset.id, kinds=[TaskKind.JUNK_CHECK], sample_ids=chosen
    )
    items = [
        TaskItem(
            sample_id=sid,
            score=flagged[sid],
            reason=f"random audit of the junk model's flags (p(junk) = {flagged[sid]:.3f})",
        )
        for sid in chosen
    ]
    ctx.round.params = {**ctx.round.params, "iteration": iteration.number, "threshold": threshold}
    queued = queue_tasks(ctx, TaskKind.JUNK_AUDIT, items, reason="audit of the junk flags")
    ctx.stats(iteration=iteration.number, threshold=threshold, flagged=len(flagged), queued=queued)
    review_or_done(ctx, queued)


def finish_flag_audit(ctx: RoundContext) -> None:
    _, verdicts = round_verdicts(ctx, TaskKind.JUNK_AUDIT)
    junk = sum(1 for v in verdicts.values() if v.verdict is Verdict.JUNK)
    precision = estimate(junk, len(verdicts), population=stats_int(ctx.round.stats, "flagged"))
    ctx.stats(
        decided=len(verdicts),
        junk=junk,
        precision=precision.to_dict(),
        bulk_allowed=bool(verdicts) and precision.low >= ctx.config.bulk_min_precision,
    )


def start_bulk_accept(ctx: RoundContext) -> None:
    iteration = _iteration(ctx)
    audits = [
        r
        for r in repository.list_rounds(ctx.session, ctx.pipeline.id)
        if r.kind is RoundKind.FLAG_AUDIT
        and r.state is RoundState.DONE
        and r.params.get("iteration") == iteration.number
    ]
    if not audits or not audits[-1].stats.get("bulk_allowed"):
        raise StepRefused(
            f"bulk acceptance needs a finished flag audit of {iteration.source} whose precision "
            f"is at least {ctx.config.bulk_min_precision:.0%} (lower bound)"
        )
    audit = audits[-1]
    threshold = float(audit.params["threshold"])
    flagged = _iteration_scores(ctx, iteration, threshold)
    changes = {
        sid: ModelChange(
            SampleStatus.JUNK,
            EventKind.BULK_JUNK,
            score=p,
            job_id=iteration.stats.get("job_id"),
            detail=f"p(junk) ≥ {threshold} after {audit.source}",
        )
        for sid, p in flagged.items()
    }
    apply_model_changes(ctx, changes)
    cancelled = task_repository.cancel_pending_tasks(
        ctx.session, ctx.dataset.id, kinds=[TaskKind.JUNK_CHECK], sample_ids=list(flagged)
    )
    ctx.round.params = {**ctx.round.params, "iteration": iteration.number, "threshold": threshold}
    ctx.stats(
        iteration=iteration.number,
        threshold=threshold,
        accepted=len(changes),
        tasks_cancelled=cancelled,
        audit=audit.source,
        precision=audit.stats.get("precision"),
    )
    finish(ctx)


def start_junk_audit(ctx: RoundContext) -> None:
    session = ctx.session
    busy = task_repository.open_task_samples(session, ctx.dataset.id, JUNK_KINDS)
    believed = sample_repository.states_where(session, ctx.dataset.id, statuses=NOT_JUNK)
    pool = [s.sample_id for s in believed if s.decision_id is None and s.sample_id not in busy]
    verified = sum(1 for s in believed if s.decision_id is not None)
    n = ctx.params.n if ctx.params.n is not None else ctx.config.audit_size
    chosen = draw(pool, n, ctx.seed)
    items = [TaskItem(sample_id=sid) for sid in chosen]
    queued = queue_tasks(
        ctx, TaskKind.JUNK_AUDIT, items, reason="random audit of samples believed clean"
    )
    ctx.stats(pool=len(pool), verified_clean=verified, believed_clean=len(believed), queued=queued)
    review_or_done(ctx, queued)


def finish_junk_audit(ctx: RoundContext) -> None:
    """The junk left: the audited rate among unverified samples (with bounds), scaled to them;
    over everything believed clean (verified samples count as clean); whether the upper bound
    is under the target."""
    _, verdicts = round_verdicts(ctx, TaskKind.JUNK_AUDIT)
    junk = sum(1 for v in verdicts.values() if v.verdict is Verdict.JUNK)
    pool = stats_int(ctx.round.stats, "pool")
    believed = max(stats_int(ctx.round.stats, "believed_clean"), 1)
    rate = estimate(junk, len(verdicts), population=pool)
    high = (rate.count_high if rate.count_high is not None else believed) / believed
    overall = {
        "rate": None if rate.count is None else rate.count / believed,
        "low": (rate.count_low or 0.0) / believed,
        "high": high,
    }
    ctx.stats(
        decided=len(verdicts),
        junk=junk,
        estimate=rate.to_dict(),
        overall=overall,
        target=ctx.config.junk_target_rate,
        meets_target=bool(verdicts) and high < ctx.config.junk_target_rate,
    )
