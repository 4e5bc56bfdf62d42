"""Paired latency ratios: the median's distribution-free interval and when timing may stop."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from lrf_core.errors import LRFError
from lrf_core.paired_ratio import RATIO_RESOLUTION, RatioEstimate, median_interval_index


def _coverage(n: int, l: int) -> float:
    """1 - 2 P(Bin(n, 1/2) <= l - 1), exactly."""
    return 1.0 - float(Fraction(2 * sum(math.comb(n, k) for k in range(l)), 2**n))


@pytest.mark.parametrize("n", [6, 7, 10, 25, 50, 51, 200, 400, 1200])
def test_the_interval_index_is_the_largest_that_keeps_95_percent(n):
    l = median_interval_index(n)
    assert _coverage(n, l) >= 0.95 > _coverage(n, l + 1)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_too_few_rounds_give_the_whole_range(n):
    assert median_interval_index(n) == 1
    est = RatioEstimate.from_ratios(np.arange(1, n + 1, dtype=float))
    assert (est.low, est.high, est.rounds) == (1.0, float(n), n)


def test_the_interval_covers_the_true_median_about_as_often_as_it_says():
    rng = np.random.default_rng(0)
    covered = [(e.low <= 1.02 <= e.high) for e in
               (RatioEstimate.from_ratios(1.02 * rng.lognormal(0.0, 0.05, 200)) for _ in range(2000))]
    assert 0.94 <= np.mean(covered) <= 0.985  # nominal 0.95, exact order statistic 0.96


def test_from_ratios_orders_the_values_and_reports_the_median():
    est = RatioEstimate.from_ratios([1.3, 0.7, 1.0, 1.1, 0.9, 1.2, 0.8])
    assert est.median == 1.0 and est.low == 0.7 and est.high == 1.3 and est.rounds == 7
    assert est.as_dict() == {"median": 1.0, "low": 0.7, "high": 1.3, "rounds": 7, "confidence": 0.95}


@pytest.mark.parametrize(
    "low, high, limit, settled",
    [
        (1.01, 1.05, 1.0, True),  # above the limit: slower whatever more rounds say
        (0.95, 1.00, 1.0, True),  # at or below it
        (0.95, 1.05, 1.0, False),  # straddles it, wider than the resolution: time more
        (0.995, 1.005, 1.0, True),  # straddles it within ± RATIO_RESOLUTION: more rounds buy nothing
        (0.95, 1.05, None, False),  # no decision to make: settled only by width
    ],
)
def test_settled_means_more_rounds_cannot_change_the_decision(low, high, limit, settled):
    assert RatioEstimate((low + high) / 2, low, high, 100).settled(limit) is settled
    assert RATIO_RESOLUTION == 0.01


def test_an_exact_ratio_has_no_width():
    est = RatioEstimate.exact(0.93)
    assert (est.median, est.low, est.high, est.rounds) == (0.93, 0.93, 0.93, 0) and est.settled(0.93)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(median=1.0, low=1.1, high=1.2, rounds=3), "low <= median <= high"),
        (dict(median=0.0, low=0.0, high=0.0, rounds=3), "finite positive"),
        (dict(median=1.0, low=1.0, high=math.inf, rounds=3), "finite positive"),
        (dict(median=1.0, low=1.0, high=1.0, rounds=-1), "rounds must be >= 0"),
    ],
)
def test_invalid_estimates_name_the_problem(kwargs, message):
    with pytest.raises(LRFError, match=message):
        RatioEstimate(**kwargs)


def test_empty_or_bad_inputs_are_refused():
    with pytest.raises(LRFError, match="at least one ratio"):
        RatioEstimate.from_ratios([])
    with pytest.raises(LRFError, match="0 < confidence < 1"):
        median_interval_index(10, 1.0)
