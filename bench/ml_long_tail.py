"""Long-tail benchmark: CIFAR-10-LT (imbalance 100, clean labels), the same model and budget
trained five ways.

* **plain CE**: cross-entropy on the natural (long-tailed) distribution;
* **balanced sampler**: every class drawn at least 1/3 as often as the largest
  (``ml.sampler.ClassBalancedSampler``), epoch length fixed to the training set's size;
* **frozen log-prior bias**: classifier bias = log prior, frozen, removed at inference;
* **logit-adjusted loss**: cross-entropy on ``logits + log prior``;
* **post-hoc adjustment**: the plain CE model's logits minus the log prior (no retraining);
* **balanced + LA loss**: the ``final-balanced`` combination (sampler, and the loss adjusted by
  the prior the sampler produces).

CIFAR-10-LT keeps ``floor(5000 * (1/100)^(c/9))`` training images of class ``c`` (5000 … 50;
12,406 images) — the first ones in CIFAR order; the test set is the full balanced 10,000.
Reported: top-1 (= balanced accuracy on the balanced test set), balanced accuracy, and
many/medium/few-shot accuracy (classes with >100 / 20–100 / <20 training images: 8 / 2 / 0 here).

Goal: logit adjustment at least +4 points of balanced accuracy over plain CE.

Run: ``.venv/bin/python bench/ml_long_tail.py [--epochs 8]``; writes bench/results/long-tail.json.
About 15 minutes on 2 CPU cores (the recipe ``cifar-small``: a 85k-parameter conv net at 32 px).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness.reporting import Timer, environment, share_cores, table, write_results
from bench.ml_common import (
    cifar_test,
    cifar_train,
    decoded,
)

if TYPE_CHECKING:
    from ml.checkpoint import TrainedModel

#: The ways of training in the order of the table.
ORDER = (
    "plain CE",
    "balanced sampler",
    "frozen log-prior bias",
    "logit-adjusted loss",
    "post-hoc adjustment",
    "balanced + LA loss",
)


def long_tail_indices(labels: np.ndarray, *, ratio: float, n_max: int = 5000) -> np.ndarray:
    """The first ``floor(n_max * (1/ratio)^(c/9))`` images of each class ``c``, sorted."""
    keep = []
    for c in range(10):
        count = math.floor(n_max * (1 / ratio) ** (c / 9))
        keep.append(np.flatnonzero(labels == c)[:count])
    return np.sort(np.concatenate(keep))


@dataclass(frozen=True)
class LongTail:
    """CIFAR-10-LT decoded: the training images ``[N, 32, 32, 3]`` uint8 with their labels and
    per-class counts, and the balanced test set."""

    images: NDArray[np.uint8]
    labels: NDArray[np.int64]
    counts: NDArray[np.int64]
    test_images: NDArray[np.uint8]
    test_labels: NDArray[np.int64]


def load_long_tail(imbalance: float) -> LongTail:
    train, test = cifar_train(), cifar_test()
    train_images = decoded(train.paths)
    rows = long_tail_indices(train.labels["clean"], ratio=imbalance)
    labels = train.labels["clean"][rows]
    return LongTail(
        images=np.asarray(train_images[rows]),
        labels=labels,
        counts=np.bincount(labels, minlength=10),
        test_images=np.asarray(decoded(test.paths)),
        test_labels=test.labels["label"],
    )


def variants(train_images: int) -> dict[str, dict[str, Any]]:
    """The recipe overrides of each way of training (post-hoc adjustment needs none)."""
    balance = {"min_fraction": 1 / 3, "epoch_samples": train_images}
    return {
        "plain CE": {},
        "balanced sampler": {"balance": balance},
        "frozen log-prior bias": {"logit_adjustment": {"mode": "frozen_bias"}},
        "logit-adjusted loss": {"logit_adjustment": {"mode": "loss"}},
        "balanced + LA loss": {"balance": balance, "logit_adjustment": {"mode": "loss"}},
    }


def train_variants(
    args: argparse.Namespace, data: LongTail, clock: Timer
) -> tuple[dict[str, dict[str, Any]], TrainedModel]:
    """Trains and evaluates every variant; returns their reports and the plain CE model."""
    from ml.metrics import evaluate
    from ml.predict import predict_logits
    from ml.recipes import load_recipe
    from ml.train import train_model

    results: dict[str, dict[str, Any]] = {}
    plain: TrainedModel | None = None
    for name, overrides in variants(int(data.labels.size)).items():
        started = Timer()
        recipe = load_recipe(
            args.recipe,
            overrides={"epochs": args.epochs, "seed": args.seed, **_flatten(overrides)},
        )
        result = train_model(recipe, data.images, data.labels, num_classes=10, device="cpu")
        plain = result.trained if name == "plain CE" else plain
        logits = predict_logits(result.trained, data.test_images, batch_size=1000, device="cpu")
        report = evaluate(logits, data.test_labels, train_class_counts=data.counts)
        results[name] = {**report.to_dict(), "train_seconds": started()}
        print(
            f"  {name}: balanced accuracy {report.balanced_accuracy:.4f} "
            f"({started():.0f} s, total {clock():.0f} s)",
            flush=True,
        )
    assert plain is not None
    return results, plain


def posthoc(plain: TrainedModel, data: LongTail) -> dict[str, Any]:
    """The plain CE model with the log prior subtracted from its logits, no retraining."""
    import torch

    from ml.metrics import evaluate
    from ml.predict import predict_logits

    assert plain.log_prior is None
    prior = torch.log(torch.tensor(data.counts, dtype=torch.float32) / data.counts.sum())
    adjusted = replace(plain, log_prior=prior, adjustment="posthoc", tau=1.0)
    logits = predict_logits(adjusted, data.test_images, batch_size=1000, device="cpu")
    return {
        **evaluate(logits, data.test_labels, train_class_counts=data.counts).to_dict(),
        "train_seconds": 0.0,
    }


def print_report(results: dict[str, dict[str, Any]]) -> float:
    """The table of every way of training; returns the best logit adjustment's gain over
    plain CE, in points of balanced accuracy."""
    ce = results["plain CE"]["balanced_accuracy"]
    rows_out = [
        [
            name,
            results[name]["top1"],
            results[name]["balanced_accuracy"],
            100 * (results[name]["balanced_accuracy"] - ce),
            results[name]["many_shot"],
            results[name]["medium_shot"],
            results[name]["few_shot"],
        ]
        for name in ORDER
    ]
    print()
    print(
        table(
            ["method", "top-1", "balanced acc", "vs CE (points)", "many", "medium", "few"],
            rows_out,
        )
    )
    best_la = max(
        results[n]["balanced_accuracy"]
        for n in ("frozen log-prior bias", "logit-adjusted loss", "post-hoc adjustment")
    )
    return 100 * (best_la - ce)


def main(argv: list[str] | None = None) -> int:
    share_cores()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8, help="epochs per training run")
    parser.add_argument("--imbalance", type=float, default=100.0)
    parser.add_argument("--recipe", default="cifar-small")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch

    from ml.recipes import load_recipe

    clock = Timer()
    data = load_long_tail(args.imbalance)
    size = int(data.labels.size)
    print(
        f"data ready in {clock():.0f} s: {size} training images, per class {data.counts.tolist()}"
    )
    base = load_recipe(args.recipe, overrides={"epochs": args.epochs, "seed": args.seed})
    print(
        f"recipe {base.name}: model {base.model.name}, {base.image_size} px, {args.epochs} epochs "
        f"of {size} images, batch {base.batch_size}, {base.optimizer.name} lr "
        f"{base.optimizer.lr}; torch threads {torch.get_num_threads()}",
        flush=True,
    )
    results, plain = train_variants(args, data, clock)
    results["post-hoc adjustment"] = posthoc(plain, data)
    gain = print_report(results)
    print(
        f"\nbest logit adjustment vs plain CE: {gain:+.1f} points of balanced accuracy "
        f"(goal +4.0): {'met' if gain >= 4 else 'missed'}; wall time {clock():.0f} s"
    )
    settings = {
        "recipe": base.model_dump(mode="json"),
        "epochs": args.epochs,
        "imbalance": args.imbalance,
        "train_images": size,
        "class_counts": data.counts.tolist(),
        "test_images": int(data.test_labels.size),
    }
    payload = {
        "benchmark": "long-tail",
        "settings": settings,
        "results": results,
        "best_logit_adjustment_gain_points": gain,
        "goal_met": gain >= 4,
        "wall_seconds": clock(),
        "environment": environment(),
    }
    print(f"wrote {write_results('long-tail', payload)}")
    return 0


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``, for recipe overrides."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


if __name__ == "__main__":
    sys.exit(main())
