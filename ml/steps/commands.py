"""The ``thresher ml`` commands of the workflow steps (crossval, pullback, train, predict,
junk-train, junk-score): parse the options, run the step (:mod:`ml.steps.cleaning`,
:mod:`ml.steps.training`), print what it did. :mod:`ml.cli` registers them from
:data:`STEP_COMMANDS`.

Importable without torch: each command imports the heavy modules inside its body.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ml.steps.options import (
    CacheDirOpt,
    DeviceOpt,
    LabelColumnOpt,
    ManifestArg,
    RootOpt,
    SetOpt,
    manifest_arg,
    print_table,
    recipe_arg,
)

if TYPE_CHECKING:
    from ml.steps.cleaning import CrossvalSummary

__all__ = ["STEP_COMMANDS"]


CrossvalTopKOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="k of the top-k rule: kept if the label is in the top k "
        "(default: 5 for 100 classes or more, else 1).",
    ),
]
RuleOpt = Annotated[
    str, typer.Option(help="Which detector decides kept/rejected: topk, cleanlab or knn.")
]


def crossval_command(
    manifest: ManifestArg,
    out: Annotated[Path, typer.Option(help="Output directory.")],
    recipe: Annotated[str, typer.Option(help="Recipe name or YAML path.")] = "pretrained-cpu",
    folds: Annotated[int, typer.Option(min=2, help="K, the number of folds.")] = 5,
    top_k: CrossvalTopKOpt = None,
    record_k: Annotated[int, typer.Option(min=1, help="Classes recorded per sample.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the fold split.")] = 0,
    rule: RuleOpt = "topk",
    knn_k: Annotated[int, typer.Option(min=1, help="Neighbours of the kNN detector.")] = 10,
    root: RootOpt = None,
    label_column: LabelColumnOpt = "label",
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = None,
    set_: SetOpt = None,
) -> None:
    """Out-of-fold predictions, then the top-k rule, cleanlab's confident learning and (for a
    recipe on embeddings) kNN label agreement side by side.

    Writes OUT/oof.npz, OUT/decisions.csv, OUT/summary.json and the fold models.
    """
    from ml.steps.cleaning import run_crossval
    from ml.steps.files import StepError

    if rule not in ("topk", "cleanlab", "knn"):
        raise typer.BadParameter("use topk, cleanlab or knn", param_hint="--rule")
    samples = manifest_arg(manifest, root, label_column)
    try:
        summary = run_crossval(
            samples,
            recipe_arg(recipe, set_),
            out,
            folds=folds,
            k=top_k,
            top_k=record_k,
            seed=seed,
            rule=rule,  # type: ignore[arg-type]
            knn_k=knn_k,
            cache_dir=cache_dir,
            device=device,
        )
    except StepError as error:
        raise typer.BadParameter(str(error), param_hint="--rule") from error
    _print_crossval(summary)
    typer.echo(f"wrote {out}/decisions.csv")


def _print_crossval(summary: CrossvalSummary) -> None:
    knn = "-" if summary.knn_rejected is None else str(summary.knn_rejected)
    print_table(
        f"cross-validation ({summary.folds} folds, top-{summary.k})",
        [
            ("samples", str(summary.samples)),
            ("classes", str(summary.classes)),
            ("out-of-fold accuracy vs given labels", f"{summary.oof_accuracy:.4f}"),
            ("kept (top-k)", str(summary.kept)),
            ("rejected (top-k)", str(summary.rejected)),
            ("cleanlab label issues", str(summary.cleanlab_issues)),
            ("rejected by both", str(summary.both_reject)),
            ("rejected by kNN", knn),
            ("status from", summary.rule),
        ],
    )


def pullback_command(
    manifest: ManifestArg,
    decisions: Annotated[
        Path, typer.Option(exists=True, dir_okay=False, help="decisions.csv from crossval.")
    ],
    out: Annotated[Path, typer.Option(help="Output directory.")],
    recipe: Annotated[
        list[str] | None, typer.Option(help="Recipe per round, used in turn (repeatable).")
    ] = None,
    rounds: Annotated[int, typer.Option(min=1, help="At most this many rounds.")] = 2,
    top_k: Annotated[
        int | None,
        typer.Option(min=1, help="k of the top-k rule (default: 5 for 100+ classes, else 1)."),
    ] = None,
    root: RootOpt = None,
    label_column: LabelColumnOpt = "label",
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = None,
    set_: SetOpt = None,
) -> None:
    """Pull-back rounds on the kept / rejected split of DECISIONS.

    Each round trains on the kept samples and moves back the rejected ones whose label is now in
    their top-k; the rounds stop when one pulls back nothing. Writes OUT/decisions.csv.
    """
    from ml.steps.cleaning import run_pullback

    samples = manifest_arg(manifest, root, label_column)
    default = ["pretrained-cpu-pullback-a", "pretrained-cpu-pullback-b"]
    recipes = [recipe_arg(name, set_) for name in (recipe or default)]
    history = run_pullback(
        samples,
        decisions,
        recipes,
        out,
        rounds=rounds,
        k=top_k,
        cache_dir=cache_dir,
        device=device,
    )
    print_table(
        "pull-back rounds",
        [(f"round {r.round} ({r.recipe})", f"{r.pulled_back} of {r.predicted}") for r in history],
    )
    typer.echo(f"wrote {out}/decisions.csv")


KeptOfOpt = Annotated[
    Path | None,
    typer.Option(exists=True, dir_okay=False, help="Train only on the kept samples of this."),
]
RejectsOpt = Annotated[
    str,
    typer.Option(
        help="With --decisions, what rejected samples contribute: drop, soft (the "
        "out-of-fold probabilities as soft targets) or relabel (the confident ones)."
    ),
]
OofOpt = Annotated[
    Path | None,
    typer.Option(
        exists=True, dir_okay=False, help="oof.npz of the crossval (default: beside DECISIONS)."
    ),
]


def train_command(
    manifest: ManifestArg,
    out: Annotated[Path, typer.Option(help="Run directory (checkpoints, history.json).")],
    recipe: Annotated[str, typer.Option(help="Recipe name or YAML path.")] = "pretrained-cpu-final",
    decisions: KeptOfOpt = None,
    rejects: RejectsOpt = "drop",
    oof: OofOpt = None,
    reject_weight: Annotated[
        float, typer.Option(min=0.0, help="Loss weight of rejected samples' soft targets.")
    ] = 0.5,
    relabel_threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Relabel rejects at least this confident.")
    ] = 0.9,
    val: Annotated[
        Path | None, typer.Option(exists=True, help="Validation manifest, evaluated every epoch.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT's latest checkpoint.")] = True,
    root: RootOpt = None,
    label_column: LabelColumnOpt = "label",
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train a classifier with a recipe (final training: on the kept samples of DECISIONS, and
    the rejected ones as --rejects says)."""
    from ml.steps.files import StepError
    from ml.steps.training import run_train

    if rejects not in ("drop", "soft", "relabel"):
        raise typer.BadParameter("use drop, soft or relabel", param_hint="--rejects")
    samples = manifest_arg(manifest, root, label_column)
    val_samples = manifest_arg(val, None, label_column) if val is not None else None
    try:
        checkpoint = run_train(
            samples,
            recipe_arg(recipe, set_),
            out,
            decisions=decisions,
            rejects=rejects,  # type: ignore[arg-type]
            oof=oof,
            reject_weight=reject_weight,
            relabel_threshold=relabel_threshold,
            val=val_samples,
            cache_dir=cache_dir,
            device=device,
            resume=resume,
        )
    except StepError as error:
        raise typer.BadParameter(str(error), param_hint="--rejects") from error
    typer.echo(f"wrote {checkpoint}")


