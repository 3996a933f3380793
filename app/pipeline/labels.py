"""The label stage's rounds: cross-validation (the top-k rule, then confident learning beside
it), pull-back rounds, and the human sample of the rejected set."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from app.errors import Invalid
from app.jobs import manifests as job_manifests
from app.jobs import repository as jobs_repository
from app.jobs import service as jobs
from app.models import (
    TRAINABLE,
    EventKind,
    Job,
    JobState,
    RoundState,
    SampleStatus,
    TaskKind,
    Verdict,
)
from app.pipeline import repository
from app.pipeline.config import (
    recipe_document,
    recipe_label,
    sample_count,
)
from app.pipeline.estimates import estimate
from app.pipeline.rounds import (
    LABEL_POOL,
    Ctx,
    ModelChange,
    StepRefused,
    apply_model_changes,
    classes_of,
    draw,
    finish,
    labelled_manifest,
    queue_job,
    queue_tasks,
    recipe_for,
    review_or_done,
    round_verdicts,
    set_phase,
    stats_int,
)
from app.pipeline.rules import HumanVerdict, label_rank, stratified_folds
from app.review.schemas import Suggestion, TaskItem
from ml.cleaning import calibrated_pullback
from ml.core.protocol.bundles import LabelIssues, decode_label_issues
from ml.core.protocol.jobs import (
    KNN_ISSUES_FILE,
    LABEL_ISSUES_FILE,
    ConfidentLearningSpec,
    EmbeddingRequest,
    JobKind,
    KnnSpec,
    ManifestRef,
    ProbsRef,
    TrainFoldSpec,
    TrainPredictSpec,
)

# --- label stage --------------------------------------------------------------------------------


def start_cross_validation(ctx: Ctx) -> None:
    session = ctx.session
    pool = repository.states_where(session, ctx.dataset.id, statuses=LABEL_POOL)
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


def _manifest_labels(ctx: Ctx) -> dict[int, int]:
    """Sample id → label class id, as the round's manifest gave them to the models."""
    ref = ManifestRef.model_validate(ctx.round.params["manifest"])
    manifest = job_manifests.load_manifest(ctx.env.data_dir, ref.sha256)
    class_ids = manifest.class_ids
    return {
        int(sid): int(class_ids[label]) if label >= 0 else -1
        for sid, label in zip(manifest.sample_ids, manifest.labels, strict=True)
    }


