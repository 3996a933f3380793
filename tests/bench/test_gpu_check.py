"""The GPU check's CPU smoke run (bench/gpu_check.py --smoke): every path it times on a GPU,
the embedding pass and the fine-tune fold included, runs and reports a rate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_the_smoke_run_times_every_path_on_a_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--smoke", "--images", "40", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["smoke"] is True
    for path in ("on_gpu", "pillow_loader", "decoded_cache"):
        assert report["results"][path]["train"] > 0 and report["results"][path]["infer"] > 0
    assert report["pretrained"]["embed"]["images_per_second"] > 0
    fold = report["pretrained"]["finetune_fold"]
    assert fold["train_images"] == 32 and fold["seconds"] > 0
    assert fold["train_images_per_second"] > 0
    assert "fine-tune fold" in done.stdout
