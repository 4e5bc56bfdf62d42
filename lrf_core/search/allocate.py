"""Global allocation: one candidate (or dense) per layer, a multiple-choice knapsack.

METHODS.md §3.5, Lagrangian form: for a knob ``λ ≥ 0`` every layer independently takes

    argmin over {dense} ∪ front(layer) of   error(c) + λ · cost(c)

with ``error`` = 1 − feature-map similarity (0 for dense) and ``cost`` the candidate's
share of the model's totals, summed over the active cost dimensions (params, MACs,
measured latency). Larger λ never increases any layer's cost, so the model cost is
monotone in λ and one bisection on ``log λ`` finds the least-error allocation that meets
every cost target. The network-output knob (``--max-drop``) is tuned by the caller with
:func:`bisect_lambda` against a measured drop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

from lrf_core.decompose.base import Cost
from lrf_core.search.candidates import Candidate

__all__ = ["CostTargets", "Allocation", "allocate", "allocation_totals", "lambda_for_cost_targets", "bisect_lambda"]

LAMBDA_RANGE = (1e-6, 1e9)
#: An upgrade must lower the error by more than this: two exact candidates differ by round-off,
#: and budget spent on round-off is wasted.
MIN_GAIN = 1e-9


@dataclass(frozen=True)
class CostTargets:
    """Fractions of the parent to keep (None = no target on that dimension)."""

    params: Optional[float] = None
    macs: Optional[float] = None
    latency: Optional[float] = None

    @property
    def active(self) -> tuple[str, ...]:
        return tuple(k for k in ("params", "macs", "latency") if getattr(self, k) is not None)


@dataclass(frozen=True)
class LayerBaseline:
    """The dense layer's cost (and measured block latency, when latency is a target)."""

    cost: Cost
    latency_s: Optional[float] = None


@dataclass(frozen=True)
class ModelTotals:
    """The parent's totals that the fractions refer to."""

    params: int
    macs: int
    latency_s: Optional[float] = None


@dataclass(frozen=True)
class Allocation:
    """A choice per layer (None = stays dense) with the knob that produced it."""

    choice: Mapping[str, Optional[Candidate]]
    lam: float

    @property
    def factorized(self) -> dict[str, Candidate]:
        return {k: v for k, v in self.choice.items() if v is not None}

    def key(self) -> tuple:
        return tuple(sorted((k, (v.method, v.rank) if v else None) for k, v in self.choice.items()))


def _dims(targets: CostTargets) -> tuple[str, ...]:
    # With no cost target (accuracy budget only) compress params and MACs equally.
    return targets.active or ("params", "macs")


def _share(c_params: int, c_macs: int, c_lat: Optional[float], totals: ModelTotals, dims) -> float:
    share = 0.0
    if "params" in dims:
        share += c_params / totals.params
    if "macs" in dims and totals.macs:
        share += c_macs / totals.macs
    if "latency" in dims and totals.latency_s and c_lat is not None:
        share += c_lat / totals.latency_s
    return share


def allocate(
    fronts: Mapping[str, Sequence[Candidate]],
    baselines: Mapping[str, LayerBaseline],
    totals: ModelTotals,
    targets: CostTargets,
    lam: float,
) -> Allocation:
    """Per-layer argmin of ``error + λ·cost`` (dense has error 0); ties go to the cheaper."""
    dims = _dims(targets)
    choice: dict[str, Optional[Candidate]] = {}
    for layer, front in fronts.items():
        base = baselines[layer]
        best: Optional[Candidate] = None
        best_value = lam * _share(base.cost.params, base.cost.macs, base.latency_s, totals, dims)
        for c in front:
            value = c.error + lam * _share(c.cost.params, c.cost.macs, c.latency_s, totals, dims)
            if value < best_value - 1e-15:
                best, best_value = c, value
        choice[layer] = best
    return Allocation(choice, lam)


def allocation_totals(
    allocation: Allocation, baselines: Mapping[str, LayerBaseline], totals: ModelTotals
) -> tuple[Cost, Optional[float]]:
    """Model params/MACs after the allocation, and the estimated latency (sum of block deltas)."""
    params, macs, latency = totals.params, totals.macs, totals.latency_s
    for layer, c in allocation.choice.items():
        if c is None:
            continue
        base = baselines[layer]
        params += c.cost.params - base.cost.params
        macs += c.cost.macs - base.cost.macs
        if latency is not None and c.latency_s is not None and base.latency_s is not None:
            latency += c.latency_s - base.latency_s
    return Cost(params, macs), latency


