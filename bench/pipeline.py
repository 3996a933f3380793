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
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness.reporting import (
    Timer,
    environment,
    load_average,
    share_cores,
    table,
    write_results,
)
from bench.pipeline_loop import Log
from bench.pipeline_parts import (
    FINAL_RECIPE,
    FULL,
    QUICK,
    Settings,
    baselines,
    junk_config,
    junk_part,
    label_config,
    label_part,
    load_cifar,
)

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


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Settings, list[str]]:
    """The command line: its arguments, the settings they make, and the parts to run."""
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
    return args, settings, parts


def run_label_parts(
    log: Log, settings: Settings, parts: list[str], work: Path, seconds: dict[str, float]
) -> dict[str, Any]:
    """Parts 1 and 2 on the same CIFAR subset, then the baselines and the gap each part
    closed; their wall times go into ``seconds``."""
    results: dict[str, Any] = {}
    clock = Timer()
    cifar = load_cifar(settings, work)
    seconds["cifar_data"] = clock()
    log(f"CIFAR ready: {settings.subset} training images, {cifar.test_labels.size} test")
    for part in parts:
        clock = Timer()
        log(f"part {part}")
        results[part] = label_part(log, settings, cifar, work / part, humans=part == "humans")
        seconds[part] = clock()
    clock = Timer()
    base = baselines(log, cifar, [results[p]["recipe_yaml"] for p in parts], work)
    seconds["baselines"] = clock()
    for part in parts:
        gap = base["c_clean"] - base["a_noisy"]
        b = results[part]["test_accuracy"]
        results[part]["gap_closed"] = (b - base["a_noisy"]) / gap if gap > 0 else None
    results["baselines"] = base
    return results


def main(argv: list[str] | None = None) -> int:
    share_cores()
    args, settings, parts = parse_args(argv)
    env = environment()
    log = Log()
    print(f"settings: {asdict(settings)}", flush=True)
    print(f"load average at start: {env['load_average_at_start']}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="thresher-bench-pipeline-"))
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    label_parts = [p for p in parts if p != "junk"]
    try:
        if label_parts:
            results.update(run_label_parts(log, settings, label_parts, work, seconds))
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
    load_end = load_average()
    print(
        f"load average at start {env['load_average_at_start']}, at the end {load_end} "
        "(2 cores; other work on the machine inflates the wall times)"
    )
    name = "pipeline-quick" if args.quick else "pipeline"
    settings_used = {
        **asdict(settings),
        "label_config": {
            "humans": label_config(settings, humans=True),
            "no_humans": label_config(settings, humans=False),
        },
        "junk_config": junk_config(settings),
    }
    payload = {
        "benchmark": name,
        "settings": settings_used,
        "results": results,
        "wall_seconds": seconds,
        "environment": {**env, "load_average_at_end": load_end},
    }
    print(f"wrote {write_results(name, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
