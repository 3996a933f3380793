"""The loop of the label-cleaning benchmark, simulated on embeddings in this process: the data
and recipes every run shares (:class:`Bench`), the final recipe's test accuracy on a training
set, pull-back rounds as the loop runs them, and the human sample with its calibrated pull-back.
See ``bench/ml_label_cleaning.py``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness.reporting import Timer
from bench.ml_common import (
    cifar_test,
    cifar_train,
    embedded,
    embedding_throughput,
    stratified_subset,
)

if TYPE_CHECKING:
    from ml.core.cleaning.targets import RejectUse
    from ml.embeddings import EmbeddingArray
    from ml.heads import HeadTargets
    from ml.recipes import Recipe


class Bench:
    """The embeddings, labels and recipes every run of the benchmark shares."""

    def __init__(self, args: argparse.Namespace) -> None:
        from ml.recipes import load_recipe

        self.args = args
        self.clock = Timer()
        train, test = cifar_train(), cifar_test()
        self.rows = stratified_subset(train.labels["clean"], args.subset, seed=args.seed)
        self.labels = {name: column[self.rows] for name, column in train.labels.items()}
        self.test_labels = test.labels["label"]
        self.fold_recipe = load_recipe(args.recipe, overrides={"seed": args.seed})
        self.pullback_recipes = [load_recipe(n) for n in args.pullback_recipes.split(",")]
        self.final_recipe = load_recipe(args.final_recipe)
        self.throughput = embedding_throughput([train.paths[i] for i in range(args.throughput)])
        self.log(f"embedding throughput {self.throughput:.1f} images/s ({args.throughput} images)")
        found = embedded([train.paths[i] for i in self.rows], args.recipe)
        self.features: EmbeddingArray = found.features
        self.test_features: EmbeddingArray = embedded(test.paths, args.recipe).features
        self.embedded_now = found.computed
        self.log(
            f"data ready: {args.subset} training images (class-balanced subset, "
            f"{found.computed} embedded now), {self.test_labels.size} test images"
        )

    def log(self, message: str) -> None:
        print(f"[{self.clock():5.0f} s] {message}", flush=True)

    def final_accuracy(
        self,
        labels: NDArray[np.int64],
        rows: NDArray[np.int64],
        targets: HeadTargets | None = None,
    ) -> float:
        """Mean test accuracy of the final recipe trained on ``rows`` with ``labels`` (and
        ``targets`` for rows labelled -1) over ``--seeds`` seeds."""
        return float(
            np.mean(
                [
                    self._accuracy(self.final_recipe, labels, rows, seed, targets)
                    for seed in range(self.args.seeds)
                ]
            )
        )

    def final_with_rejects(
        self,
        labels: NDArray[np.int64],
        kept: NDArray[np.bool_],
        probs: NDArray[np.float32],
        use: RejectUse,
    ) -> float:
        """:meth:`final_accuracy` with the rejected samples used as the loop's
        ``final_rejects`` option ``use`` says (at its default weight and threshold)."""
        from ml.core.cleaning.targets import final_training_targets
        from ml.heads import HeadTargets

        plan = final_training_targets(labels, kept, probs, use=use)
        targets = None if plan.soft is None else HeadTargets(soft=plan.soft, weights=plan.weights)
        return self.final_accuracy(plan.labels, plan.rows, targets)

    def _accuracy(
        self,
        recipe: Recipe,
        labels: NDArray[np.int64],
        rows: NDArray[np.int64],
        seed: int,
        targets: HeadTargets | None = None,
    ) -> float:
        from ml.predict import predict_logits
        from ml.train import train_model

        result = train_model(
            recipe.model_copy(update={"seed": recipe.seed + seed}),
            self.features,
            labels,
            num_classes=10,
            indices=rows,
            device="cpu",
            targets=targets,
        )
        logits = predict_logits(result.trained, self.test_features, device="cpu")
        return float((logits.argmax(dim=1).numpy() == self.test_labels).mean())


@dataclass
class LoopState:
    """Where the loop's label stage stands: the labels the models train on (human labels
    folded in), the kept set, and each sample's latest predicted probability of its label (a
    pull-back model's for the samples it predicted, else the out-of-fold one)."""

    labels: NDArray[np.int64]
    kept: NDArray[np.bool_]
    label_prob: NDArray[np.float64]


def pullback_rounds(
    bench: Bench, state: LoopState, seconds: dict[str, float], what: str
) -> tuple[LoopState, list[dict[str, Any]]]:
    """Up to ``--rounds`` pull-back rounds (stopping at one that moves nothing back), as the
    loop runs them: a model trained on the kept set moves back each rejected sample whose label
    is its top-1 class."""
    from ml.core.cleaning.topk import pullback
    from ml.predict import predict
    from ml.train import train_model

    mislabeled = state.labels != bench.labels["clean"]
    kept, label_prob = state.kept.copy(), state.label_prob.copy()
    rounds = []
    for number in range(1, bench.args.rounds + 1):
        clock = Timer()
        recipe = bench.pullback_recipes[(number - 1) % len(bench.pullback_recipes)]
        rejected = np.flatnonzero(~kept)
        model = train_model(
            recipe, bench.features, state.labels, num_classes=10, indices=np.flatnonzero(kept)
        )
        probs = predict(
            model.trained, bench.features, indices=rejected, top_k=1, return_probs=True
        ).probs
        assert probs is not None
        label_prob[rejected] = probs[np.arange(rejected.size), state.labels[rejected]]
        outcome = pullback(state.labels, kept, probs, k=1, indices=rejected)
        kept = outcome.kept
        pulled = outcome.pulled_back
        seconds[f"{what} pull-back round {number}"] = clock()
        rounds.append(
            {
                "round": f"{what} {number}",
                "recipe": recipe.name,
                "pulled_back": int(pulled.size),
                "pulled_back_mislabeled": int(mislabeled[pulled].sum()),
            }
        )
        bench.log(f"{what} pull-back round {number} ({recipe.name}) moved back {pulled.size}")
        if pulled.size == 0:
            break
    return LoopState(state.labels, kept, label_prob), rounds


def human_sample(
    bench: Bench, state: LoopState, *, calibrate: bool
) -> tuple[LoopState, dict[str, int]]:
    """The loop's human sample: people label a random ``--human-fraction`` of the rejected set
    (their answers: the clean labels); with ``calibrate``, the calibrated pull-back from their
    verdicts (``human_pullback`` 0.5) moves back the unchecked rejects where the checked ones
    were mostly right."""
    from ml.core.cleaning.topk import calibrated_pullback

    clean = bench.labels["clean"]
    rejected = np.flatnonzero(~state.kept)
    n = min(rejected.size, int(np.ceil(bench.args.human_fraction * rejected.size)))
    chosen = np.random.default_rng(bench.args.seed).choice(rejected, n, replace=False)
    labels = state.labels.copy()
    labels[chosen] = clean[chosen]
    kept = state.kept.copy()
    kept[chosen] = True
    rest = np.setdiff1d(rejected, chosen)
    moved = np.zeros(0, dtype=np.int64)
    if calibrate:
        back = calibrated_pullback(
            state.label_prob[chosen],
            state.labels[chosen] != clean[chosen],
            state.label_prob[rest],
            max_wrong=0.5,
        )
        moved = rest[back]
        kept[moved] = True
    stats = {
        "checked": int(n),
        "checked_wrong": int((state.labels[chosen] != clean[chosen]).sum()),
        "calibrated_pulled_back": int(moved.size),
        "calibrated_pulled_back_mislabeled": int((labels[moved] != clean[moved]).sum()),
    }
    return LoopState(labels, kept, state.label_prob), stats
