"""Training and prediction on a runtime (ml/parallel.py): class-stratified shards, and data-parallel
training on two CPU processes (gloo) whose ranks end with identical weights."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from numpy.typing import NDArray

from ml.parallel import stratified_shard, train
from ml.training.interface import TrainingProgress
from tests.ml.worker.test_compute import sample_set, tiny_recipe


class GlooRuntime:
    device = "cpu"

    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world
        self.epochs = 0

    def training(self, progress: TrainingProgress) -> bool:
        return False

    def predicting(self, done: int, total: int) -> bool:
        return False

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        self.epochs += 1

    def stop_reason(self) -> str:
        return "stopped"

    def any_rank(self, flag: bool) -> bool:
        value = torch.tensor([int(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def gather(self, parts: object, name: str) -> None:
        raise AssertionError


def _rank(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    data = sample_set([0, 1, 2] * 10, ["a", "b", "c"], [1, 2, 3])
    recipe = tiny_recipe()
    labels = data.labels
    result = train(
        recipe,  # type: ignore[arg-type]
        data.images,
        np.arange(labels.shape[0], dtype=np.int64),
        labels,
        num_classes=3,
        class_names=["a", "b", "c"],
        runtime=GlooRuntime(rank, world),
        checkpoint_dir=Path(out) / "model",
    )
    digest = hashlib.sha256()
    for name, tensor in sorted(result.trained.model.state_dict().items()):
        if "running" not in name and "num_batches" not in name:  # BN statistics stay per rank
            digest.update(tensor.detach().numpy().tobytes())
    (Path(out) / f"rank-{rank}.txt").write_text(f"{digest.hexdigest()} {len(result.history)}")
    dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_keep_identical_weights(tmp_path: Path) -> None:
    from bench.harness.processes import free_port

    mp.spawn(_rank, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0 = (tmp_path / "rank-0.txt").read_text().split()
    rank1 = (tmp_path / "rank-1.txt").read_text().split()
    assert rank0 == rank1
    assert rank0[1] == "2"
    assert (tmp_path / "model").is_dir()


def test_shards_hold_the_same_classes_in_the_same_numbers() -> None:
    labels: NDArray[np.int64] = np.array([0] * 7 + [1] * 3 + [2] * 1, dtype=np.int64)
    rows = np.arange(labels.shape[0], dtype=np.int64)
    shards = [stratified_shard(rows, labels, rank, 3) for rank in range(3)]
    counts = [np.bincount(labels[shard], minlength=3).tolist() for shard in shards]
    assert counts == [[3, 1, 1]] * 3
    assert set(np.concatenate(shards).tolist()) == set(rows.tolist())
