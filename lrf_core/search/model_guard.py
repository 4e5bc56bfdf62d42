"""The whole-model latency guard (METHODS.md §3 item 7, applied to the rebuilt model).

The block guard (:func:`lrf_core.search.candidates.drop_slower_than_dense`) keeps only
blocks measured faster than their dense layer. That is necessary, not sufficient: every
factor chain adds layer calls, and on a small model at batch 1 the per-call cost of the
runtime can outweigh what the blocks save. Measured on the demo's digits CNN: every replaced
block faster on its own (conv2 Tucker-2 0.525 → 0.490 ms, fc1 SVD 0.425 → 0.270 ms), the
whole child 0.867 ms against the parent's 0.781 ms.

So once the allocation is chosen, the child is timed against the parent, interleaved in one
process (``ratio_of``). If it is slower than ``limit`` × the parent, factorized layers go
back to dense in order of their measured block saving (``latency_before − latency_after``,
smallest first; MACs saved break ties): the guard bisects for the fewest of them that make
the child not slower, so a model with ``n`` factorized layers is timed about ``log₂ n + 2``
times, not ``n`` (each timing of a ResNet-50 at batch 1 takes seconds). Every allocation it
keeps was measured within the limit, or is the parent itself. Going back to dense never
raises params or MACs above the parent's, but it can break a cost target; the guard never
sends back more than the targets allow, and says so when that is not enough (the gate then
refuses the slower child).

What "slower" means: a timing is a :class:`~lrf_core.paired_ratio.RatioEstimate`, the
median of paired per-round ratios with a 95 % interval. A child is slower when its interval
lies more than ``RATIO_RESOLUTION`` (1 %) above the limit, or when its median is more than
:data:`GUARD_MARGIN` (2 %) above it whatever the interval (a noisy host must not let a
clearly slower child through). Smaller differences are not reproducible: on the demo's
digits CNN, 20 timings of one child (200-round chunks, each in a fresh ``tf.function``)
had medians 0.97-1.02 of the parent, standard deviation 0.9 %, about the width of each
timing's own interval, so a session effect the interval cannot see is as large as the
difference. A child within that of the parent's speed keeps its factorized layers: they
save parameters and MACs, and reverting them on a coin flip made the demo's outcome change
from run to run. A plain ratio (``ratio_of`` returning a float) is taken as exact.

The guard's limit is 1.0 and the gate's is ``1 + latency_tolerance``: the margin between the
two absorbs the noise of the gate's own re-measurement, so a child the guard accepted is
not refused by the gate on timing noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Optional, Union

from lrf_core.paired_ratio import RATIO_RESOLUTION, RatioEstimate
from lrf_core.search.allocate import Allocation, CostTargets, LayerBaseline, ModelTotals, allocation_totals, meets

__all__ = ["GUARD_LIMIT", "GUARD_MARGIN", "GuardStep", "GuardResult", "guard_model_latency", "is_slower"]

#: The child must not be slower than the parent (latency ratio at most 1).
GUARD_LIMIT = 1.0
#: A median this far above the limit is slower even when its interval still reaches the limit.
GUARD_MARGIN = 0.02


def is_slower(estimate: RatioEstimate, limit: float = GUARD_LIMIT) -> bool:
    """Measurably more than ``RATIO_RESOLUTION`` slower than ``limit`` (the interval above
    ``limit + RATIO_RESOLUTION``), or a median beyond ``limit + GUARD_MARGIN``."""
    return estimate.low > limit + RATIO_RESOLUTION or estimate.median > limit + GUARD_MARGIN


@dataclass(frozen=True)
class GuardStep:
    """One timing: how many layers were factorized, the child's latency ÷ the parent's (median
    of paired rounds, its interval and the rounds timed), and the layers sent back for it."""

    factorized: int
    ratio: float
    reverted: tuple[str, ...] = ()
    ratio_low: Optional[float] = None
    ratio_high: Optional[float] = None
    rounds: int = 0


@dataclass(frozen=True)
class GuardResult:
    allocation: Allocation
    reverted: tuple[str, ...]
    steps: tuple[GuardStep, ...]
    met: bool
    stopped_by: Optional[str] = None  # why a still-slower child was kept (a cost target)

    @property
    def ratio(self) -> float:
        """The kept allocation's measured ratio (1.0 when everything went back: the parent)."""
        for step in self.steps:
            if step.reverted == self.reverted:
                return step.ratio
        return 1.0

    def as_dict(self) -> dict:
        return {"limit_met": self.met, "ratio": self.ratio, "reverted": list(self.reverted), "stopped_by": self.stopped_by,
                "steps": [asdict(s) for s in self.steps]}


def _block_saving(name: str, alloc: Allocation, baselines: Mapping[str, LayerBaseline]) -> tuple[float, int]:
    chosen, base = alloc.choice[name], baselines[name]
    saving = 0.0
    if chosen.latency_s is not None and base.latency_s is not None:
        saving = base.latency_s - chosen.latency_s
    return saving, base.cost.macs - chosen.cost.macs


def guard_model_latency(
    alloc: Allocation,
    ratio_of: Callable[[Allocation], Union[float, RatioEstimate]],
    baselines: Mapping[str, LayerBaseline],
    totals: ModelTotals,
    targets: CostTargets,
    *,
    limit: float = GUARD_LIMIT,
) -> GuardResult:
    """Send the fewest factorized layers back to dense that make the child not slower than ``limit``.

    Parameters
    ----------
    alloc : the search's choice
    ratio_of : measured latency of the child built from an allocation ÷ the parent's
        (paired rounds, :func:`lrf_core.latency.compare_models`; the caller rebuilds and
        times); a float is taken as exact. Slower means :func:`is_slower`.
    baselines, totals : the dense layers' costs and block latencies, the parent's totals
    targets : the cost targets that must still hold after layers go back to dense

    Returns
    -------
    GuardResult: the allocation kept, the layers sent back, every timing, whether the limit was met.
    """
    order = sorted(alloc.factorized, key=lambda n: _block_saving(n, alloc, baselines))
    steps: list[GuardStep] = []

    def reverted(k: int) -> Allocation:
        return Allocation({**alloc.choice, **dict.fromkeys(order[:k])}, alloc.lam) if k else alloc

    timed: dict[int, bool] = {}

    def slower(k: int) -> bool:
        if k not in timed:  # an allocation is timed once, never re-decided by new noise
            measured = ratio_of(reverted(k))
            est = measured if isinstance(measured, RatioEstimate) else RatioEstimate.exact(measured)
            timed[k] = is_slower(est, limit)
            steps.append(GuardStep(len(order) - k, est.median, tuple(order[:k]), est.low, est.high, est.rounds))
        return timed[k]

    def result(k: int, met: bool, why: Optional[str] = None) -> GuardResult:
        return GuardResult(reverted(k), tuple(order[:k]), tuple(steps), met, why)

    if not order or not slower(0):
        return result(0, True)
    # reverting only raises params and MACs: the allowed prefix ends where a cost target first breaks
    cost_targets = CostTargets(params=targets.params, macs=targets.macs)  # latency is what is measured here
    allowed = len(order)
    for k in range(1, len(order) + 1):
        cost, _ = allocation_totals(reverted(k), baselines, totals)
        if not all(meets(cost_targets, cost, None, totals).values()):
            allowed = k - 1
            break
    if allowed < len(order) and slower(allowed):
        return result(allowed, False, f"sending {order[allowed]} back to dense as well would miss the cost target")
    lo, hi = 0, allowed  # slower with lo layers back; not slower with hi (measured, or the parent itself)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if slower(mid) else (lo, mid)
    return result(hi, True)
