"""The label stage's rounds: cross-validation (the top-k rule, then the detectors of
:mod:`~app.pipeline.stages.detectors` beside it), pull-back rounds, and the human sample of the
rejected set."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from app.errors import Invalid
from app.jobs import manifests as job_manifests
from app.jobs import service as jobs
from app.models import (
    TRAINABLE,
    EventKind,
    Job,
    SampleStatus,
    TaskKind,
    Verdict,
)
from app.pipeline import result_repository, sample_repository
from app.pipeline.config import (
    recipe_label,
    sample_count,
)
from app.pipeline.estimates import estimate
from app.pipeline.rules import HumanVerdict, stats_int
from app.pipeline.stages.context import (
    LABEL_POOL,
    ModelChange,
    RoundContext,
    StepRefused,
    apply_model_changes,
    classes_of,
    draw,
    finish,
    queue_tasks,
    review_or_done,
    round_verdicts,
    set_phase,
)
from app.pipeline.stages.detectors import detectors_done, queue_detectors
from app.pipeline.stages.round_jobs import (
    labelled_manifest,
    queue_job,
    recipe_for,
)
from app.review.records import Suggestion, TaskItem
from ml.core.cleaning.topk import calibrated_pullback, label_ranks_in_topk, topk_keep_from_ranks
from ml.core.folds import stratified_folds
from ml.core.protocol.jobs import (
    ManifestRef,
    TrainFoldSpec,
    TrainPredictSpec,
)

# --- label stage --------------------------------------------------------------------------------


def start_cross_validation(ctx: RoundContext) -> None:
    session = ctx.session
    pool = sample_repository.states_where(session, ctx.dataset.id, statuses=LABEL_POOL)
    classes = classes_of(pool)
    k = ctx.config.folds
    if len(classes) < 2 or len(pool) < 2 * k:
        raise StepRefused(
            f"cross-validation needs two classes and at least {2 * k} samples; there are "
            f"{len(classes)} classes and {len(pool)} samples"
        )
    folds = stratified_folds([s.label_class_id for s in pool], k, ctx.seed)
    manifest = labelled_manifest(ctx, pool, classes, folds=folds)
    rule_k = ctx.config.k_for(len(classes))
    top_k = min(max(rule_k, ctx.config.suggestions), len(classes))
    recipe = recipe_for(ctx, "fold")
    job_ids = [
        queue_job(
            ctx,
            TrainFoldSpec(
                recipe=recipe,
                train=manifest,
                fold=fold,
                top_k=top_k,
                keep_probs=True,
                seed=ctx.config.seed,
            ),
            f"fold {fold}",
        ).id
        for fold in range(k)
    ]
    ctx.round.params = {
        **ctx.round.params,
        "manifest": manifest.model_dump(mode="json"),
        "classes": classes,
        "k": rule_k,
        "top_k": top_k,
        "folds": k,
    }
    set_phase(ctx, "folds", job_ids)
    ctx.stats(samples=len(pool), classes=len(classes), k=rule_k, recipe=recipe_label(recipe))


def _manifest_labels(ctx: RoundContext) -> dict[int, int]:
    """Sample id → label class id, as the round's manifest gave them to the models."""
    ref = ManifestRef.model_validate(ctx.round.params["manifest"])
    manifest = job_manifests.load_manifest(ctx.env.data_dir, ref.sha256)
    class_ids = manifest.class_ids
    return {
        int(sid): int(class_ids[label]) if label >= 0 else -1
        for sid, label in zip(manifest.sample_ids, manifest.labels, strict=True)
    }


def _rule_changes(
    ctx: RoundContext,
    job: Job,
    labels: dict[int, int],
    k: int,
    *,
    keep: SampleStatus,
    reject: SampleStatus | None,
    what: str,
) -> dict[int, ModelChange]:
    """Each predicted sample's verdict under the top-k rule from ``job``'s results: ``keep`` when
    its label is among the first ``k`` classes, else ``reject`` (None: no change, but the
    prediction is recorded)."""
    results = jobs.job_results(ctx.session, job)
    if results.topk_class_id is None:
        raise Invalid(f"job {job.id} reported no top-k classes")
    label_probs = results.label_prob
    sample_ids = results.sample_id.tolist()
    ranks = label_ranks_in_topk([labels.get(sid, -1) for sid in sample_ids], results.topk_class_id)
    kept = topk_keep_from_ranks(ranks, k)
    changes: dict[int, ModelChange] = {}
    for row, sample_id in enumerate(sample_ids):
        rank = int(ranks[row])
        p = None if label_probs is None else float(label_probs[row])
        p = None if p is not None and np.isnan(p) else p
        columns = {"label_rank": rank, "pred_job_id": job.id}
        confirmed = bool(kept[row])
        position = f"rank {rank + 1}" if rank >= 0 else f"not in the top {results.k}"
        if confirmed or reject is not None:
            status = keep if confirmed else reject
            assert status is not None
            changes[sample_id] = ModelChange(
                status,
                EventKind(status.value) if status in _EVENT_STATUSES else None,
                score=p,
                job_id=job.id,
                detail=f"{what}: the label is at {position} (top-{k} rule)",
                columns=columns,
            )
        else:
            changes[sample_id] = ModelChange(
                SampleStatus.REJECTED, None, job_id=job.id, columns=columns
            )
    return changes


