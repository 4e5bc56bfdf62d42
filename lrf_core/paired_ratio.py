"""A latency ratio measured in paired rounds, with a confidence interval (METHODS.md §3.7).

Why paired: "is the child slower than the parent?" is a question about a ratio near 1 on a
host whose load changes all the time. Two medians taken over the same interleaved calls
and divided afterwards carry both medians' noise: on the demo's digits CNN at batch 1
(0.76 ms) 30 such ratios of 50-call medians had a standard deviation of 5.0 % (0.91 to
1.11 for one pair of models), as wide as the gate's whole tolerance. The ratio within one
round (the two calls a few hundred microseconds apart, under the same load) and its median
over 200 rounds had 0.75 % (0.98 to 1.01).

Why an interval: a child that saves parameters but runs at the parent's speed sits exactly
where a point estimate flips between "slower" and "not slower" from run to run. The
interval says when the data cannot tell, so callers decide on what was measured
(:meth:`RatioEstimate.settled`), and timing continues until it can tell or stops mattering.

The interval of the median is distribution-free: with ``n`` ratios sorted, ``[x_(l),
x_(n-l+1)]`` covers the median with probability ``1 - 2 P(B <= l - 1)``, ``B ~ Bin(n, 1/2)``;
``l`` is the largest index keeping that at least ``confidence``. Rounds are treated as
independent; slow drifts (thermal, frequency scaling) cancel within a round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from lrf_core.errors import LRFError

__all__ = ["RATIO_CONFIDENCE", "RATIO_RESOLUTION", "RatioEstimate", "median_interval_index"]

#: Confidence of every measured ratio's interval.
RATIO_CONFIDENCE = 0.95
#: Rounds stop once an interval is within ± this of its median: 1 % is below what a
#: shared host reproduces from one run to the next, so timing longer buys nothing.
RATIO_RESOLUTION = 0.01


def median_interval_index(n: int, confidence: float = RATIO_CONFIDENCE) -> int:
    """The 1-based order statistic ``l`` whose ``[x_(l), x_(n-l+1)]`` covers the median.

    ``l`` is the largest with ``2 P(Bin(n, 1/2) <= l - 1) <= 1 - confidence``; 1 (the whole
    range, less than ``confidence``) when ``n`` is too small for any (``n <= 5`` at 95 %).
    """
    if n < 1 or not 0 < confidence < 1:
        raise LRFError(f"median_interval_index needs n >= 1 and 0 < confidence < 1. Received n={n}, "
                       f"confidence={confidence}.")
    alpha_half = (1.0 - confidence) / 2.0
    cdf, l = 0.0, 1
    for k in range(n):  # cdf = P(B <= k) once term k is added
        cdf += math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2.0))
        if cdf > alpha_half:
            break
        l = k + 1  # P(B <= l - 1) = P(B <= k) <= alpha/2
    return min(l, (n + 1) // 2)


@dataclass(frozen=True)
class RatioEstimate:
    """A model's latency ÷ a reference's.

    Attributes
    ----------
    median : median over rounds of ``t_model / t_reference`` within the round
    low, high : the median's distribution-free ``confidence`` interval
    rounds : rounds timed; 0 for a value a caller gave without an interval (``exact``)
    confidence : the interval's nominal coverage
    """

    median: float
    low: float
    high: float
    rounds: int
    confidence: float = RATIO_CONFIDENCE

    def __post_init__(self) -> None:
        values = (self.low, self.median, self.high)
        if not all(math.isfinite(v) and v > 0 for v in values) or not self.low <= self.median <= self.high:
            raise LRFError("RatioEstimate expects finite positive ratios with low <= median <= high. Received "
                           f"low={self.low}, median={self.median}, high={self.high}.")
        if self.rounds < 0:
            raise LRFError(f"RatioEstimate.rounds must be >= 0. Received {self.rounds}.")

    @staticmethod
    def exact(value: float) -> "RatioEstimate":
        """A ratio known without noise (a caller's own timing function, a test)."""
        return RatioEstimate(float(value), float(value), float(value), 0)

    @staticmethod
    def from_ratios(ratios: Sequence[float], confidence: float = RATIO_CONFIDENCE) -> "RatioEstimate":
        """Median and interval (module docstring) of per-round ratios, shape ``(rounds,)``."""
        x = np.sort(np.asarray(ratios, dtype=np.float64))
        if x.ndim != 1 or x.size == 0:
            raise LRFError(f"RatioEstimate.from_ratios needs at least one ratio. Received shape {x.shape}.")
        l = median_interval_index(x.size, confidence)
        median = float(np.median(x))
        return RatioEstimate(median, min(float(x[l - 1]), median), max(float(x[x.size - l]), median), int(x.size),
                             confidence)

    def settled(self, limit: Optional[float] = None) -> bool:
        """Whether more rounds would not change a decision: the interval lies on one side of
        ``limit``, or is within ± :data:`RATIO_RESOLUTION` of the median."""
        if limit is not None and (self.low > limit or self.high <= limit):
            return True
        return self.high - self.low <= 2 * RATIO_RESOLUTION

    def as_dict(self) -> dict:
        return {"median": self.median, "low": self.low, "high": self.high, "rounds": self.rounds,
                "confidence": self.confidence}
