"""Label-cleaning benchmark on CIFAR-10 with CIFAR-10N real human label noise.

For each noise level (``aggre``: 9% noise, ``worse``: 40%), on a class-balanced subset of the
training set (8,000 images by default):

1. out-of-fold predictions with K = 5 (``ml.crossval``; recipe ``cifar-small``, 6 epochs);
2. the top-1 rule on them, then up to three pull-back rounds (recipes ``cifar-pullback-a``,
   ``cifar-pullback-b``, ``cifar-pullback-a`` again with another seed: train on the kept set, move
   back rejected samples whose label is now the top-1 class; each round's model gets as many
   optimizer steps as a fold model), and cleanlab's confident learning
   on the same out-of-fold probabilities; precision / recall / F1 of each rule's rejected set
   against the clean labels;
3. the same model (``cifar-small``) trained on (a) the noisy labels, (b) the cleaned set (kept
   after pull-back), (b') cleanlab's kept set, (c) the clean labels, all with the same number of
   optimizer steps (6 epochs of the subset; a smaller set gets proportionally more epochs); test
   accuracy on the 10,000 CIFAR-10 test images and the fraction of the gap closed,
   ``(b - a) / (c - a)``.

Goals: on ``worse``, the cleaned set closes at least half the gap; the best rule's F1 is at least
cleanlab's.

Run: ``.venv/bin/python bench/ml_label_cleaning.py`` (about 15 minutes on 2 idle CPU cores, 25
when they are shared with other work); ``--subset``, ``--epochs``, ``--final-epochs`` trade
time for accuracy. Writes bench/results/label-cleaning.json; the out-of-fold probabilities and
kept masks go to the benchmark cache directory (see ``bench/ml_common.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Before torch loads OpenMP: threads that spin while waiting for each other are many times slower
# when the machine's few cores are shared with other work.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if TYPE_CHECKING:
    from ml.train import Progress

from bench.ml_common import (
    WORK,
    Timer,
    cifar_test,
    cifar_train,
    decoded,
    environment,
    stratified_subset,
    table,
    write_results,
)


class Bench:
    """Holds the data and settings shared by every training run of the benchmark."""

    def __init__(self, args: argparse.Namespace) -> None:
        from ml.recipes import load_recipe

        self.args = args
        self.clock = Timer()
        train, test = cifar_train(), cifar_test()
        self.rows = stratified_subset(train.labels["clean"], args.subset, seed=args.seed)
        self.images = np.asarray(decoded(train.paths)[self.rows])
        self.labels = {name: column[self.rows] for name, column in train.labels.items()}
        self.test_images = np.asarray(decoded(test.paths))
        self.test_labels = test.labels["label"]
        overrides = {"epochs": args.epochs, "seed": args.seed}
        self.recipe = load_recipe(args.recipe, overrides=overrides)
        self.pullback_recipes = [
            load_recipe(name, overrides={"epochs": args.epochs})
            for name in args.pullback_recipes.split(",")
        ]
        self.final_steps = args.final_epochs * (args.subset // self.recipe.batch_size)
        print(
            f"data ready in {self.clock():.0f} s: {args.subset} training images "
            f"(class-balanced subset), {self.test_labels.size} test images",
            flush=True,
        )

    def log(self, message: str) -> None:
        print(f"[{self.clock():5.0f} s] {message}", flush=True)

    def epoch_logger(self, what: str) -> Callable[[Progress], None]:
        """A training callback that logs the end of every epoch."""

        def report(progress: Progress) -> None:
            if progress.epoch_end is not None:
                end = progress.epoch_end
                self.log(
                    f"{what} epoch {end.epoch + 1}: loss {end.train_loss:.3f}, "
                    f"{end.images_per_second:.0f} img/s"
                )

        return report

    def final_accuracy(
        self, labels: NDArray[np.int64], rows: NDArray[np.int64], seed: int
    ) -> float:
        """Test accuracy of the recipe's model trained on ``rows`` with ``labels``, with
        epochs set so that every final model gets the same number of optimizer steps."""
        from ml.predict import predict_logits
        from ml.train import train_model

        per_epoch = max(1, rows.size // self.recipe.batch_size)
        epochs = max(1, round(self.final_steps / per_epoch))
        recipe = self.recipe.model_copy(
            update={
                "epochs": epochs,
                "seed": seed,
                "schedule": self.recipe.schedule.model_copy(
                    update={"warmup_epochs": min(epochs, self.recipe.schedule.warmup_epochs)}
                ),
            }
        )
        result = train_model(
            recipe, self.images, labels, num_classes=10, indices=rows, device="cpu"
        )
        logits = predict_logits(result.trained, self.test_images, batch_size=1000, device="cpu")
        return float((logits.argmax(dim=1).numpy() == self.test_labels).mean())


def _quality(rejected: NDArray[np.bool_], mislabeled: NDArray[np.bool_]) -> dict[str, Any]:
    from ml.cleaning import rejection_quality

    return rejection_quality(rejected, mislabeled).to_dict()


def run_noise_level(bench: Bench, column: str) -> dict[str, Any]:
    """Steps 1–3 of the module docstring for one CIFAR-10N label column."""
    from ml.cleaning import confident_learning, pullback, topk_keep
    from ml.crossval import out_of_fold_predictions
    from ml.data import stratified_folds
    from ml.predict import predict
    from ml.train import train_model

    args = bench.args
    noisy = bench.labels[column]
    mislabeled = noisy != bench.labels["clean"]
    bench.log(f"{column}: {mislabeled.mean():.1%} of the subset's labels are wrong")
    folds = stratified_folds(noisy, args.folds, seed=args.seed)
    oof = out_of_fold_predictions(
        bench.recipe,
        bench.images,
        noisy,
        folds,
        num_classes=10,
        top_k=5,
        device="cpu",
        callback=lambda fold: bench.epoch_logger(f"{column} fold {fold}"),
    )
    oof_accuracy = float((oof.probs.argmax(axis=1) == bench.labels["clean"]).mean())
    bench.log(
        f"{column}: out-of-fold predictions done; accuracy vs clean labels {oof_accuracy:.4f}"
    )

    kept = topk_keep(noisy, oof.probs, k=1)
    rules: dict[str, dict[str, Any]] = {"top-1": _quality(~kept, mislabeled)}
    issues = confident_learning(noisy, oof.probs)
    rules["cleanlab (prune_by_noise_rate)"] = _quality(issues, mislabeled)
    rounds = []
    for number in range(1, args.rounds + 1):
        recipe = bench.pullback_recipes[(number - 1) % len(bench.pullback_recipes)]
        # As many optimizer steps as a fold model: the kept set is smaller than K-1 folds.
        fold_rows = noisy.size * (args.folds - 1) // args.folds
        epochs = max(args.epochs, round(args.epochs * fold_rows / max(int(kept.sum()), 1)))
        recipe = recipe.model_copy(update={"seed": recipe.seed + number, "epochs": epochs})
        rejected = np.flatnonzero(~kept)
        model = train_model(
            recipe, bench.images, noisy, num_classes=10, indices=np.flatnonzero(kept), device="cpu"
        )
        probs = predict(
            model.trained, bench.images, indices=rejected, top_k=1, return_probs=True, device="cpu"
        ).probs
        assert probs is not None
        outcome = pullback(noisy, kept, probs, k=1, indices=rejected)
        kept = outcome.kept
        pulled = outcome.pulled_back
        rounds.append(
            {
                "round": number,
                "recipe": recipe.name,
                "pulled_back": int(pulled.size),
                "pulled_back_mislabeled": int(mislabeled[pulled].sum()),
            }
        )
        rules[f"top-1 + {number} pull-back round(s)"] = _quality(~kept, mislabeled)
        bench.log(f"{column}: pull-back round {number} moved back {pulled.size} samples")
        if pulled.size == 0:
            break

    np.savez_compressed(
        WORK / f"label-cleaning-{column}.npz",
        rows=bench.rows,
        oof_probs=oof.probs,
        kept=kept,
        cleanlab_issues=issues,
    )
    everything = np.arange(noisy.size)
    cleaned_rows = np.flatnonzero(kept)
    accuracy = {
        "a_noisy": bench.final_accuracy(noisy, everything, args.seed),
        "b_cleaned": bench.final_accuracy(noisy, cleaned_rows, args.seed),
    }
    if not args.skip_cleanlab_final:
        accuracy["b_cleanlab"] = bench.final_accuracy(noisy, np.flatnonzero(~issues), args.seed)
    bench.log(f"{column}: final models trained: {accuracy}")
    return {
        "noise_rate": float(mislabeled.mean()),
        "oof_accuracy_vs_clean": oof_accuracy,
        "rules": rules,
        "pullback_rounds": rounds,
        "kept_after_pullback": int(kept.sum()),
        "kept_mislabeled_fraction": float(mislabeled[kept].mean()),
        "test_accuracy": accuracy,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subset", type=int, default=8_000, help="training images used")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of fold/pull-back models")
    parser.add_argument(
        "--final-epochs",
        type=int,
        default=6,
        help="budget of the final models, in epochs of the full subset",
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="at most this many pull-back rounds")
    parser.add_argument("--noise", default="aggre,worse", help="CIFAR-10N label columns")
    parser.add_argument("--recipe", default="cifar-small")
    parser.add_argument("--pullback-recipes", default="cifar-pullback-a,cifar-pullback-b")
    parser.add_argument("--skip-cleanlab-final", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    bench = Bench(args)
    recipe = bench.recipe
    print(
        f"recipe {recipe.name}: model {recipe.model.name}, {recipe.image_size} px, "
        f"{args.epochs} epochs per fold/pull-back model, final models {bench.final_steps} steps "
        f"of batch {recipe.batch_size}; K = {args.folds}; torch threads {torch.get_num_threads()}",
        flush=True,
    )
    levels = {column: run_noise_level(bench, column) for column in args.noise.split(",")}
    clean = bench.final_accuracy(bench.labels["clean"], np.arange(args.subset), args.seed)
    bench.log(f"clean-label model: test accuracy {clean:.4f}")

    print("\nRejected set vs clean labels (precision / recall / F1):")
    rule_rows = []
    for column, level in levels.items():
        for rule, quality in level["rules"].items():
            rule_rows.append(
                [
                    column,
                    rule,
                    quality["rejected"],
                    quality["precision"],
                    quality["recall"],
                    quality["f1"],
                ]
            )
    print(table(["noise", "rule", "rejected", "precision", "recall", "F1"], rule_rows))

    print("\nTest accuracy of the same model trained on each set (same number of steps):")
    acc_rows = []
    verdicts: dict[str, Any] = {}
    for column, level in levels.items():
        accuracy = level["test_accuracy"]
        accuracy["c_clean"] = clean
        gap = clean - accuracy["a_noisy"]
        closed = (accuracy["b_cleaned"] - accuracy["a_noisy"]) / gap if gap > 0 else None
        closed_cl = (
            (accuracy["b_cleanlab"] - accuracy["a_noisy"]) / gap
            if gap > 0 and "b_cleanlab" in accuracy
            else None
        )
        level["gap_closed"] = closed
        level["gap_closed_cleanlab"] = closed_cl
        acc_rows.append(
            [
                column,
                accuracy["a_noisy"],
                accuracy["b_cleaned"],
                accuracy.get("b_cleanlab"),
                clean,
                closed,
                closed_cl,
            ]
        )
        best_rule = max(q["f1"] for r, q in level["rules"].items() if not r.startswith("cleanlab"))
        cleanlab_f1 = level["rules"]["cleanlab (prune_by_noise_rate)"]["f1"]
        verdicts[column] = {
            "best_rule_f1": best_rule,
            "cleanlab_f1": cleanlab_f1,
            "f1_goal_met": best_rule >= cleanlab_f1,
            "gap_goal_met": closed is not None and closed >= 0.5,
        }
    print(
        table(
            [
                "noise",
                "(a) noisy",
                "(b) cleaned",
                "(b') cleanlab",
                "(c) clean",
                "gap closed",
                "cleanlab gap",
            ],
            acc_rows,
        )
    )
    print()
    for column, verdict in verdicts.items():
        print(
            f"{column}: best rule F1 {verdict['best_rule_f1']:.3f} vs cleanlab "
            f"{verdict['cleanlab_f1']:.3f} ({'met' if verdict['f1_goal_met'] else 'missed'}); "
            f"gap closed {levels[column]['gap_closed']}"
            + (
                " (goal >= 0.5 on worse: " + ("met" if verdict["gap_goal_met"] else "missed") + ")"
                if column == "worse"
                else ""
            )
        )
    print(f"wall time {bench.clock():.0f} s")
    path = write_results(
        "label-cleaning",
        {
            "benchmark": "label-cleaning",
            "settings": {
                "subset": args.subset,
                "epochs": args.epochs,
                "final_epochs": args.final_epochs,
                "final_steps": bench.final_steps,
                "folds": args.folds,
                "rounds": args.rounds,
                "recipe": recipe.model_dump(mode="json"),
                "pullback_recipes": [r.name for r in bench.pullback_recipes],
                "test_images": int(bench.test_labels.size),
            },
            "levels": levels,
            "verdicts": verdicts,
            "wall_seconds": bench.clock(),
            "environment": environment(),
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