_EVENT_STATUSES = {SampleStatus.KEPT, SampleStatus.REJECTED, SampleStatus.PULLED_BACK}


def cross_validation_done(ctx: RoundContext, done: list[Job]) -> None:
    """The fold jobs are done: apply the top-k rule (unless another detector is the rule), then
    run the other detectors on the same out-of-fold probabilities and embeddings."""
    if ctx.round.phase == "cleanlab":
        detectors_done(ctx, done, [])
        return
    labels = _manifest_labels(ctx)
    k = int(ctx.round.params["k"])
    changes: dict[int, ModelChange] = {}
    accuracies: list[float | None] = []
    for job in done:
        changes.update(
            _rule_changes(
                ctx,
                job,
                labels,
                k,
                keep=SampleStatus.KEPT,
                reject=SampleStatus.REJECTED,
                what=ctx.round.source,
            )
        )
        value = (job.summary or {}).get("heldout_accuracy")
        accuracies.append(float(value) if isinstance(value, int | float) else None)
    kept = sum(1 for c in changes.values() if c.model_status is SampleStatus.KEPT)
    if ctx.config.rule == "topk":
        counts = apply_model_changes(ctx, changes)
        rejected_by_class = Counter(
            labels[sid] for sid, c in changes.items() if c.model_status is SampleStatus.REJECTED
        )
        ctx.stats(
            statuses={status.value: n for status, n in sorted(counts.items())},
            rejected_by_class={str(cid): n for cid, n in sorted(rejected_by_class.items())},
        )
    else:
        # Another detector decides: record the predictions now, the verdicts when it is done.
        sample_repository.update_samples(
            ctx.session, [{"sample_id": sid, **c.columns} for sid, c in changes.items()]
        )
    ctx.stats(
        predicted=len(changes),
        kept=kept,
        rejected=len(changes) - kept,
        fold_accuracy=accuracies,
        rule=ctx.config.rule,
    )
    queue_detectors(ctx, done)


def start_pull_back(ctx: RoundContext) -> None:
    session = ctx.session
    kept = sample_repository.states_where(session, ctx.dataset.id, statuses=TRAINABLE)
    rejected = sample_repository.states_where(
        session, ctx.dataset.id, statuses={SampleStatus.REJECTED}
    )
    number = ctx.round.number
    if not rejected:
        ctx.stats(predicted=0, pulled_back=0, skipped="nothing is rejected")
        finish(ctx)
        return
    classes = classes_of(kept)
    if len(classes) < 2:
        raise StepRefused(f"the kept set has {len(classes)} class(es): nothing to train on")
    recipe = recipe_for(ctx, "pullback", index=number - 1)
    k = ctx.config.k_for(len(classes))
    top_k = min(max(k, ctx.config.suggestions), len(classes))
    train = labelled_manifest(ctx, kept, classes)
    predict = labelled_manifest(ctx, rejected, classes)
    job = queue_job(
        ctx,
        TrainPredictSpec(
            recipe=recipe, train=train, predict=predict, top_k=top_k, seed=ctx.config.seed
        ),
        "train and predict",
    )
    ctx.round.params = {
        **ctx.round.params,
        "manifest": predict.model_dump(mode="json"),
        "train_manifest": train.model_dump(mode="json"),
        "k": k,
    }
    set_phase(ctx, "model", [job.id])
    ctx.stats(train=len(kept), predict=len(rejected), k=k, recipe=recipe_label(recipe))


def pull_back_done(ctx: RoundContext, done: list[Job]) -> None:
    [job] = done
    labels = _manifest_labels(ctx)
    changes = _rule_changes(
        ctx,
        job,
        labels,
        int(ctx.round.params["k"]),
        keep=SampleStatus.PULLED_BACK,
        reject=None,
        what=ctx.round.source,
    )
    # Only rows still rejected move: a human may have decided some while the job ran.
    states = sample_repository.sample_states(ctx.session, changes)
    changes = {
        sid: c
        for sid, c in changes.items()
        if sid in states and states[sid].model_status is SampleStatus.REJECTED
    }
    pulled = sum(1 for c in changes.values() if c.model_status is SampleStatus.PULLED_BACK)
    apply_model_changes(ctx, changes)
    ctx.stats(predicted=len(changes), pulled_back=pulled, job_id=job.id)
    finish(ctx)


