"""Explicit randomness for augmentations: every draw takes a :class:`torch.Generator`, so a
sample's augmentation depends only on its generator's seed (not on global RNG state, DataLoader
workers or call order elsewhere)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["bernoulli", "beta", "randint", "sample_generator", "uniform"]


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    u = float(torch.rand((), generator=generator, device=generator.device).item())
    return low + (high - low) * u


def bernoulli(generator: torch.Generator, p: float) -> bool:
    if p <= 0.0:
        return False
    if p >= 1.0:
        return True
    return uniform(generator, 0.0, 1.0) < p


def randint(generator: torch.Generator, low: int, high: int) -> int:
    """An integer uniform in ``[low, high]`` (both ends included)."""
    if high <= low:
        return low
    return int(torch.randint(low, high + 1, (), generator=generator, device=generator.device))


def beta(generator: torch.Generator, alpha: float) -> float:
    """A draw from Beta(alpha, alpha), driven by ``generator`` (torch's Beta takes no generator)."""
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def sample_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and any number of integer keys.

    Use it to give every sample its own stream independent of DataLoader workers and order, e.g.
    ``sample_generator(seed, epoch, index)``. Distinct key tuples give unrelated streams.
    """
    entropy = np.random.SeedSequence([seed & (2**63 - 1), *(k & (2**63 - 1) for k in keys)])
    state = int(entropy.generate_state(1, dtype=np.uint64)[0]) & (2**63 - 1)
    return torch.Generator().manual_seed(state)
