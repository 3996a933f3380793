"""What the pipeline shows about classes: every class's size before and after cleaning and as
the final training's balanced sampler draws it, and the dropped classes an engineer may
restore. Read-only."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy.orm import Session

from app.models import TRAINABLE, ClassState, Dataset, Pipeline, RoundKind, SampleStatus, Verdict
from app.pipeline import repository, sample_repository
from app.pipeline.config import parse_config, recipe_document, recipes_for, spec_recipe
from app.pipeline.schemas import ClassSize, DroppedClass
from app.review.repository import verdicts as verdict_repository


def _final_recipe(session: Session, pipeline: Pipeline, dataset: Dataset) -> dict[str, Any]:
    """The final training's recipe: the one the last final round used, else the one it would."""
    final = repository.latest_round(session, pipeline.id, [RoundKind.FINAL_TRAINING], done=False)
    if final is not None:
        for job, role in repository.round_jobs(session, final.id):
            if role == "final":
                return recipe_document(job.spec.get("recipe", {}))
    config = parse_config(pipeline.config)
    choice = recipes_for(config, "final")[0]
    return recipe_document(spec_recipe(choice, config.recipe_overrides))


def balanced_draws(counts: dict[int, int], min_fraction: float | None) -> dict[int, float]:
    """Per class, the draws of one natural-length epoch of the balanced sampler
    (:mod:`ml.sampler`): max(n_c, ceil(f × n_max)), 0 for an empty class; the counts as they
    are without balancing."""
    if min_fraction is None or not counts:
        return {cid: float(n) for cid, n in counts.items()}
    floor = math.ceil(round(min_fraction * max(counts.values()), 9))
    return {cid: float(max(n, floor)) if n > 0 else 0.0 for cid, n in counts.items()}


def class_sizes(session: Session, pipeline: Pipeline, dataset: Dataset) -> list[ClassSize]:
    """Every class, by name: before cleaning, after, and as the balanced sampler draws them."""
    names = sample_repository.class_names(session, dataset.id)
    before = sample_repository.class_counts(
        session,
        dataset.id,
        statuses=set(SampleStatus) - {SampleStatus.DUPLICATE},
        by_given=True,
    )
    after = sample_repository.class_counts(session, dataset.id, statuses=TRAINABLE)
    kept = sample_repository.class_counts(
        session, dataset.id, statuses={SampleStatus.KEPT, SampleStatus.PULLED_BACK}
    )
    rejected = sample_repository.class_counts(session, dataset.id, statuses={SampleStatus.REJECTED})
    junk = sample_repository.class_counts(session, dataset.id, statuses={SampleStatus.JUNK})
    states = sample_repository.pipeline_classes(session, dataset.id)
    balance = _final_recipe(session, pipeline, dataset).get("balance")
    fraction = balance.get("min_fraction", 1 / 3) if isinstance(balance, dict) else None
    final_counts = {
        cid: after.get(cid, 0)
        for cid in names
        if not (cid in states and states[cid].state is ClassState.DROPPED)
    }
    draws = balanced_draws(final_counts, fraction)
    return [
        ClassSize(
            class_id=cid,
            name=name,
            state=states[cid].state if cid in states else ClassState.ACTIVE,
            before=before.get(cid, 0),
            after=after.get(cid, 0),
            sampled=draws.get(cid, 0.0),
            kept=kept.get(cid, 0),
            rejected=rejected.get(cid, 0),
            junk=junk.get(cid, 0),
            decision_id=states[cid].decision_id if cid in states else None,
        )
        for cid, name in sorted(names.items(), key=lambda item: (item[1], item[0]))
    ]


def dropped_classes(session: Session, dataset: Dataset) -> list[DroppedClass]:
    """The classes the class review dropped, by name, with who dropped them (what the
    dashboard offers to restore)."""
    rows = sample_repository.pipeline_classes(session, dataset.id)
    dropped = {cid: row for cid, row in rows.items() if row.state is ClassState.DROPPED}
    if not dropped:
        return []
    names = sample_repository.class_names(session, dataset.id)
    out = sample_repository.class_counts(session, dataset.id, statuses={SampleStatus.DROPPED})
    votes = verdict_repository.class_votes(session, dataset.id, set(dropped))
    drops = {
        cid: [
            v
            for v in votes.get(cid, [])
            if v.verdict is Verdict.DROP and v.decision_id > row.votes_after_id
        ]
        for cid, row in dropped.items()
    }
    who = verdict_repository.decision_usernames(
        session, {v.decision_id for found in drops.values() for v in found}
    )
    return sorted(
        (
            DroppedClass(
                class_id=cid,
                name=names.get(cid, f"class {cid}"),
                samples=out.get(cid, 0),
                dropped_by=sorted({who[v.decision_id] for v in drops[cid] if v.decision_id in who}),
                decision_id=row.decision_id,
            )
            for cid, row in dropped.items()
        ),
        key=lambda item: (item.name, item.class_id),
    )
