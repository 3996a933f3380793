"""The parts of the pipeline benchmark (see ``bench/pipeline.py``): their settings, the CIFAR-10N
label loop with and without people and its baselines, and the Caltech-101 junk stage; each part
returns its numbers as a dict for the report and the results file.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from ml.embeddings import EmbeddingArray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness.labelled_sets import RealSet, caltech_junk_mix, write_labelled_set
from bench.ml_common import (
    CIFAR_CLASSES,
    DATA,
    WORK,
    DataMissing,
    cifar_test,
    cifar_train,
    embedded,
    stratified_subset,
)
from bench.pipeline_loop import Log, decisions_by_kind, run_loop

#: The loop's default final recipe, whose embedding space the baselines and the test set share.
FINAL_RECIPE = "pretrained-cpu-final"


@dataclass(frozen=True)
class Settings:
    """What a run measures, and at which budget."""

    subset: int
    folds: int
    max_pullback_rounds: int
    error_rate: float
    caltech_per_class: int
    caltech_background: int
    max_junk_iterations: int
    seed_random_samples: int
    audit_size: int
    seed: int
    timeout: float
    junk_overrides: dict[str, Any] = field(default_factory=dict)  # --junk-set


FULL = Settings(
    subset=20_000,
    folds=5,
    max_pullback_rounds=3,
    error_rate=0.02,
    caltech_per_class=30,
    caltech_background=468,
    max_junk_iterations=3,
    seed_random_samples=500,
    audit_size=300,
    seed=0,
    timeout=2400,
)
QUICK = Settings(
    subset=2_000,
    folds=3,
    max_pullback_rounds=1,
    error_rate=0.02,
    caltech_per_class=8,
    caltech_background=120,
    max_junk_iterations=1,
    seed_random_samples=100,
    audit_size=60,
    seed=0,
    timeout=900,
)


# --- CIFAR-10N ----------------------------------------------------------------------------------


@dataclass
class Cifar:
    """The class-balanced subset and the test set, embedded as the final recipe sees them."""

    real: RealSet
    features: EmbeddingArray
    clean: NDArray[np.int64]
    noisy: NDArray[np.int64]
    test_features: EmbeddingArray
    test_labels: NDArray[np.int64]


def load_cifar(settings: Settings, work: Path) -> Cifar:
    """The subset (its labels from the ``worse`` column) as a labelled set to import; the
    images stay in the benchmark cache, their embeddings in the embedding cache."""
    train, test = cifar_train(), cifar_test()
    rows = stratified_subset(train.labels["clean"], settings.subset, seed=settings.seed)
    root = WORK / "cifar10"
    clean, noisy = train.labels["clean"][rows], train.labels["worse"][rows]
    items = [
        (
            train.paths[row].relative_to(root).as_posix(),
            CIFAR_CLASSES[int(noisy[i])],
            CIFAR_CLASSES[int(clean[i])],
        )
        for i, row in enumerate(rows.tolist())
    ]
    real = write_labelled_set(work / "cifar-set", root, items)
    features = embedded([train.paths[row] for row in rows.tolist()], FINAL_RECIPE).features
    test_features = embedded(test.paths, FINAL_RECIPE).features
    return Cifar(real, features, clean, noisy, test_features, test.labels["label"])


def label_config(settings: Settings, *, humans: bool) -> dict[str, Any]:
    """The pipeline config of the label loop: the default recipes and rules; without humans,
    nothing is sent to review."""
    config: dict[str, Any] = {
        "seed": settings.seed,
        "folds": settings.folds,
        "max_pullback_rounds": settings.max_pullback_rounds,
    }
    if not humans:
        config.update(human_fraction=0.0, min_class_size=0)
    return config


def test_accuracy(trained: Any, cifar: Cifar) -> float:
    """Top-1 accuracy on the 10,000 test images; the model's classes mapped by name."""
    from ml.predict import predict_logits

    names = trained.class_names or list(CIFAR_CLASSES)
    to_cifar = np.array([CIFAR_CLASSES.index(name) for name in names])
    logits = predict_logits(trained, cifar.test_features, device="cpu")
    predicted = to_cifar[logits.argmax(dim=1).numpy()]
    return float((predicted == cifar.test_labels).mean())


