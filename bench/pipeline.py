"""The cleaning loop end to end, as users run it: a real server with its reconciler, a CPU
worker process, simulated annotators over HTTP, auto mode from the import to the export.

1. ``humans``: CIFAR-10 with CIFAR-10N ``worse`` labels (40% real human noise) on a
   class-balanced subset of the training set; the junk stage skipped (CIFAR has no junk);
   cross-validation, pull-back rounds, the default human sample of the rejected set (annotators
   answer from the clean labels, 2% of their answers wrong) and the calibrated pull-back from
   their verdicts, pull-back rounds again, the class review, final training, export. Reported:
   label noise of the exported set vs the input, its size, the decisions spent, and the
   CIFAR-10 test accuracy of the exported model (loaded from the export's ``model/`` folder as
   a user would) beside the same recipe trained on (a) the noisy and (c) the clean labels of
   the whole subset: the gap closed, ``(b − a) / (c − a)``.
2. ``no_humans``: the same loop with ``human_fraction`` 0 and ``min_class_size`` 0, so that
   nothing waits for a person; no annotators run.
3. ``junk``: Caltech-101 with BACKGROUND_Google images filed under its classes as junk: the
   junk seed, junk iterations and audits in auto mode, stopped when the loop leaves the junk
   stage. Reported: precision and recall of the junk removed against the truth, the junk rate
   left, the last audit's estimate with its 95% upper bound, the decisions spent.

Every step runs the loop's CPU defaults: heads on frozen EfficientNet-Lite0 embeddings (the
bundled backbone, 160 px, flip-averaged), which the workers read from the embedding cache that
``bench/ml_label_cleaning.py`` and earlier runs filled (``THRESHER_EMBEDDINGS_DIR``), so only the
first run pays for the backbone. Every final model (the loop's and the baselines) uses the
loop's final recipe (``pretrained-cpu-final``: a linear head, class balance, the logit-adjusted
loss); the baselines train from the ``recipe.yaml`` exported with the loop's model, on the
noisy or the clean labels of the whole subset, without the loop's teachers: what a team would
train without the loop.

Goals (issue: cleaning that pays): the exported model beats the noisy labels by at least 5
points on ``worse``; the junk stage removes junk with recall ≥ 0.85 at precision ≥ 0.9 in fewer
than 1,749 human decisions.

Run: ``.venv/bin/python bench/pipeline.py`` (about 4 minutes on 2 CPU cores once the 23,500
embeddings are cached; the first run embeds them, about 6 minutes more); ``--quick`` is a smoke
run of about a minute; ``--junk-set KEY=VALUE`` tries another junk-stage config. Writes
``bench/results/pipeline.json`` (``pipeline-quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from ml.embeddings import EmbeddingArray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness.databases import migrated_database
from bench.harness.labelled_sets import RealSet, caltech_junk_mix, write_labelled_set
from bench.harness.reporting import Timer, environment, share_cores, table, write_results
from bench.harness.stack import Stack, running_stack
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


class Log:
    """Timestamped progress lines, and the rounds of a pipeline as they change."""

    def __init__(self) -> None:
        self.clock = Timer()
        self.seen: dict[str, str] = {}

    def __call__(self, message: str) -> None:
        print(f"[{self.clock():5.0f} s] {message}", flush=True)

    def rounds(self, status: dict[str, Any]) -> None:
        for summary in status["rounds"]:
            source, state = summary["source"], summary["state"]
            if self.seen.get(source) == state:
                continue
            self.seen[source] = state
            stats = summary.get("stats") or {}
            brief = {k: stats[k] for k in _ROUND_NUMBERS if isinstance(stats.get(k), int | float)}
            self(f"  {source}: {state} {brief if brief else ''}")


_ROUND_NUMBERS = (
    "samples",
    "kept",
    "rejected",
    "train",
    "predict",
    "pulled_back",
    "sampled",
    "queued",
    "decided",
    "accepted",
    "relabelled",
    "flagged",
    "junk",
    "eval",
)


# --- the stack ----------------------------------------------------------------------------------


@dataclass
class LoopRun:
    """What a pipeline run leaves for the numbers: its last status, the exported manifest rows,
    the decisions of the simulated annotators, the export folder."""

    status: dict[str, Any]
    rows: list[dict[str, str]]
    verdicts: Counter[str]
    export: Path
    seconds: float


def _post(stack: Stack, path: str, body: dict[str, Any], method: str = "POST") -> None:
    response = stack.http.request(method, path, json=body)
    if response.status_code >= 400:
        raise SystemExit(f"{method} {path} failed: {response.status_code} {response.text}")


def run_loop(
    log: Log,
    work: Path,
    real: RealSet,
    *,
    name: str,
    config: dict[str, Any],
    label_stage: bool,
    humans: bool,
    error_rate: float,
    timeout: float,
    stop_after_junk: bool = False,
) -> LoopRun:
    """Imports ``real`` into a fresh stack under ``work``, runs the pipeline in auto mode
    (from the label stage when ``label_stage``) with simulated annotators when ``humans``,
    until it is done (or, ``stop_after_junk``, has left the junk stage), and exports it."""
    clock = Timer()
    log.seen.clear()
    work.mkdir(parents=True, exist_ok=True)
    from app.db import create_db_engine, create_session_factory
    from ml.embeddings import default_embeddings_dir

    with (
        migrated_database("sqlite", work) as url,
        running_stack(
            url,
            create_session_factory(create_db_engine(url)),
            work,
            embeddings=default_embeddings_dir(),
            import_roots=(work, WORK),
        ) as stack,
    ):
        dataset_id = stack.import_dataset(name, real.manifest, root=real.root, timeout=900)
        log(f"{name}: imported in {clock():.0f} s")
        _post(stack, f"/api/pipelines/{dataset_id}", {"config": config, "auto": not label_stage})
        if label_stage:
            _post(stack, f"/api/pipelines/{dataset_id}", {"stage": "label", "auto": True}, "PATCH")
        # Per-image answers are wrong at the error rate; a whole class's keep/drop is taken as
        # double-checked (one wrong drop would remove a tenth of CIFAR and swamp the comparison).
        join = (
            stack.simulate(name, real.truth, error_rate=error_rate, class_error_rate=0.0)
            if humans
            else None
        )
        try:
            if stop_after_junk:
                status = stack.wait_until(
                    dataset_id,
                    lambda s: s["stage"] != "junk",
                    timeout=timeout,
                    on_poll=log.rounds,
                )
                _post(stack, f"/api/pipelines/{dataset_id}", {"auto": False}, "PATCH")
                # The label stage's jobs are not part of this measurement.
                for worker in stack.workers:
                    worker.stop()
            else:
                status = stack.wait_done(dataset_id, timeout=timeout, on_poll=log.rounds)
        finally:
            if join is not None:
                join()
        status = stack.status(dataset_id)
        seconds = clock()
        out = work / "export"
        rows = stack.export(dataset_id, out, require_model=not stop_after_junk)
        verdicts: Counter[str] = Counter()
        for stats in stack.simulations:
            verdicts.update(stats.decisions)
    return LoopRun(status, rows, verdicts, out, seconds)


def decisions_by_kind(status: dict[str, Any]) -> dict[str, int]:
    """Tasks decided, by kind of task, from the pipeline's queues."""
    return {q["kind"]: int(q["done"]) for q in status["queues"] if q["done"]}


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


