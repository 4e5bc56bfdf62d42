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

The guard's limit is 1.0 and the gate's is ``1 + latency_tolerance``: the margin between the
two absorbs the noise of the gate's own re-measurement, so a child the guard accepted is
not refused by the gate on timing noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Optional

from lrf_core.search.allocate import Allocation, CostTargets, LayerBaseline, ModelTotals, allocation_totals, meets

__all__ = ["GuardStep", "GuardResult", "guard_model_latency", "RETIME_BAND"]

#: A child timed at most this far above the limit is timed again and the two ratios averaged:
#: whole-model medians at batch 1 move a few percent from run to run.
RETIME_BAND = 0.02


@dataclass(frozen=True)
class GuardStep:
    """One timing: how many layers were factorized, the child's latency ÷ the parent's, and the
    layers sent back to dense for it."""

    factorized: int
    ratio: float
    reverted: tuple[str, ...] = ()


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
    ratio_of: Callable[[Allocation], float],
    baselines: Mapping[str, LayerBaseline],
    totals: ModelTotals,
    targets: CostTargets,
    *,
    limit: float = 1.0,
) -> GuardResult:
    """Send the fewest factorized layers back to dense that make ``ratio_of(allocation) <= limit``.

    Parameters
    ----------
    alloc : the search's choice
    ratio_of : measured latency of the child built from an allocation ÷ the parent's
        (interleaved timing; the caller rebuilds and times)
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

    timed: dict[int, float] = {}

    def slower(k: int) -> bool:
        if k not in timed:  # an allocation is timed once (twice near the limit), never re-decided by new noise
            ratio = float(ratio_of(reverted(k)))
            if limit < ratio <= limit + RETIME_BAND:
                ratio = 0.5 * (ratio + float(ratio_of(reverted(k))))
            timed[k] = ratio
            steps.append(GuardStep(len(order) - k, ratio, tuple(order[:k])))
        return timed[k] > limit

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
