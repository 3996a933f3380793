"""Exact binomial bounds against values computed by hand."""

from __future__ import annotations

import pytest

from app.pipeline.estimates import clopper_pearson, estimate


@pytest.mark.parametrize("n", [1, 10, 300, 5000])
def test_no_success_gives_the_closed_form_upper_bound(n: int) -> None:
    # P(0 successes) = (1 - p)^n = 0.05  ⇔  p = 1 - 0.05^(1/n)
    assert clopper_pearson(0, n) == pytest.approx((0.0, 1 - 0.05 ** (1 / n)), rel=1e-9)


@pytest.mark.parametrize("n", [1, 10, 300])
def test_all_successes_give_the_closed_form_lower_bound(n: int) -> None:
    # P(n successes) = p^n = 0.05  ⇔  p = 0.05^(1/n)
    assert clopper_pearson(n, n) == pytest.approx((0.05 ** (1 / n), 1.0), rel=1e-9)


def test_zero_junk_in_300_audited_is_just_under_one_percent() -> None:
    assert clopper_pearson(0, 300)[1] == pytest.approx(0.009936, abs=1e-6)


def test_the_two_sided_interval_matches_the_published_table() -> None:
    # 5 of 100 at 95% two-sided (2.5% each side): 0.01643 – 0.11283.
    low, high = clopper_pearson(5, 100, confidence=0.975)
    assert (round(low, 5), round(high, 5)) == (0.01643, 0.11283)


def test_the_bounds_hold_the_rate_between_them() -> None:
    low, high = clopper_pearson(37, 120)
    assert low < 37 / 120 < high


def test_without_trials_nothing_is_known() -> None:
    result = estimate(0, 0, population=100)
    assert (result.rate, result.low, result.high) == (None, 0.0, 1.0)
    assert (result.count_low, result.count_high) == (0.0, 100.0)


def test_an_estimate_scales_its_rate_and_bounds_to_the_population() -> None:
    result = estimate(3, 60, population=1000)
    low, high = clopper_pearson(3, 60)
    assert result.rate == pytest.approx(0.05)
    assert (result.count, result.count_low, result.count_high) == pytest.approx(
        (50.0, low * 1000, high * 1000)
    )


def test_impossible_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="successes <= trials"):
        clopper_pearson(5, 4)
