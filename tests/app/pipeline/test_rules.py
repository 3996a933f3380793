"""The loop's pure rules: folds, which verdict counts, a sample's status, what auto mode does."""

from __future__ import annotations

from collections import Counter

import pytest

from app.models import ClassState, RoundKind, RoundState, SampleStatus, Stage, Verdict
from app.pipeline.config import (
    PipelineConfig,
    RecipeChoice,
    merged_config,
    sample_count,
    spec_recipe,
)
from app.pipeline.rules import (
    ClassVote,
    HumanVerdict,
    RoundView,
    class_outcome,
    effective_verdict,
    next_step,
    resolve_status,
)
from app.pipeline.sample_repository import SampleState
from app.pipeline.stages.final import evaluation_set

# --- verdicts and statuses ----------------------------------------------------------------------

JUNK = HumanVerdict(1, Verdict.JUNK, None)
NOT_JUNK = HumanVerdict(1, Verdict.NOT_JUNK, None)


def test_the_newer_verdict_counts() -> None:
    accept = HumanVerdict(2, Verdict.ACCEPT, 5)
    assert effective_verdict(JUNK, accept) == accept
    assert effective_verdict(HumanVerdict(3, Verdict.JUNK, None), accept).verdict is Verdict.JUNK  # type: ignore[union-attr]


def test_a_newer_unsure_does_not_undo_an_older_junk() -> None:
    assert effective_verdict(JUNK, HumanVerdict(2, Verdict.UNSURE, None)) == JUNK


def test_a_newer_not_junk_keeps_what_an_older_label_check_said() -> None:
    relabel = HumanVerdict(1, Verdict.RELABEL, 9)
    assert effective_verdict(HumanVerdict(2, Verdict.NOT_JUNK, None), relabel) == relabel


@pytest.mark.parametrize(
    ("model", "verdict", "status", "label"),
    [
        (SampleStatus.REJECTED, HumanVerdict(1, Verdict.ACCEPT, 5), SampleStatus.CONFIRMED, 5),
        (SampleStatus.REJECTED, HumanVerdict(1, Verdict.RELABEL, 6), SampleStatus.RELABELLED, 6),
        (SampleStatus.REJECTED, HumanVerdict(1, Verdict.JUNK, None), SampleStatus.JUNK, 5),
        (SampleStatus.REJECTED, HumanVerdict(1, Verdict.UNSURE, None), SampleStatus.REJECTED, 5),
        (SampleStatus.KEPT, NOT_JUNK, SampleStatus.KEPT, 5),
        (SampleStatus.JUNK, None, SampleStatus.JUNK, 5),  # accepted in bulk
        (SampleStatus.JUNK, NOT_JUNK, SampleStatus.CANDIDATE, 5),  # a human said otherwise
        (SampleStatus.PULLED_BACK, None, SampleStatus.PULLED_BACK, 5),
        (SampleStatus.DUPLICATE, HumanVerdict(1, Verdict.ACCEPT, 5), SampleStatus.DUPLICATE, 5),
    ],
)
def test_a_status_follows_from_the_model_and_the_human(
    model: SampleStatus, verdict: HumanVerdict | None, status: SampleStatus, label: int
) -> None:
    assert resolve_status(model, verdict, 5, dropped=set()) == (status, label)


def test_a_dropped_class_takes_its_samples_out_unless_they_are_junk() -> None:
    assert resolve_status(SampleStatus.KEPT, None, 5, {5}) == (SampleStatus.DROPPED, 5)
    assert resolve_status(SampleStatus.KEPT, JUNK, 5, {5}) == (SampleStatus.JUNK, 5)
    relabelled_out = HumanVerdict(1, Verdict.RELABEL, 6)
    assert resolve_status(SampleStatus.KEPT, relabelled_out, 5, {5}) == (
        SampleStatus.RELABELLED,
        6,
    )


# --- auto mode ----------------------------------------------------------------------------------


def _done(kind: RoundKind, **stats: object) -> RoundView:
    return RoundView(kind, RoundState.DONE, dict(stats))


def _next(
    stage: Stage, *rounds: RoundView, can_iterate: bool = True
) -> tuple[Stage, RoundKind | None]:
    step = next_step(
        stage,
        rounds,
        can_iterate=can_iterate,
        max_junk_iterations=2,
        max_pullback_rounds=2,
        human_fraction=0.05,
    )
    assert step is not None
    return step.stage, step.kind