# --- the report ---------------------------------------------------------------------------------


def print_label_tables(parts: dict[str, dict[str, Any]], base: dict[str, float]) -> None:
    print("\nCIFAR-10N worse through the loop (noise = labels that differ from the clean ones):")
    rows = []
    for name, part in parts.items():
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(part["decisions_by_kind"].items()))
        rows.append(
            [
                name,
                part["imported"],
                part["input_noise"],
                part["final_size"],
                part["final_noise"],
                part["final_relabelled"],
                f"{part['decisions']} ({kinds or 'none'})",
            ]
        )
    print(
        table(
            ["run", "imported", "noise in", "exported", "noise out", "relabelled", "decisions"],
            rows,
        )
    )
    print(f"\nCIFAR-10 test accuracy, one final recipe ({FINAL_RECIPE}) on every training set:")
    rows = []
    for name, part in parts.items():
        rows.append(
            [
                name,
                base["a_noisy"],
                part["test_accuracy"],
                base["c_clean"],
                part["gap_closed"],
            ]
        )
    print(table(["run", "(a) noisy", "(b) exported model", "(c) clean", "gap closed"], rows))


def print_junk_table(part: dict[str, Any]) -> None:
    audit = part["audit"]
    print("\nCaltech-101 + BACKGROUND_Google, junk stage:")
    print(
        table(
            [
                "imported",
                "junk in",
                "removed",
                "precision",
                "recall",
                "junk left",
                "audit: junk/audited",
                "95% upper (unverified)",
                "95% upper (all kept)",
                "iterations",
                "decisions",
            ],
            [
                [
                    part["considered"],
                    f"{part['junk_in']} ({part['input_junk_rate']:.3f})",
                    part["removed"],
                    part["precision"],
                    part["recall"],
                    f"{part['junk_left']} ({part['junk_left_rate']:.4f})",
                    None
                    if audit is None
                    else f"{audit['estimate']['successes']}/{audit['estimate']['trials']}",
                    None if audit is None else audit["estimate"]["high"],
                    None if audit is None else (audit.get("overall") or {}).get("high"),
                    part["junk_iterations"],
                    part["decisions"],
                ]
            ],
        )
    )
    print(
        "decisions by kind: "
        + ", ".join(f"{k} {n}" for k, n in sorted(part["decisions_by_kind"].items()))
        + f"; rounds: {' → '.join(part['round_kinds'])}"
    )


