"""Estimates from random samples, with exact (Clopper–Pearson) binomial bounds.

Pure functions, no database. Every bound here is *one-sided* at its ``confidence``: the upper
bound alone holds with 95% confidence (so "under 1% junk" is claimed when the upper bound is
under 1%), and so does the lower bound alone; together they form a 90% interval at the default.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["CONFIDENCE", "Estimate", "clopper_pearson", "estimate"]

CONFIDENCE = 0.95


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), for a, b > 0 and x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def _beta_quantile(q: float, a: float, b: float) -> float:
    """The ``q`` quantile of Beta(a, b), by bisection (the CDF is increasing)."""
    low, high = 0.0, 1.0
    for _ in range(200):
        middle = (low + high) / 2
        if _incomplete_beta(a, b, middle) < q:
            low = middle
        else:
            high = middle
        if high - low < 1e-13:
            break
    return (low + high) / 2


def clopper_pearson(
    successes: int, trials: int, *, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """One-sided exact bounds (lower, upper) on a binomial proportion after ``successes`` in
    ``trials``, each holding with ``confidence``: lower = Beta(1 - c; x, n - x + 1), upper =
    Beta(c; x + 1, n - x). E.g. 0 of 300 → upper 1 - 0.05^(1/300) ≈ 0.00994. No trials: (0, 1)."""
    if trials < 0 or not 0 <= successes <= max(trials, 0):
        raise ValueError(f"need 0 <= successes <= trials, got {successes}/{trials}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if trials == 0:
        return 0.0, 1.0
    n, x = trials, successes
    low = 0.0 if x == 0 else _beta_quantile(1.0 - confidence, x, n - x + 1)
    high = 1.0 if x == n else _beta_quantile(confidence, x + 1, n - x)
    return low, high


@dataclass(frozen=True)
class Estimate:
    """A proportion measured on a random sample, and what it says about the population it was
    drawn from.

    Attributes:
        successes, trials: what the sample found (e.g. junk found, samples audited).
        rate, low, high: the proportion and its one-sided bounds (None/0/1 without trials).
        population: how many items the sample was drawn from (None when not scaled).
        count, count_low, count_high: ``rate``/``low``/``high`` × ``population``.
        confidence: of each bound.
    """

    successes: int
    trials: int
    rate: float | None
    low: float
    high: float
    population: int | None
    count: float | None
    count_low: float | None
    count_high: float | None
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Estimate:
        return cls(**data)


def estimate(
    successes: int,
    trials: int,
    *,
    population: int | None = None,
    confidence: float = CONFIDENCE,
) -> Estimate:
    """The rate ``successes / trials`` with its Clopper–Pearson bounds, scaled to
    ``population`` when given."""
    low, high = clopper_pearson(successes, trials, confidence=confidence)
    rate = successes / trials if trials else None

    def scaled(value: float | None) -> float | None:
        return None if value is None or population is None else value * population

    return Estimate(
        successes=successes,
        trials=trials,
        rate=rate,
        low=low,
        high=high,
        population=population,
        count=scaled(rate),
        count_low=scaled(low),
        count_high=scaled(high),
        confidence=confidence,
    )
