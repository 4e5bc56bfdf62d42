"""The whole-model latency guard (METHODS.md §3 item 7, applied to the rebuilt model).

The block guard (:func:`lrf_core.search.candidates.drop_slower_than_dense`) keeps only
blocks measured faster than their dense layer. That is necessary, not sufficient: every
factor chain adds layer calls, and on a small model at batch 1 the per-call cost of the
runtime can outweigh what the blocks save. Measured on the demo's digits CNN: every replaced
block faster on its own (conv2 Tucker-2 0.525 → 0.490 ms, fc1 SVD 0.425 → 0.270 ms), the
whole child 0.867 ms against the parent's 0.781 ms.

So once the allocation is chosen, the child is timed against the parent, interleaved in one
process (``ratio_of``). While it is slower than ``limit`` × the parent, the factorized layer
with the smallest measured block saving (``latency_before − latency_after``; MACs saved
break ties) goes back to dense, and the child is timed again. Going back to dense never
raises params or MACs above the parent's, but it can break a cost target; the guard stops
before that and says so (the gate then refuses the slower child).

The guard's limit is 1.0 and the gate's is ``1 + latency_tolerance``: the margin between the
two absorbs the noise of the gate's own re-measurement, so a child the guard accepted is
not refused by the gate on timing noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Optional

from lrf_core.search.allocate import Allocation, CostTargets, LayerBaseline, ModelTotals, allocation_totals, meets

__all__ = ["GuardStep", "GuardResult", "guard_model_latency"]


@dataclass(frozen=True)
class GuardStep:
    """One timing of the child: how many layers were factorized, its latency ÷ the parent's,
    and the layer sent back to dense after it (None: the guard stopped here)."""

    factorized: int
    ratio: float
    reverted: Optional[str] = None
    block_saving_s: Optional[float] = None


@dataclass(frozen=True)
class GuardResult:
    allocation: Allocation
    steps: tuple[GuardStep, ...]
    met: bool
    stopped_by: Optional[str] = None  # why a still-slower child was kept (a cost target)

    @property
    def reverted(self) -> tuple[str, ...]:
        return tuple(s.reverted for s in self.steps if s.reverted)

    def as_dict(self) -> dict:
        return {"limit_met": self.met, "ratio": self.steps[-1].ratio if self.steps else None,
                "reverted": list(self.reverted), "stopped_by": self.stopped_by,
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
    """Send factorized layers back to dense until ``ratio_of(allocation) <= limit``.

    Parameters
    ----------
    alloc : the search's choice
    ratio_of : measured latency of the child built from an allocation ÷ the parent's
        (interleaved timing; the caller rebuilds and times)
    baselines, totals : the dense layers' costs and block latencies, the parent's totals
    targets : the cost targets that must still hold after a layer goes back to dense

    Returns
    -------
    GuardResult: the allocation kept, every timing, whether the limit was met.
    """
    steps: list[GuardStep] = []
    current = alloc
    cost_targets = CostTargets(params=targets.params, macs=targets.macs)  # latency is what is being measured
    while current.factorized:
        ratio = float(ratio_of(current))
        if ratio <= limit:
            steps.append(GuardStep(len(current.factorized), ratio))
            return GuardResult(current, tuple(steps), True)
        name = min(current.factorized, key=lambda n: _block_saving(n, current, baselines))
        reverted = Allocation({**current.choice, name: None}, current.lam)
        cost, _ = allocation_totals(reverted, baselines, totals)
        if not all(meets(cost_targets, cost, None, totals).values()):
            steps.append(GuardStep(len(current.factorized), ratio))
            return GuardResult(current, tuple(steps), False,
                               f"sending {name} back to dense would miss the cost target")
        steps.append(GuardStep(len(current.factorized), ratio, name, _block_saving(name, current, baselines)[0]))
        current = reverted
    # nothing left factorized: the child is the parent
    return GuardResult(current, tuple(steps), True)
