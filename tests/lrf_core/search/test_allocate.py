"""Allocation: Lagrangian bisection plus slack filling, on synthetic candidates (no Keras)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lrf_core.decompose.base import Cost
from lrf_core.search.allocate import (
    CostTargets, LayerBaseline, ModelTotals, allocation_totals, lambda_for_cost_targets, layerwise_allocator,
)
from lrf_core.search.candidates import Candidate


class _Fit:
    """The part of FittedLayer the allocation reads."""

    def __init__(self, layer, params, error):
        self.layer, self.method, self.rank = layer, "svd", (params,)
        self.cost_after = Cost(params, params)
        self.sigma_error, self.frobenius_error = error, error


def _front(layer, points):
    return [Candidate(_Fit(layer, p, e), similarity=1.0 - e) for p, e in points]


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    fronts, baselines = {}, {}
    for i in range(5):
        dense = 1000
        params = sorted(rng.choice(np.arange(20, 900), size=6, replace=False))
        errors = sorted(rng.uniform(0.001, 0.3, size=6), reverse=True)  # more params, less error
        fronts[f"l{i}"] = _front(f"l{i}", list(zip(params, errors)))
        baselines[f"l{i}"] = LayerBaseline(Cost(dense, dense))
    return fronts, baselines, ModelTotals(5000 + 500, 5000)  # 500 params outside the eligible layers


def _solve(fronts, baselines, totals, targets):
    return lambda_for_cost_targets(layerwise_allocator(fronts, baselines, totals, targets), baselines, totals, targets)


def _total_error(alloc):
    return sum(c.error for c in alloc.choice.values() if c is not None)


@pytest.mark.parametrize("target", [0.2, 0.3, 0.35, 0.5, 0.8])
def test_allocation_meets_target_and_is_near_optimal(problem, target):
    fronts, baselines, totals = problem
    alloc, ok = _solve(fronts, baselines, totals, CostTargets(params=target))
    cost, _ = allocation_totals(alloc, baselines, totals)
    # brute force over every choice (7^5)
    options = {k: [None] + list(v) for k, v in fronts.items()}
    best = float("inf")
    for combo in itertools.product(*options.values()):
        params = totals.params + sum((c.cost.params - 1000) for c in combo if c is not None)
        if params <= target * totals.params:
            best = min(best, sum(c.error for c in combo if c is not None))
    assert ok == (best < float("inf"))  # feasible exactly when some choice fits
    if ok:
        assert cost.params <= target * totals.params
        # the greedy-filled Lagrangian is within 10 % of the optimal total error
        assert _total_error(alloc) <= best * 1.1 + 1e-9


def test_impossible_target_returns_the_cheapest_allocation(problem):
    fronts, baselines, totals = problem
    alloc, ok = _solve(fronts, baselines, totals, CostTargets(params=0.01))
    assert not ok
    assert all(c is not None and c.cost.params == min(o.cost.params for o in fronts[k]) for k, c in alloc.choice.items())
