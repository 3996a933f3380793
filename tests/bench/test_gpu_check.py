"""The GPU check's CPU smoke run (bench/gpu_check.py --smoke): every path it times on a GPU,
the embedding pass and the fine-tune fold included, runs and reports a rate."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.scripts import run_bench

pytestmark = pytest.mark.slow


def test_the_smoke_run_times_every_path_on_a_cpu(tmp_path: Path) -> None:
    report, stdout = run_bench(
        "gpu_check.py", "--smoke", "--images", "40", out=tmp_path / "gpu_check.json", timeout=600
    )

    assert report["smoke"] is True
    for path in ("on_gpu", "pillow_loader", "decoded_cache"):
        assert report["results"][path]["train"] > 0 and report["results"][path]["infer"] > 0
    assert report["pretrained"]["embed"]["images_per_second"] > 0
    fold = report["pretrained"]["finetune_fold"]
    assert fold["train_images"] == 32 and fold["seconds"] > 0
    assert fold["train_images_per_second"] > 0
    assert "fine-tune fold" in stdout
