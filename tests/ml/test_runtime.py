"""The runtime seam (ml/runtime.py): a local run honours its callback's stop."""

from __future__ import annotations

import numpy as np
import pytest

from ml.parallel import train
from ml.runtime import JobStopped, LocalRuntime
from ml.training.interface import Control
from tests.ml.factories import colour_images, tiny_recipe


def test_a_callback_that_stops_raises_job_stopped_at_a_step_boundary() -> None:
    labels = np.array([0, 1] * 8, dtype=np.int64)
    steps: list[int] = []

    def stop_at_second_step(progress: object) -> Control:
        steps.append(1)
        return Control.STOP if len(steps) >= 2 else Control.CONTINUE

    runtime = LocalRuntime("cpu", stop_at_second_step)
    with pytest.raises(JobStopped):
        train(
            tiny_recipe(epochs=3),
            colour_images(labels, size=16),
            np.arange(labels.shape[0], dtype=np.int64),
            labels,
            num_classes=2,
            class_names=None,
            runtime=runtime,
            checkpoint_dir=None,
        )
    assert len(steps) == 2


def test_a_local_runtime_without_a_device_picks_one() -> None:
    assert LocalRuntime().device in {"cpu", "cuda"}
    assert LocalRuntime("cpu").rank == 0 and LocalRuntime("cpu").world == 1