def meets(targets: CostTargets, cost: Cost, latency: Optional[float], totals: ModelTotals) -> dict[str, bool]:
    """Which cost targets an allocation meets (by the cost model / latency estimate)."""
    met = {}
    if targets.params is not None:
        met["params"] = cost.params <= targets.params * totals.params
    if targets.macs is not None:
        met["macs"] = cost.macs <= targets.macs * totals.macs
    if targets.latency is not None:
        met["latency"] = latency is not None and totals.latency_s is not None and latency <= targets.latency * totals.latency_s
    return met


def bisect_lambda(ok: Callable[[float], bool], *, iterations: int = 40, lo: float = LAMBDA_RANGE[0], hi: float = LAMBDA_RANGE[1]) -> Optional[float]:
    """Smallest λ (on a log scale) with ``ok(λ)``, assuming ``ok`` is monotone (False … True).

    Returns None when even ``hi`` is not ok.
    """
    if not ok(hi):
        return None
    if ok(lo):
        return lo
    log_lo, log_hi = math.log(lo), math.log(hi)
    for _ in range(iterations):
        mid = 0.5 * (log_lo + log_hi)
        if ok(math.exp(mid)):
            log_hi = mid
        else:
            log_lo = mid
    return math.exp(log_hi)


#: Proposes an allocation for a knob λ, with the fronts it chose from (per layer).
Allocator = Callable[[float], tuple[Allocation, Mapping[str, Sequence[Candidate]]]]


def layerwise_allocator(
    fronts: Mapping[str, Sequence[Candidate]],
    baselines: Mapping[str, LayerBaseline],
    totals: ModelTotals,
    targets: CostTargets,
) -> Allocator:
    """The allocator of independently scored layers: :func:`allocate` on fixed fronts."""
    return lambda lam: (allocate(fronts, baselines, totals, targets, lam), fronts)


def lambda_for_cost_targets(
    allocate_at: Allocator,
    baselines: Mapping[str, LayerBaseline],
    totals: ModelTotals,
    targets: CostTargets,
    *,
    iterations: int = 40,
) -> tuple[Allocation, bool]:
    """The least-error allocation meeting every cost target, or the cheapest one and False.

    ``allocate_at`` is any allocator whose cost does not grow with λ: the layerwise one
    (exactly monotone) or the sequential pass, whose fronts depend on the upstream choices
    (monotone in practice; a bisection step that breaks it costs optimality, not validity,
    because the returned allocation is checked against the targets).
    """
    def ok(lam: float) -> bool:
        alloc, _ = allocate_at(lam)
        return all(meets(targets, *allocation_totals(alloc, baselines, totals), totals).values())

    if not targets.active:
        return allocate_at(0.0)[0], True
    lam = bisect_lambda(ok, iterations=iterations)
    if lam is None:
        return allocate_at(LAMBDA_RANGE[1])[0], False
    alloc, fronts = allocate_at(lam)
    return fill_slack(alloc, fronts, baselines, totals, targets), True


def fill_slack(
    allocation: Allocation,
    fronts: Mapping[str, Sequence[Candidate]],
    baselines: Mapping[str, LayerBaseline],
    totals: ModelTotals,
    targets: CostTargets,
) -> Allocation:
    """Spend the budget the Lagrangian leaves unused: greedy upgrades, best Δerror/Δcost first.

    The Lagrangian only reaches allocations on the convex hull, so the bisected one often
    undershoots the target (e.g. 25 % of the parameters kept for a 30 % target). Each step
    takes, over all layers, the upgrade to a lower-error option (a better candidate or the
    dense layer) with the largest error reduction per unit of extra cost that still meets
    every target; it stops when no upgrade fits. The total error never increases.
    """
    dims = _dims(targets)
    choice = dict(allocation.choice)

    def option_error(c: Optional[Candidate]) -> float:
        return 0.0 if c is None else c.error

    def option_share(layer: str, c: Optional[Candidate]) -> float:
        if c is None:
            base = baselines[layer]
            return _share(base.cost.params, base.cost.macs, base.latency_s, totals, dims)
        return _share(c.cost.params, c.cost.macs, c.latency_s, totals, dims)

    while True:
        best = None
        for layer, front in fronts.items():
            current = choice[layer]
            for option in list(front) + [None]:
                gain = option_error(current) - option_error(option)
                if gain <= MIN_GAIN or option is current:
                    continue
                extra = option_share(layer, option) - option_share(layer, current)
                trial = Allocation({**choice, layer: option}, allocation.lam)
                if not all(meets(targets, *allocation_totals(trial, baselines, totals), totals).values()):
                    continue
                ratio = gain / extra if extra > 0 else float("inf")
                if best is None or ratio > best[0]:
                    best = (ratio, layer, option)
        if best is None:
            return Allocation(choice, allocation.lam)
        choice[best[1]] = best[2]


__all__ += ["LayerBaseline", "ModelTotals", "meets", "fill_slack", "Allocator", "layerwise_allocator"]