def label_part(
    log: Log, settings: Settings, cifar: Cifar, work: Path, *, humans: bool
) -> dict[str, Any]:
    """Parts 1 and 2 (see the module docstring)."""
    from ml.heads import load_model

    name = "cifar10n-worse" + ("" if humans else "-auto")
    run = run_loop(
        log,
        work,
        cifar.real,
        name=name,
        config=label_config(settings, humans=humans),
        label_stage=True,
        humans=humans,
        error_rate=settings.error_rate,
        timeout=settings.timeout,
    )
    truth = cifar.real.rows()
    final = [row for row in run.rows if row["final"] == "1"]
    wrong = sum(row["label"] != truth[row["path"]]["clean"] for row in final)
    statuses = Counter(row["status"] for row in run.rows)
    kept_given = sum(row["label"] == row["given_label"] for row in final)
    model = load_model(run.export / "model")
    accuracy = test_accuracy(model, cifar)
    final_round = next(r for r in run.status["rounds"] if r["kind"] == "final_training")
    log(f"{name}: {len(final)} exported, {wrong / max(len(final), 1):.3f} wrong; test {accuracy}")
    return {
        "imported": len(run.rows),
        "input_noise": float((cifar.noisy != cifar.clean).mean()),
        "final_size": len(final),
        "final_noise": wrong / max(len(final), 1),
        "final_relabelled": len(final) - kept_given,
        "statuses": dict(statuses),
        "decisions_by_kind": decisions_by_kind(run.status),
        "verdicts": dict(run.verdicts),
        "decisions": sum(run.verdicts.values()),
        "rounds": [
            {"source": r["source"], "kind": r["kind"], "stats": r.get("stats") or {}}
            for r in run.status["rounds"]
        ],
        "estimates": run.status["estimates"],
        "final_training": final_round.get("stats") or {},
        "test_accuracy": accuracy,
        "recipe_yaml": (run.export / "model" / "recipe.yaml").read_text(),
        "loop_seconds": run.seconds,
    }


def baselines(log: Log, cifar: Cifar, recipe_yamls: list[str], work: Path) -> dict[str, float]:
    """Test accuracy of the loop's final recipe (the one every run exported with its model),
    without distillation, trained on (a) the noisy and (c) the clean labels of the whole
    subset."""
    from ml.recipes import load_recipe
    from ml.train import train_model

    recipes = []
    for number, text in enumerate(recipe_yamls):
        path = work / f"final-recipe-{number}.yaml"
        path.write_text(text)
        # Without the loop's teachers (fold models of that run): plain training.
        recipes.append(load_recipe(path).model_copy(update={"distillation": None}))
    recipe = recipes[0]
    if any(other != recipe for other in recipes[1:]):
        raise SystemExit("the runs trained their final models with different recipes")
    found = {}
    for key, labels in (("a_noisy", cifar.noisy), ("c_clean", cifar.clean)):
        result = train_model(
            recipe,
            cifar.features,
            labels,
            num_classes=len(CIFAR_CLASSES),
            class_names=CIFAR_CLASSES,
            device="cpu",
        )
        found[key] = test_accuracy(result.trained, cifar)
        log(f"baseline {key}: test accuracy {found[key]:.4f}")
    return found


# --- Caltech-101 junk ---------------------------------------------------------------------------


def junk_config(settings: Settings) -> dict[str, Any]:
    """The junk stage's defaults (the junk model: ``pretrained-cpu-junk``), at the benchmark's
    seed, audit size and number of iterations."""
    return {
        "seed": settings.seed,
        "seed_random_samples": settings.seed_random_samples,
        "audit_size": settings.audit_size,
        "max_junk_iterations": settings.max_junk_iterations,
        **settings.junk_overrides,
    }


def junk_part(log: Log, settings: Settings, work: Path) -> dict[str, Any]:
    archive = DATA / "caltech101" / "caltech101.tar"
    if not archive.is_file():
        raise DataMissing(archive)
    real = caltech_junk_mix(
        archive,
        work / "caltech",
        classes=None,
        per_class=settings.caltech_per_class,
        background=settings.caltech_background,
    )
    run = run_loop(
        log,
        work,
        real,
        name="caltech-junk",
        config=junk_config(settings),
        label_stage=False,
        humans=True,
        error_rate=settings.error_rate,
        timeout=settings.timeout,
        stop_after_junk=True,
    )
    truth = real.rows()
    junk = {path for path, row in truth.items() if row["junk"] == "1"}
    considered = [row for row in run.rows if row["status"] not in ("duplicate", "unusable")]
    removed = {row["path"] for row in considered if row["status"] == "junk"}
    left = [row["path"] for row in considered if row["status"] != "junk"]
    found = len(removed & junk)
    audits = [e for e in run.status["estimates"] if e["what"] == "junk_left"]
    last = audits[-1] if audits else None
    kinds = [r["kind"] for r in run.status["rounds"] if r["kind"] != "cross_validation"]
    return {
        "imported": len(run.rows),
        "considered": len(considered),
        "junk_in": len(junk & {row["path"] for row in considered}),
        "input_junk_rate": len(junk) / len(truth),
        "removed": len(removed),
        "true_junk_removed": found,
        "precision": found / len(removed) if removed else None,
        "recall": found / len(junk) if junk else None,
        "left": len(left),
        "junk_left": sum(path in junk for path in left),
        "junk_left_rate": sum(path in junk for path in left) / max(len(left), 1),
        "audit": last,
        "rounds": [
            {"source": r["source"], "kind": r["kind"], "stats": r.get("stats") or {}}
            for r in run.status["rounds"]
            if r["kind"] != "cross_validation"
        ],
        "round_kinds": kinds,
        "junk_iterations": kinds.count("junk_iteration"),
        "decisions_by_kind": decisions_by_kind(run.status),
        "verdicts": dict(run.verdicts),
        "decisions": sum(run.verdicts.values()),
        "loop_seconds": run.seconds,
    }
