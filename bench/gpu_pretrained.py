"""The pretrained steps of the loop that the GPU check times on its images: the bundled
backbone's embedding pass, and one fold of the ``finetune`` recipe.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gpu_paths import Settings, sync
from ml.cache import decoded_cache
from ml.predict import predict
from ml.train import train_model
from ml.training.interface import Control, TrainingProgress


def embed_rate(
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


def finetune_fold(
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
        sync(device)
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
    sync(device)
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