def test_the_junk_stage_seeds_iterates_and_audits_until_the_target_is_met() -> None:
    seed, iteration = _done(RoundKind.JUNK_SEED), _done(RoundKind.JUNK_ITERATION)
    too_much = _done(RoundKind.JUNK_AUDIT, meets_target=False)
    clean = _done(RoundKind.JUNK_AUDIT, meets_target=True)
    assert _next(Stage.JUNK) == (Stage.JUNK, RoundKind.JUNK_SEED)
    assert _next(Stage.JUNK, seed) == (Stage.JUNK, RoundKind.JUNK_ITERATION)
    assert _next(Stage.JUNK, seed, iteration) == (Stage.JUNK, RoundKind.JUNK_AUDIT)
    assert _next(Stage.JUNK, seed, iteration, too_much) == (Stage.JUNK, RoundKind.JUNK_ITERATION)
    assert _next(Stage.JUNK, seed, iteration, clean) == (Stage.LABEL, RoundKind.CROSS_VALIDATION)
    used_up = (seed, iteration, too_much, iteration, too_much)
    assert _next(Stage.JUNK, *used_up) == (Stage.LABEL, RoundKind.CROSS_VALIDATION)


def test_junk_iterations_follow_each_other_until_one_finds_little_then_an_audit() -> None:
    seed = _done(RoundKind.JUNK_SEED)
    fruitful, poor = (
        _done(RoundKind.JUNK_ITERATION, junk=10),
        _done(RoundKind.JUNK_ITERATION, junk=9),
    )
    too_much = _done(RoundKind.JUNK_AUDIT, meets_target=False)
    assert _next(Stage.JUNK, seed, fruitful) == (Stage.JUNK, RoundKind.JUNK_ITERATION)
    assert _next(Stage.JUNK, seed, poor) == (Stage.JUNK, RoundKind.JUNK_AUDIT)
    # At most max_junk_iterations (2 here), however much the last one found.
    assert _next(Stage.JUNK, seed, fruitful, fruitful) == (Stage.JUNK, RoundKind.JUNK_AUDIT)
    assert _next(Stage.JUNK, seed, poor, too_much) == (Stage.JUNK, RoundKind.JUNK_ITERATION)
    step = next_step(
        Stage.JUNK,
        [seed, fruitful],
        can_iterate=True,
        max_junk_iterations=5,
        max_pullback_rounds=2,
        human_fraction=0.05,
        junk_min_found=11,
    )
    assert step is not None and step.kind is RoundKind.JUNK_AUDIT


def test_without_labels_to_train_on_the_junk_stage_audits_straight_away() -> None:
    seed = _done(RoundKind.JUNK_SEED)
    assert _next(Stage.JUNK, seed, can_iterate=False) == (Stage.JUNK, RoundKind.JUNK_AUDIT)
    failing = _done(RoundKind.JUNK_AUDIT, meets_target=False)
    assert _next(Stage.JUNK, seed, failing, can_iterate=False) == (
        Stage.LABEL,
        RoundKind.CROSS_VALIDATION,
    )


def test_the_label_stage_pulls_back_until_nothing_comes_then_asks_humans_then_pulls_again() -> None:
    cv = _done(RoundKind.CROSS_VALIDATION)
    some, none = (
        _done(RoundKind.PULL_BACK, pulled_back=4),
        _done(RoundKind.PULL_BACK, pulled_back=0),
    )
    sample = _done(RoundKind.HUMAN_SAMPLE)
    assert _next(Stage.LABEL) == (Stage.LABEL, RoundKind.CROSS_VALIDATION)
    assert _next(Stage.LABEL, cv) == (Stage.LABEL, RoundKind.PULL_BACK)
    assert _next(Stage.LABEL, cv, some) == (Stage.LABEL, RoundKind.PULL_BACK)
    assert _next(Stage.LABEL, cv, some, none) == (Stage.LABEL, RoundKind.HUMAN_SAMPLE)
    assert _next(Stage.LABEL, cv, some, some) == (Stage.LABEL, RoundKind.HUMAN_SAMPLE)  # at most 2
    assert _next(Stage.LABEL, cv, none, sample) == (Stage.LABEL, RoundKind.PULL_BACK)
    assert _next(Stage.LABEL, cv, none, sample, none) == (Stage.CLASS, RoundKind.CLASS_REVIEW)