def _rule_changes(
    ctx: Ctx,
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
    changes: dict[int, ModelChange] = {}
    for row, sample_id in enumerate(results.sample_id.tolist()):
        label = labels.get(sample_id, -1)
        rank = label_rank(label, results.topk_class_id[row])
        p = None if label_probs is None else float(label_probs[row])
        p = None if p is not None and np.isnan(p) else p
        columns = {"label_rank": rank, "pred_job_id": job.id}
        confirmed = 0 <= rank < k
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


def cross_validation_done(ctx: Ctx, done: list[Job]) -> None:
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
        repository.update_samples(
            ctx.session, [{"sample_id": sid, **c.columns} for sid, c in changes.items()]
        )
    ctx.stats(
        predicted=len(changes),
        kept=kept,
        rejected=len(changes) - kept,
        fold_accuracy=accuracies,
        rule=ctx.config.rule,
    )
    _queue_detectors(ctx, done)


def _queue_detectors(ctx: Ctx, folds: list[Job]) -> None:
    """Queue confident learning (on the fold jobs' probabilities) and, when the fold models
    read embeddings, kNN label agreement, side by side."""
    manifest = ManifestRef.model_validate(ctx.round.params["manifest"])
    refs: list[ProbsRef] = []
    for job in folds:
        artifacts = {a.name: a for a in jobs.job_detail(ctx.session, job).artifacts}
        probs, ids = artifacts.get("probs.npy"), artifacts.get("probs_sample_ids.npy")
        if probs is None or ids is None:
            ctx.stats(confident_learning={"error": f"job {job.id} uploaded no probabilities"})
            refs = []
            break
        refs.append(
            ProbsRef(
                job_id=job.id,
                probs=jobs_repository.artifact_ref(probs),
                sample_ids=jobs_repository.artifact_ref(ids),
            )
        )
    job_ids = []
    if refs:
        spec = ConfidentLearningSpec(train=manifest, probs=refs, filter_by=ctx.config.filter_by)
        job_ids.append(queue_job(ctx, spec, "cleanlab").id)
    request = EmbeddingRequest.from_recipe(recipe_document(recipe_for(ctx, "fold")))
    if request is not None:
        spec_knn = KnnSpec(
            train=manifest,
            embedding=request,
            k=ctx.config.knn_k,
            top_k=int(ctx.round.params["k"]),
        )
        job_ids.append(queue_job(ctx, spec_knn, "knn").id)
    else:
        ctx.stats(knn={"error": "not run: the fold recipe does not read embeddings"})
    if not job_ids:
        _detectors_finished(ctx, {})
        return
    set_phase(ctx, "cleanlab", job_ids)


def _issues_of(ctx: Ctx, job: Job) -> LabelIssues:
    name = LABEL_ISSUES_FILE if job.kind is JobKind.CONFIDENT_LEARNING else KNN_ISSUES_FILE
    _, path = jobs.artifact_by_name(ctx.session, ctx.env.data_dir, job_id=job.id, name=name)
    return decode_label_issues(path.read_bytes())


def _detector_stats(ctx: Ctx, job: Job, issues: LabelIssues) -> dict[str, Any]:
    """How a detector's verdicts compare with the top-k rule's."""
    ids = issues.sample_id.tolist()
    flags = issues.is_issue.tolist()
    k = int(ctx.round.params["k"])
    ranks = repository.label_ranks(ctx.session, ids)
    rejected = {sid for sid, rank in ranks.items() if rank is None or rank < 0 or rank >= k}
    flagged = {sid for sid, flag in zip(ids, flags, strict=True) if flag}
    return {
        "job_id": job.id,
        "flagged": len(flagged),
        "both": len(flagged & rejected),
        "only_detector": len(flagged - rejected),
        "only_topk": len(rejected - flagged),
        "agreement": (
            sum(1 for sid in ids if (sid in flagged) == (sid in rejected)) / len(ids)
            if ids
            else None
        ),
    }


def detectors_done(ctx: Ctx, done: list[Job], failed: list[Job]) -> None:
    """Store what each detector found (its columns on every sample, its numbers in the round's
    stats) and, when it is the pipeline's rule, apply its verdicts. A detector that failed is
    reported; the round fails only when it was the rule."""
    found: dict[JobKind, LabelIssues] = {}
    for job in done:
        issues = _issues_of(ctx, job)
        found[job.kind] = issues
        if job.kind is JobKind.CONFIDENT_LEARNING:
            columns = ("cl_issue", "cl_quality")
            extra: dict[str, Any] = {"filter_by": ctx.config.filter_by}
            key = "confident_learning"
        else:
            columns = ("knn_issue", "knn_agreement")
            extra = {"k": ctx.config.knn_k}
            key = "knn"
        repository.update_samples(
            ctx.session,
            [
                {"sample_id": sid, columns[0]: bool(flag), columns[1]: float(q)}
                for sid, flag, q in zip(
                    issues.sample_id.tolist(),
                    issues.is_issue.tolist(),
                    issues.label_quality.tolist(),
                    strict=True,
                )
            ],
        )
        ctx.stats(**{key: {**_detector_stats(ctx, job, issues), **extra}})
    for job in failed:
        key = "confident_learning" if job.kind is JobKind.CONFIDENT_LEARNING else "knn"
        ctx.stats(**{key: {"job_id": job.id, "error": (job.error or "failed")[-2000:]}})
    _detectors_finished(ctx, found)


_RULE_KINDS = {"cleanlab": JobKind.CONFIDENT_LEARNING, "knn": JobKind.KNN}


def _detectors_finished(ctx: Ctx, found: dict[JobKind, LabelIssues]) -> None:
    rule = ctx.config.rule
    if rule == "topk":
        finish(ctx)
        return
    issues = found.get(_RULE_KINDS[rule])
    if issues is None:
        ctx.round.error = f"the {rule} detector did not run, and it is the pipeline's rule"
        finish(ctx, RoundState.FAILED)
        return
    what = "confident learning" if rule == "cleanlab" else f"kNN ({ctx.config.knn_k} neighbours)"
    changes = {
        sid: ModelChange(
            SampleStatus.REJECTED if flag else SampleStatus.KEPT,
            EventKind.REJECTED if flag else EventKind.KEPT,
            score=float(quality),
            detail=f"{ctx.round.source}: {what} {'flags' if flag else 'keeps'} the label",
        )
        for sid, flag, quality in zip(
            issues.sample_id.tolist(),
            issues.is_issue.tolist(),
            issues.label_quality.tolist(),
            strict=True,
        )
    }
    counts = apply_model_changes(ctx, changes)
    ctx.stats(statuses={status.value: n for status, n in sorted(counts.items())})
    finish(ctx)


def cleanlab_failed(ctx: Ctx, failed: list[Job], succeeded: list[Job]) -> None:
    """A detector job failed for good: the others' results still count (see
    :func:`detectors_done`)."""
    detectors_done(ctx, [job for job in succeeded if job.state is JobState.SUCCEEDED], failed)


def start_pull_back(ctx: Ctx) -> None:
    session = ctx.session
    kept = repository.states_where(session, ctx.dataset.id, statuses=TRAINABLE)
    rejected = repository.states_where(session, ctx.dataset.id, statuses={SampleStatus.REJECTED})
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


def pull_back_done(ctx: Ctx, done: list[Job]) -> None:
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
    states = repository.sample_states(ctx.session, changes)
    changes = {
        sid: c
        for sid, c in changes.items()
        if sid in states and states[sid].model_status is SampleStatus.REJECTED
    }
    pulled = sum(1 for c in changes.values() if c.model_status is SampleStatus.PULLED_BACK)
    apply_model_changes(ctx, changes)
    ctx.stats(predicted=len(changes), pulled_back=pulled, job_id=job.id)
    finish(ctx)


def start_human_sample(ctx: Ctx) -> None:
    session = ctx.session
    rejected = repository.states_where(session, ctx.dataset.id, statuses={SampleStatus.REJECTED})
    pool = repository.human_sample_pool(session, ctx.dataset.id)
    fraction = ctx.params.fraction if ctx.params.fraction is not None else ctx.config.human_fraction
    n = min(len(pool), sample_count(fraction, len(rejected)))
    chosen = draw(pool, n, ctx.seed)
    jobs_of = repository.pred_jobs(session, chosen)
    topk = repository.topk_of(session, [(job_id, sid) for sid, job_id in jobs_of.items()])
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


def finish_human_sample(ctx: Ctx) -> None:
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


def _pull_back_by_verdicts(ctx: Ctx, verdicts: dict[int, HumanVerdict]) -> dict[str, Any]:
    """The calibrated pull-back (:func:`ml.cleaning.calibrated_pullback`): the annotators'
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
        for s in repository.states_where(
            ctx.session, ctx.dataset.id, statuses={SampleStatus.REJECTED}, unverified=True
        )
        if s.sample_id not in wrong
    ]
    scores = repository.latest_label_probs(ctx.session, [*wrong, *rejected])
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
