"""Shared settings of the ML tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    """The ML tests use tiny tensors, where a second intra-op thread gains nothing; on a busy
    machine, threads spinning while they wait for each other slow the suite down many times."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
