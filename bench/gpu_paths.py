"""The data paths the GPU check times (see ``bench/gpu_check.py``), each in images/s of training
and of inference: uint8 batches already on the device (the model's ceiling), JPEGs decoded by
Pillow in DataLoader workers, and the product's decoded cache read by ``train_model`` and
``predict``. Also its settings and the synthetic JPEGs they all read.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml.cache import decoded_cache
from ml.checkpoint import TrainedModel
from ml.data import ManifestDataset
from ml.manifest import Manifest, Sample
from ml.models import create_model, data_config
from ml.predict import predict
from ml.recipes import recipe_from_dict
from ml.train import train_model
from ml.training.interface import Control, TrainingProgress


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


def settings_for(smoke: bool) -> Settings:
    workers = max(1, min(16, (os.cpu_count() or 2) - 1))
    if smoke:
        return Settings("cifar_resnet8", 32, (80, 60), 64, 16, 32, 1, 3, 1, "cpu", 64, 1)
    return Settings("resnet50", 224, (500, 375), 4096, 256, 512, 10, 40, workers, "cuda", 160, 2)


def write_jpegs(directory: Path, count: int, size: tuple[int, int], seed: int) -> list[Path]:
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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(
    steps: Callable[[], Any], device: torch.device, warmup: int, timed: int, batch: int
) -> float:
    """Images per second of ``timed`` calls of ``steps`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        steps()
    sync(device)
    started = time.perf_counter()
    for _ in range(timed):
        steps()
    sync(device)
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


def on_device(settings: Settings, device: torch.device) -> dict[str, float]:
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
            sync(device)
            started = time.perf_counter()
            seen = 0
        step(images, labels) if with_labels else step(images)
        seen += images.shape[0]
    sync(device)
    return seen / (time.perf_counter() - started)


def pillow_loader(settings: Settings, paths: list[Path], device: torch.device) -> dict[str, float]:
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


def decoded_cache_path(
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
        sync(device)
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
    sync(device)
    started = time.perf_counter()
    predict(trained, cache.images, indices=rows, top_k=5, batch_size=settings.infer_batch)
    sync(device)
    infer_rate = rows.shape[0] / (time.perf_counter() - started)
    return {"train": train_rate, "infer": infer_rate, "build_seconds": build_seconds}