def main(argv: list[str] | None = None) -> int:
    share_cores()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (minutes)")
    parser.add_argument(
        "--parts", default="humans,no_humans,junk", help="which parts to run (comma-separated)"
    )
    parser.add_argument("--subset", type=int, help="CIFAR training images in the loop")
    parser.add_argument(
        "--junk-set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a pipeline config key of the junk part, e.g. junk_threshold=0.6 (repeatable)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, DBs)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.subset is not None:
        settings = Settings(**{**asdict(settings), "subset": args.subset})
    junk_overrides = {}
    for item in args.junk_set:
        key, _, value = item.partition("=")
        junk_overrides[key] = json.loads(value)
    settings = Settings(**{**asdict(settings), "junk_overrides": junk_overrides})
    parts = args.parts.split(",")
    unknown = set(parts) - {"humans", "no_humans", "junk"}
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}")

    env = environment()
    log = Log()
    print(f"settings: {asdict(settings)}", flush=True)
    print(f"load average at start: {env['load_average_at_start']}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="thresher-bench-pipeline-"))
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    try:
        label_parts = [p for p in parts if p != "junk"]
        if label_parts:
            clock = Timer()
            cifar = load_cifar(settings, work)
            seconds["cifar_data"] = clock()
            log(f"CIFAR ready: {settings.subset} training images, {cifar.test_labels.size} test")
            for part in label_parts:
                clock = Timer()
                log(f"part {part}")
                results[part] = label_part(
                    log, settings, cifar, work / part, humans=part == "humans"
                )
                seconds[part] = clock()
            clock = Timer()
            base = baselines(log, cifar, [results[p]["recipe_yaml"] for p in label_parts], work)
            seconds["baselines"] = clock()
            for part in label_parts:
                gap = base["c_clean"] - base["a_noisy"]
                b = results[part]["test_accuracy"]
                results[part]["gap_closed"] = (b - base["a_noisy"]) / gap if gap > 0 else None
            results["baselines"] = base
        if "junk" in parts:
            clock = Timer()
            log("part junk")
            results["junk"] = junk_part(log, settings, work / "junk")
            seconds["junk"] = clock()
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    if label_parts:
        print_label_tables({p: results[p] for p in label_parts}, results["baselines"])
    if "junk" in results:
        print_junk_table(results["junk"])
    seconds["total"] = log.clock()
    print(f"\nwall seconds: {', '.join(f'{k} {v:.0f}' for k, v in seconds.items())}")
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"load average at start {env['load_average_at_start']}, at the end {load_end} "
        "(2 cores; other work on the machine inflates the wall times)"
    )
    name = "pipeline-quick" if args.quick else "pipeline"
    path = write_results(
        name,
        {
            "benchmark": name,
            "settings": {
                **asdict(settings),
                "label_config": {
                    "humans": label_config(settings, humans=True),
                    "no_humans": label_config(settings, humans=False),
                },
                "junk_config": junk_config(settings),
            },
            "results": results,
            "wall_seconds": seconds,
            "environment": {**env, "load_average_at_end": load_end},
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
