"""The label-issue detectors a cross-validation runs beside the top-k rule, on the same
out-of-fold probabilities and embeddings: confident learning and kNN label agreement. Their
findings are stored on every sample and compared with the rule's; when the pipeline's ``rule``
names one of them, its verdicts are the round's."""

from __future__ import annotations

from typing import Any

from app.jobs import repository as jobs_repository
from app.jobs import service as jobs
from app.models import EventKind, Job, JobState, RoundState, SampleStatus
from app.pipeline import sample_repository
from app.pipeline.config import recipe_document
from app.pipeline.stages.context import (
    ModelChange,
    RoundContext,
    apply_model_changes,
    finish,
    set_phase,
)
from app.pipeline.stages.round_jobs import queue_job, recipe_for
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
)


def queue_detectors(ctx: RoundContext, folds: list[Job]) -> None:
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


def _issues_of(ctx: RoundContext, job: Job) -> LabelIssues:
    name = LABEL_ISSUES_FILE if job.kind is JobKind.CONFIDENT_LEARNING else KNN_ISSUES_FILE
    _, path = jobs.artifact_by_name(ctx.session, ctx.env.data_dir, job_id=job.id, name=name)
    return decode_label_issues(path.read_bytes())


def _detector_stats(ctx: RoundContext, job: Job, issues: LabelIssues) -> dict[str, Any]:
    """How a detector's verdicts compare with the top-k rule's."""
    ids = issues.sample_id.tolist()
    flags = issues.is_issue.tolist()
    k = int(ctx.round.params["k"])
    ranks = sample_repository.label_ranks(ctx.session, ids)
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


def detectors_done(ctx: RoundContext, done: list[Job], failed: list[Job]) -> None:
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
        sample_repository.update_samples(
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


def _detectors_finished(ctx: RoundContext, found: dict[JobKind, LabelIssues]) -> None:
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


def cleanlab_failed(ctx: RoundContext, failed: list[Job], succeeded: list[Job]) -> None:
    """A detector job failed for good: the others' results still count (see
    :func:`detectors_done`)."""
    detectors_done(ctx, [job for job in succeeded if job.state is JobState.SUCCEEDED], failed)