def predict_command(
    manifest: ManifestArg,
    model: Annotated[Path, typer.Option(exists=True, help="A run or checkpoint directory.")],
    out: Annotated[Path, typer.Option(help="Predictions CSV to write.")],
    top_k: Annotated[int, typer.Option(min=1, help="Classes kept per sample.")] = 5,
    probs: Annotated[
        Path | None, typer.Option(help="Also write the [N, C] probabilities (.npy).")
    ] = None,
    root: RootOpt = None,
    label_column: LabelColumnOpt = "label",
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Predict every sample: top-k classes and probabilities, and the given label's probability."""
    from ml.steps.training import run_predict

    samples = manifest_arg(manifest, root, label_column)
    count = run_predict(
        samples, model, out, top_k=top_k, probs_out=probs, cache_dir=cache_dir, device=device
    )
    typer.echo(f"wrote {out} ({count} samples)")


def junk_train_command(
    manifest: ManifestArg,
    out: Annotated[Path, typer.Option(help="Run directory of the junk model.")],
    recipe: Annotated[str, typer.Option(help="Recipe name or YAML path.")] = "pretrained-cpu-junk",
    root: RootOpt = None,
    label_column: LabelColumnOpt = "label",
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train the binary junk classifier on samples labelled 'junk' or 'normal'."""
    from ml.steps.files import StepError
    from ml.steps.training import run_junk_train

    samples = manifest_arg(manifest, root, label_column)
    try:
        checkpoint = run_junk_train(
            samples, recipe_arg(recipe, set_), out, cache_dir=cache_dir, device=device
        )
    except StepError as error:
        raise typer.BadParameter(str(error), param_hint="MANIFEST") from error
    typer.echo(f"wrote {checkpoint}")


def junk_score_command(
    manifest: ManifestArg,
    model: Annotated[Path, typer.Option(exists=True, help="The junk model's run directory.")],
    out: Annotated[Path, typer.Option(help="CSV of p(junk) per sample.")],
    threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Queue for review at p(junk) >= this.")
    ] = 0.9,
    root: RootOpt = None,
    label_column: LabelColumnOpt = "label",
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Score every sample with p(junk) and mark the review queue (p(junk) >= threshold)."""
    from ml.steps.training import run_junk_score

    samples = manifest_arg(manifest, root, label_column)
    queued = run_junk_score(
        samples, model, out, threshold=threshold, cache_dir=cache_dir, device=device
    )
    typer.echo(f"wrote {out}: {queued} of {len(samples)} samples queued for review")


#: The workflow steps' commands by name, as ``thresher ml`` lists them.
STEP_COMMANDS: dict[str, Callable[..., None]] = {
    "crossval": crossval_command,
    "pullback": pullback_command,
    "train": train_command,
    "predict": predict_command,
    "junk-train": junk_train_command,
    "junk-score": junk_score_command,
}
