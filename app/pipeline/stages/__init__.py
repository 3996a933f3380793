"""The pipeline's stages: what each kind of round does when it starts, when its jobs have
succeeded and when its review tasks are all decided (:data:`RULES`).

- :mod:`.junk`: the junk seed, junk iterations, flag audits, bulk acceptance, junk audits;
- :mod:`.labels`: cross-validation and pull-back rounds under the top-k rule, and the human
  sample of the rejected set; :mod:`.detectors`, confident learning and kNN beside the rule;
- :mod:`.final`: the class review and the final training;
- :mod:`.embeddings`: the embed jobs a round waits for before its own start;
- :mod:`.context`: the round being started or advanced and what every kind does through it;
  :mod:`.round_jobs`, the manifests and jobs a round queues;
- :mod:`.lifecycle`: starting a round and moving it on by these rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.models import Job, RoundKind
from app.pipeline.stages.context import RoundContext
from app.pipeline.stages.final import (
    final_training_done,
    finish_class_review,
    start_class_review,
    start_final_training,
)
from app.pipeline.stages.junk import (
    finish_flag_audit,
    finish_junk_audit,
    finish_junk_review,
    junk_iteration_done,
    start_bulk_accept,
    start_flag_audit,
    start_junk_audit,
    start_junk_iteration,
    start_junk_seed,
)
from app.pipeline.stages.labels import (
    cross_validation_done,
    finish_human_sample,
    pull_back_done,
    start_cross_validation,
    start_human_sample,
    start_pull_back,
)


@dataclass(frozen=True)
class RoundRules:
    """What a kind of round does at each point of its life."""

    start: Callable[[RoundContext], None]
    jobs_done: Callable[[RoundContext, list[Job]], None] | None = None
    review_done: Callable[[RoundContext], None] | None = None


RULES: dict[RoundKind, RoundRules] = {
    RoundKind.JUNK_SEED: RoundRules(start_junk_seed, review_done=finish_junk_review),
    RoundKind.JUNK_ITERATION: RoundRules(
        start_junk_iteration, junk_iteration_done, finish_junk_review
    ),
    RoundKind.FLAG_AUDIT: RoundRules(start_flag_audit, review_done=finish_flag_audit),
    RoundKind.BULK_ACCEPT: RoundRules(start_bulk_accept),
    RoundKind.JUNK_AUDIT: RoundRules(start_junk_audit, review_done=finish_junk_audit),
    RoundKind.CROSS_VALIDATION: RoundRules(start_cross_validation, cross_validation_done),
    RoundKind.PULL_BACK: RoundRules(start_pull_back, pull_back_done),
    RoundKind.HUMAN_SAMPLE: RoundRules(start_human_sample, review_done=finish_human_sample),
    RoundKind.CLASS_REVIEW: RoundRules(start_class_review, review_done=finish_class_review),
    RoundKind.FINAL_TRAINING: RoundRules(start_final_training, final_training_done),
}