def start_human_sample(ctx: RoundContext) -> None:
    session = ctx.session
    rejected = sample_repository.states_where(
        session, ctx.dataset.id, statuses={SampleStatus.REJECTED}
    )
    pool = sample_repository.human_sample_pool(session, ctx.dataset.id)
    fraction = ctx.params.fraction if ctx.params.fraction is not None else ctx.config.human_fraction
    n = min(len(pool), sample_count(fraction, len(rejected)))
    chosen = draw(pool, n, ctx.seed)
    jobs_of = result_repository.pred_jobs(session, chosen)
    topk = result_repository.topk_of(session, [(job_id, sid) for sid, job_id in jobs_of.items()])
    items = []
    for sid in chosen:
        suggestions: tuple[Suggestion, ...] = ()
        if sid in topk:
            ids, probs = topk[sid]
            classes = np.frombuffer(ids, dtype="<i4")[: ctx.config.suggestions]
            values = np.frombuffer(probs, dtype="<f4")[: ctx.config.suggestions]
            suggestions = tuple(
                Suggestion(class_id=int(c), probability=float(min(max(p, 0.0), 1.0)))
                for c, p in zip(classes, values, strict=True)
            )
        items.append(TaskItem(sample_id=sid, suggestions=suggestions))
    queued = queue_tasks(
        ctx,
        TaskKind.LABEL_CHECK,
        items,
        reason="rejected: the given label is not among the model's top classes",
    )
    ctx.round.params = {**ctx.round.params, "fraction": fraction}
    ctx.stats(rejected=len(rejected), pool=len(pool), sampled=len(chosen), queued=queued)
    review_or_done(ctx, queued)


def finish_human_sample(ctx: RoundContext) -> None:
    """What annotators found in the random sample of the rejected set, and two estimates over
    the rejected samples not sampled (unsure answers left out): ``estimate``, those wrongly
    rejected (their given label was right: accepted); ``usable``, those worth keeping under
    some label (accepted or relabelled)."""
    _, verdicts = round_verdicts(ctx, TaskKind.LABEL_CHECK)
    counts = Counter(v.verdict for v in verdicts.values())
    right = counts[Verdict.ACCEPT]
    usable = right + counts[Verdict.RELABEL]
    judged = usable + counts[Verdict.JUNK]
    remaining = max(
        stats_int(ctx.round.stats, "rejected") - stats_int(ctx.round.stats, "sampled"), 0
    )
    ctx.stats(
        decided=len(verdicts),
        accepted=counts[Verdict.ACCEPT],
        relabelled=counts[Verdict.RELABEL],
        junk=counts[Verdict.JUNK],
        unsure=counts[Verdict.UNSURE],
        estimate=estimate(right, judged, population=remaining).to_dict(),
        usable=estimate(usable, judged, population=remaining).to_dict(),
        human_pullback=_pull_back_by_verdicts(ctx, verdicts),
    )


def _pull_back_by_verdicts(ctx: RoundContext, verdicts: dict[int, HumanVerdict]) -> dict[str, Any]:
    """The calibrated pull-back (:func:`ml.core.cleaning.topk.calibrated_pullback`): the annotators'
    verdicts on the random sample say, as a function of the latest model's probability of the
    given label, how often a reject's label is wrong; the unchecked rejects where it is wrong
    less often than ``human_pullback`` come back. Returns the round's stats of it."""
    threshold = ctx.config.human_pullback
    if threshold is None:
        return {"skipped": "off"}
    wrong = {
        sid: v.verdict is not Verdict.ACCEPT
        for sid, v in verdicts.items()
        if v.verdict is not Verdict.UNSURE
    }
    rejected = [
        s.sample_id
        for s in sample_repository.states_where(
            ctx.session, ctx.dataset.id, statuses={SampleStatus.REJECTED}, unverified=True
        )
        if s.sample_id not in wrong
    ]
    scores = result_repository.latest_label_probs(ctx.session, [*wrong, *rejected])
    judged = [sid for sid in wrong if sid in scores]
    candidates = [sid for sid in rejected if sid in scores]
    moved = calibrated_pullback(
        np.array([scores[sid] for sid in judged], dtype=np.float64),
        np.array([wrong[sid] for sid in judged], dtype=bool),
        np.array([scores[sid] for sid in candidates], dtype=np.float64),
        max_wrong=threshold,
    )
    chosen = [sid for sid, back in zip(candidates, moved.tolist(), strict=True) if back]
    lowest = min((scores[sid] for sid in chosen), default=None)
    detail = (
        f"{ctx.round.source}: people found rejects whose label the model gives at least "
        f"{lowest:.3f} right more often than not"
        if lowest is not None
        else ""
    )
    apply_model_changes(
        ctx,
        {
            sid: ModelChange(
                SampleStatus.PULLED_BACK, EventKind.PULLED_BACK, score=scores[sid], detail=detail
            )
            for sid in chosen
        },
    )
    return {
        "judged": len(judged),
        "candidates": len(candidates),
        "pulled_back": len(chosen),
        "max_wrong": threshold,
        "from_probability": lowest,
    }
