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
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gpu_paths import (
    Settings,
    decoded_cache_path,
    on_device,
    pillow_loader,
    settings_for,
    write_jpegs,
)
from bench.gpu_pretrained import embed_rate, finetune_fold
from bench.harness.reporting import write_results

GOALS = {"train": 0.90, "infer": 0.80}


def measure(
    settings: Settings, device: torch.device
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Writes the JPEGs into a temporary folder and times every path on them; returns the data
    paths' rates and the pretrained steps' figures."""
    with tempfile.TemporaryDirectory(prefix="thresher-gpu-check-") as tmp:
        root = Path(tmp)
        (root / "jpeg").mkdir()
        started = time.perf_counter()
        paths = write_jpegs(root / "jpeg", settings.images, settings.source_size, seed=0)
        print(f"wrote {len(paths)} JPEGs in {time.perf_counter() - started:.0f} s", flush=True)
        rates = {"on_gpu": on_device(settings, device)}
        print(f"on-GPU: {rates['on_gpu']}", flush=True)
        rates["pillow_loader"] = pillow_loader(settings, paths, device)
        print(f"Pillow DataLoader: {rates['pillow_loader']}", flush=True)
        rates["decoded_cache"] = decoded_cache_path(settings, paths, device, root / "cache")
        print(f"decoded cache: {rates['decoded_cache']}", flush=True)
        pretrained = {"embed": embed_rate(settings, paths, device, root)}
        print(f"embed: {pretrained['embed']}", flush=True)
        pretrained["finetune_fold"] = finetune_fold(settings, paths, device, root)
        print(f"fine-tune fold: {pretrained['finetune_fold']}", flush=True)
    return rates, pretrained


def report(
    settings: Settings, rates: dict[str, dict[str, float]], pretrained: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, bool]]:
    """Prints each path's rates against on-GPU and the goals; returns the summary and the
    verdict."""
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
    return summary, verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, CPU")
    parser.add_argument("--images", type=int, help="number of JPEGs (default 4096)")
    parser.add_argument("--out", type=Path, help="results file (default: bench/results/…)")
    args = parser.parse_args(argv)
    settings = settings_for(args.smoke)
    if args.images:
        settings = Settings(**{**asdict(settings), "images": args.images})
    device = torch.device(settings.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --smoke for the CPU check of this script")
        return 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    print(f"settings: {settings}", flush=True)
    rates, pretrained = measure(settings, device)
    summary, verdict = report(settings, rates, pretrained)
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
