"""GPU data-path check: does the real data path keep the GPU as busy as data already on it?

For one model (ResNet-50 at 224 px by default, bfloat16 autocast, channels-last), measures
training and inference throughput (images/s) three ways:

1. **on-GPU**: uint8 batches already on the device: the model's own ceiling;
2. **Pillow DataLoader**: JPEG files decoded and resized by Pillow in DataLoader workers
   (``ml.data.ManifestDataset``), pinned memory;
3. **decoded cache**: the product's path: the images decoded once into the memory-mapped uint8
   cache (``ml.cache``), then ``ml.train.train_model`` (per-sample augmentation in DataLoader
   workers) and ``ml.predict.predict`` (a background thread reads contiguous rows into pinned
   memory). The one-time cache build is timed separately.

Prints each path's rate as a fraction of on-GPU, against the goals (training >= 90%, inference
>= 80%). Then times the two pretrained steps of the loop on the same images:

4. **embed**: the bundled EfficientNet-Lite0's flip-averaged features (``ml.embed``, 160 px),
   read through the decoded cache as a GPU worker does, into a throwaway embedding cache;
5. **fine-tune fold**: one cross-validation fold of the ``finetune`` recipe (the whole pretrained
   network trained on 4/5 of the images for ``--fold-epochs`` epochs, then the held-out fifth
   predicted), with its wall time and training images/s.

Writes bench/results/gpu_check.json (``--out`` elsewhere).

Usage (the first three paths took about 4 minutes on one H100 with 16 cores; the embed and
fine-tune steps have not been timed on a GPU yet)::

    python bench/gpu_check.py              # CUDA required
    python bench/gpu_check.py --smoke      # tiny sizes; runs on a CPU in well under a minute

The JPEGs are synthetic (smooth random colour fields with noise, 500×375, quality 90), written to
a temporary directory, so the check needs no dataset and no network.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.harness.reporting import write_results  # noqa: E402
from ml.cache import decoded_cache  # noqa: E402
from ml.checkpoint import TrainedModel  # noqa: E402
from ml.data import ManifestDataset  # noqa: E402
from ml.manifest import Manifest, Sample  # noqa: E402
from ml.models import create_model, data_config  # noqa: E402
from ml.predict import predict  # noqa: E402
from ml.recipes import recipe_from_dict  # noqa: E402
from ml.train import train_model  # noqa: E402
from ml.training.interface import Control, TrainingProgress  # noqa: E402

GOALS = {"train": 0.90, "infer": 0.80}


@dataclass(frozen=True)
class Settings:
    model: str
    image_size: int
    source_size: tuple[int, int]
    images: int
    train_batch: int
    infer_batch: int
    warmup_steps: int
    timed_steps: int
    workers: int
    device: str
    embed_size: int
    fold_epochs: int


def _settings(smoke: bool) -> Settings:
    workers = max(1, min(16, (os.cpu_count() or 2) - 1))
    if smoke:
        return Settings("cifar_resnet8", 32, (80, 60), 64, 16, 32, 1, 3, 1, "cpu", 64, 1)
    return Settings("resnet50", 224, (500, 375), 4096, 256, 512, 10, 40, workers, "cuda", 160, 2)


def _write_jpegs(directory: Path, count: int, size: tuple[int, int], seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    width, height = size
    paths = []
    for i in range(count):
        small = rng.integers(0, 256, size=(height // 25 + 2, width // 25 + 2, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
        pixels = np.asarray(image).astype(np.int16) + rng.integers(-12, 13, size=(height, width, 3))
        path = directory / f"{i:06d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(
    steps: Callable[[], Any], device: torch.device, warmup: int, timed: int, batch: int
) -> float:
    """Images per second of ``timed`` calls of ``steps`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        steps()
    _sync(device)
    started = time.perf_counter()
    for _ in range(timed):
        steps()
    _sync(device)
    return timed * batch / (time.perf_counter() - started)


def _model(settings: Settings, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(settings.model, num_classes=1000)
    return model.to(device).to(memory_format=torch.channels_last)


def _normalise(raw: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    config = data_config(model)
    mean = torch.tensor(config["mean"], device=raw.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(config["std"], device=raw.device).view(1, 3, 1, 1) * 255
    return ((raw.float() - mean) / std).contiguous(memory_format=torch.channels_last)


def _train_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        x = _normalise(images.to(device, non_blocking=True), model)
        with autocast:
            loss = torch.nn.functional.cross_entropy(
                model(x).float(), labels.to(device, non_blocking=True)
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _infer_step(model: torch.nn.Module, device: torch.device) -> Callable[[torch.Tensor], None]:
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    @torch.no_grad()
    def step(images: torch.Tensor) -> None:
        with autocast:
            model(_normalise(images.to(device, non_blocking=True), model)).float().softmax(1)

    return step


def _on_device(settings: Settings, device: torch.device) -> dict[str, float]:
    model = _model(settings, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    train = _train_step(model, optimizer, device)
    size = settings.image_size
    images = torch.randint(0, 256, (settings.train_batch, 3, size, size), dtype=torch.uint8)
    images = images.to(device)
    labels = torch.randint(0, 10, (settings.train_batch,), device=device)
    train_rate = _timed(
        lambda: train(images, labels),
        device,
        settings.warmup_steps,
        settings.timed_steps,
        settings.train_batch,
    )
    model.eval()
    infer = _infer_step(model, device)
    batch = torch.randint(0, 256, (settings.infer_batch, 3, size, size), dtype=torch.uint8)
    batch = batch.to(device)
    infer_rate = _timed(
        lambda: infer(batch),
        device,
        settings.warmup_steps,
        settings.timed_steps,
        settings.infer_batch,
    )
    return {"train": train_rate, "infer": infer_rate}


def _loader_rate(
    loader: torch.utils.data.DataLoader[Any],
    step: Callable[..., None],
    device: torch.device,
    warmup: int,
    timed: int,
    with_labels: bool,
) -> float:
    iterator = iter(loader)
    seen = 0
    started = 0.0
    for index in range(warmup + timed):
        try:
            images, labels = next(iterator)
        except StopIteration:  # a new epoch: the workers start over, as in real training
            iterator = iter(loader)
            images, labels = next(iterator)
        if index == warmup:
            _sync(device)
            started = time.perf_counter()
            seen = 0
        step(images, labels) if with_labels else step(images)
        seen += images.shape[0]
    _sync(device)
    return seen / (time.perf_counter() - started)


def _pillow(settings: Settings, paths: list[Path], device: torch.device) -> dict[str, float]:
    manifest = Manifest(tuple(Sample(p, 0, p.name) for p in paths), ("x",))
    dataset = ManifestDataset(manifest, size=settings.image_size)
    rates = {}
    for kind, batch in (("train", settings.train_batch), ("infer", settings.infer_batch)):
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch,
            shuffle=kind == "train",
            num_workers=settings.workers,
            pin_memory=device.type == "cuda",
            drop_last=True,
            persistent_workers=True,
            prefetch_factor=4,
        )
        model = _model(settings, device)
        if kind == "train":
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
            step: Callable[..., None] = _train_step(model, optimizer, device)
        else:
            model.eval()
            step = _infer_step(model, device)
        rates[kind] = _loader_rate(
            loader,
            step,
            device,
            settings.warmup_steps,
            settings.timed_steps,
            with_labels=kind == "train",
        )
    return rates


def _cache_path(
    settings: Settings, paths: list[Path], device: torch.device, cache_dir: Path
) -> dict[str, float]:
    started = time.perf_counter()
    cache = decoded_cache(
        paths, size=settings.image_size, cache_dir=cache_dir, workers=settings.workers
    )
    build_seconds = time.perf_counter() - started
    total = settings.warmup_steps + settings.timed_steps
    recipe = recipe_from_dict(
        {
            "name": "gpu-check",
            "model": {"name": settings.model},
            "image_size": settings.image_size,
            "epochs": math.ceil(total * settings.train_batch / len(paths)) + 1,
            "batch_size": settings.train_batch,
            "eval_batch_size": settings.infer_batch,
            "optimizer": {"name": "sgd", "lr": 0.01},
            "augment": {"random_resized_crop": {"scale": [0.25, 1.0]}, "hflip": {"p": 0.5}},
            "loader_workers": settings.workers,
        }
    )
    marks: list[tuple[int, float]] = []

    def on_step(progress: TrainingProgress) -> Control | None:
        _sync(device)
        marks.append((progress.global_step, time.perf_counter()))
        return Control.STOP if progress.global_step >= total else None

    labels = np.zeros(len(paths), dtype=np.int64)
    result = train_model(
        recipe,
        cache.images,
        labels,
        num_classes=1000,
        device=device,
        callback=on_step,
    )
    (first_step, first_time), (last_step, last_time) = marks[settings.warmup_steps - 1], marks[-1]
    train_rate = (last_step - first_step) * settings.train_batch / (last_time - first_time)

    trained: TrainedModel = result.trained
    warm = np.arange(settings.infer_batch * settings.warmup_steps) % len(paths)
    predict(trained, cache.images, indices=warm, top_k=5, batch_size=settings.infer_batch)
    rows = np.arange(settings.infer_batch * settings.timed_steps) % len(paths)
    _sync(device)
    started = time.perf_counter()
    predict(trained, cache.images, indices=rows, top_k=5, batch_size=settings.infer_batch)
    _sync(device)
    infer_rate = rows.shape[0] / (time.perf_counter() - started)
    return {"train": train_rate, "infer": infer_rate, "build_seconds": build_seconds}


def _embed_rate(
    settings: Settings, paths: list[Path], device: torch.device, root: Path
) -> dict[str, float]:
    """Images/s of the bundled backbone's embedding, reading the decoded cache (built first,
    timed apart) into an empty embedding cache."""
    from ml.cache import content_hashes
    from ml.embed import Embedder, embed_missing
    from ml.embeddings import EmbeddingStore
    from ml.recipes import ModelConfig

    started = time.perf_counter()
    cache = decoded_cache(
        paths, size=settings.embed_size, cache_dir=root / "embed-cache", workers=settings.workers
    )
    build_seconds = time.perf_counter() - started
    embedder = Embedder(
        ModelConfig(name="efficientnet_lite0", pretrained=True),
        image_size=settings.embed_size,
        flip=True,
        device=device,
    )
    store = EmbeddingStore(root / "embeddings", embedder.space)
    stats = embed_missing(store, embedder, paths, content_hashes(paths), decoded=cache.images)
    if stats.computed != len(paths):
        raise RuntimeError(f"embedded {stats.computed} of {len(paths)} images")
    return {"images_per_second": stats.images_per_second, "build_seconds": build_seconds}


def _finetune_fold(
    settings: Settings, paths: list[Path], device: torch.device, root: Path
) -> dict[str, float]:
    """One fold of the ``finetune`` recipe: train on 4/5 of the images, predict the rest."""
    from ml.recipes import load_recipe

    recipe = load_recipe(
        "finetune",
        overrides={
            "epochs": settings.fold_epochs,
            "schedule.warmup_epochs": 0,
            "loader_workers": settings.workers,
            **(
                {"image_size": settings.embed_size, "batch_size": 16, "eval_batch_size": 32}
                if device.type == "cpu"
                else {}
            ),
        },
    )
    cache = decoded_cache(
        paths, size=recipe.image_size, cache_dir=root / "fold-cache", workers=settings.workers
    )
    labels = np.arange(len(paths), dtype=np.int64) % 10
    held_out = np.arange(len(paths)) % 5 == 0
    train_rows, test_rows = np.flatnonzero(~held_out), np.flatnonzero(held_out)
    marks: list[tuple[int, float]] = []

    def on_step(progress: TrainingProgress) -> Control | None:
        _sync(device)
        marks.append((progress.global_step, time.perf_counter()))
        return None

    started = time.perf_counter()
    result = train_model(
        recipe,
        cache.images,
        labels,
        num_classes=10,
        indices=train_rows,
        device=device,
        callback=on_step,
    )
    predict(result.trained, cache.images, indices=test_rows, top_k=5)
    _sync(device)
    seconds = time.perf_counter() - started
    (first_step, first_time), (last_step, last_time) = marks[0], marks[-1]
    steps = max(last_step - first_step, 1)
    rate = steps * recipe.batch_size / max(last_time - first_time, 1e-9)
    return {
        "seconds": seconds,
        "train_images_per_second": rate,
        "train_images": int(train_rows.size),
        "epochs": recipe.epochs,
        "image_size": recipe.image_size,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, CPU")
    parser.add_argument("--images", type=int, help="number of JPEGs (default 4096)")
    parser.add_argument("--out", type=Path, help="results file (default: bench/results/…)")
    args = parser.parse_args(argv)
    settings = _settings(args.smoke)
    if args.images:
        settings = Settings(**{**asdict(settings), "images": args.images})
    device = torch.device(settings.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --smoke for the CPU check of this script")
        return 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    print(f"settings: {settings}", flush=True)
    with tempfile.TemporaryDirectory(prefix="thresher-gpu-check-") as tmp:
        root = Path(tmp)
        (root / "jpeg").mkdir()
        started = time.perf_counter()
        paths = _write_jpegs(root / "jpeg", settings.images, settings.source_size, seed=0)
        print(f"wrote {len(paths)} JPEGs in {time.perf_counter() - started:.0f} s", flush=True)
        rates = {"on_gpu": _on_device(settings, device)}
        print(f"on-GPU: {rates['on_gpu']}", flush=True)
        rates["pillow_loader"] = _pillow(settings, paths, device)
        print(f"Pillow DataLoader: {rates['pillow_loader']}", flush=True)
        rates["decoded_cache"] = _cache_path(settings, paths, device, root / "cache")
        print(f"decoded cache: {rates['decoded_cache']}", flush=True)
        pretrained = {"embed": _embed_rate(settings, paths, device, root)}
        print(f"embed: {pretrained['embed']}", flush=True)
        pretrained["finetune_fold"] = _finetune_fold(settings, paths, device, root)
        print(f"fine-tune fold: {pretrained['finetune_fold']}", flush=True)

    base = rates["on_gpu"]
    print(f"\n{'path':<18}{'train img/s':>12}{'ratio':>8}{'infer img/s':>13}{'ratio':>8}")
    summary: dict[str, Any] = {}
    for name in ("on_gpu", "pillow_loader", "decoded_cache"):
        train_ratio = rates[name]["train"] / base["train"]
        infer_ratio = rates[name]["infer"] / base["infer"]
        summary[name] = {**rates[name], "train_ratio": train_ratio, "infer_ratio": infer_ratio}
        print(
            f"{name:<18}{rates[name]['train']:>12.0f}{train_ratio:>8.2f}"
            f"{rates[name]['infer']:>13.0f}{infer_ratio:>8.2f}"
        )
    cache = summary["decoded_cache"]
    verdict = {
        "train_goal_met": cache["train_ratio"] >= GOALS["train"],
        "infer_goal_met": cache["infer_ratio"] >= GOALS["infer"],
    }
    print(
        f"\ndecoded cache vs goals: training {cache['train_ratio']:.0%} "
        f"(goal {GOALS['train']:.0%}), "
        f"inference {cache['infer_ratio']:.0%} (goal {GOALS['infer']:.0%}); "
        f"cache build {cache['build_seconds']:.1f} s for {settings.images} images"
    )
    embed, fold = pretrained["embed"], pretrained["finetune_fold"]
    print(
        f"embed (Lite0, {settings.embed_size} px, flip-averaged): "
        f"{embed['images_per_second']:.0f} images/s; fine-tune fold ({fold['train_images']} "
        f"images × {fold['epochs']} epochs at {fold['image_size']} px, then predict): "
        f"{fold['seconds']:.1f} s, {fold['train_images_per_second']:.0f} training images/s"
    )
    if args.smoke:
        print("(smoke run on a CPU: the ratios say nothing about a GPU)")
    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    )
    payload = {
        "settings": asdict(settings),
        "device": device_name,
        "cpu_count": os.cpu_count(),
        "smoke": args.smoke,
        "results": summary,
        "pretrained": pretrained,
        "goals": GOALS,
        **verdict,
    }
    target = write_results("gpu_check_smoke" if args.smoke else "gpu_check", payload, out=args.out)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