def test_the_class_review_leads_to_the_final_training_and_then_to_done() -> None:
    assert _next(Stage.CLASS) == (Stage.CLASS, RoundKind.CLASS_REVIEW)
    assert _next(Stage.CLASS, _done(RoundKind.CLASS_REVIEW)) == (
        Stage.FINAL,
        RoundKind.FINAL_TRAINING,
    )
    assert _next(Stage.FINAL, _done(RoundKind.FINAL_TRAINING)) == (Stage.DONE, None)


def test_nothing_starts_while_a_round_is_open_or_failed() -> None:
    for state in (RoundState.RUNNING, RoundState.REVIEWING, RoundState.FAILED):
        rounds = [RoundView(RoundKind.JUNK_SEED, state, {})]
        assert (
            next_step(
                Stage.JUNK,
                rounds,
                can_iterate=True,
                max_junk_iterations=1,
                max_pullback_rounds=1,
                human_fraction=0.1,
            )
            is None
        )


# --- config and evaluation sets -----------------------------------------------------------------


def test_k_is_one_for_few_classes_and_five_for_many_unless_set() -> None:
    config = PipelineConfig()
    assert (config.k_for(10), config.k_for(3000), config.k_for(3)) == (1, 5, 1)
    assert merged_config({}, {"top_k": 3}).k_for(10) == 3


def test_a_config_key_set_to_null_returns_to_its_default() -> None:
    assert merged_config({"audit_size": 10}, {"audit_size": None}).audit_size == 300


def test_a_human_sample_is_rounded_up_and_never_empty() -> None:
    assert (sample_count(0.05, 10), sample_count(0.05, 1000), sample_count(0.05, 0)) == (1, 50, 0)


def test_a_recipe_with_overrides_travels_whole() -> None:
    assert spec_recipe(RecipeChoice(name="cifar-small"), {}) == "cifar-small"
    recipe = spec_recipe(RecipeChoice(name="cifar-small", set={"optimizer.lr": 0.5}), {"epochs": 2})
    assert isinstance(recipe, dict)
    assert (recipe["epochs"], recipe["optimizer"]["lr"], recipe["model"]["name"]) == (
        2,
        0.5,
        "cifar_convnet_s",
    )


def _states(labels: list[int]) -> list[SampleState]:
    return [
        SampleState(i, SampleStatus.KEPT, SampleStatus.KEPT, label, label, None, None)
        for i, label in enumerate(labels)
    ]


def test_an_evaluation_set_is_stratified_and_leaves_every_class_a_training_sample() -> None:
    final = _states([0] * 60 + [1] * 30 + [2] * 1)
    held = evaluation_set(final, final, 9, seed=1)
    labels = Counter(final[i].label_class_id for i in held)
    assert labels == {0: 6, 1: 3}  # class 2's only sample stays in training


# --- class review -------------------------------------------------------------------------------


def _vote(decision_id: int, user_id: int, verdict: Verdict) -> ClassVote:
    return ClassVote(
        decision_id=decision_id, task_id=100 + decision_id, user_id=user_id, verdict=verdict
    )


DROP, KEEP = Verdict.DROP, Verdict.KEEP


def test_a_class_is_dropped_only_when_enough_distinct_people_say_drop() -> None:
    one = class_outcome([_vote(1, 7, DROP)], required=2)
    assert (one.state, one.decision_id, one.drops) == (ClassState.REVIEW, None, 1)
    assert one.ask == _vote(1, 7, DROP)
    same_person = class_outcome([_vote(1, 7, DROP), _vote(2, 7, DROP)], required=2)
    assert (same_person.state, same_person.drops) == (ClassState.REVIEW, 1)
    two = class_outcome([_vote(1, 7, DROP), _vote(3, 8, DROP)], required=2)
    assert (two.state, two.decision_id, two.ask) == (ClassState.DROPPED, 3, None)
    assert class_outcome([_vote(1, 7, DROP)], required=1).state is ClassState.DROPPED


def test_a_keep_from_anyone_keeps_the_class_and_each_person_counts_with_their_latest_vote() -> None:
    kept = class_outcome([_vote(1, 7, DROP), _vote(2, 8, DROP), _vote(3, 9, KEEP)], required=2)
    assert (kept.state, kept.decision_id, kept.ask) == (ClassState.KEPT, 3, None)
    changed_mind = class_outcome([_vote(1, 7, KEEP), _vote(2, 7, DROP)], required=1)
    assert changed_mind.state is ClassState.DROPPED
    assert class_outcome([], required=2).state is None
    with pytest.raises(ValueError, match="at least 1"):
        class_outcome([], required=0)
