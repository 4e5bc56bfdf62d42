"""The whole-model latency guard: a child slower than its parent gives layers back, least useful first."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lrf_core.graph import Cost
from lrf_core.search.allocate import Allocation, CostTargets, LayerBaseline, ModelTotals
from lrf_core.paired_ratio import RatioEstimate
from lrf_core.search.model_guard import GUARD_MARGIN, guard_model_latency, is_slower

#: layer → (dense block latency, chosen block latency, params saved); the parent has 1000 params
LAYERS = {"a": (1.0, 0.9, 100), "b": (1.0, 0.5, 300), "c": (2.0, 1.0, 200)}
TOTALS = ModelTotals(params=1000, macs=1000, latency_s=10.0)


def _setup():
    baselines = {n: LayerBaseline(Cost(400, 400), dense) for n, (dense, _, _) in LAYERS.items()}
    choice = {n: SimpleNamespace(latency_s=chosen, cost=Cost(400 - saved, 400 - saved), method="svd", rank=(1,))
              for n, (_, chosen, saved) in LAYERS.items()}
    return Allocation(choice, 0.5), baselines


def _overhead_model(overhead: float):
    """Child latency: parent 10 s, each factorized layer adds ``overhead`` and saves its block saving."""
    timed = []

    def ratio_of(alloc):
        timed.append(tuple(sorted(alloc.factorized)))
        child = TOTALS.latency_s + sum(overhead - (LAYERS[n][0] - LAYERS[n][1]) for n in alloc.factorized)
        return child / TOTALS.latency_s

    return ratio_of, timed


def test_a_child_not_slower_than_its_parent_is_kept_as_is():
    alloc, baselines = _setup()
    ratio_of, timed = _overhead_model(0.05)  # savings 0.1, 0.5, 1.0 all beat the overhead
    result = guard_model_latency(alloc, ratio_of, baselines, TOTALS, CostTargets())
    assert result.allocation is alloc and result.met and result.reverted == ()
    assert timed == [("a", "b", "c")] and result.steps[0].ratio == pytest.approx(1 - 1.45 / 10)


def test_layers_go_back_to_dense_smallest_block_saving_first_until_the_child_is_not_slower():
    alloc, baselines = _setup()
    ratio_of, timed = _overhead_model(0.9)  # a: +0.8, b: +0.4, c: −0.1 → all three +1.1 s
    result = guard_model_latency(alloc, ratio_of, baselines, TOTALS, CostTargets())
    assert result.reverted == ("a", "b")  # a saves 0.1 s, b 0.5 s, c 1.0 s
    assert sorted(result.allocation.factorized) == ["c"] and result.met
    assert timed == [("a", "b", "c"), ("b", "c"), ("c",)]
    assert [s.ratio for s in result.steps] == pytest.approx([1.11, 1.03, 0.99])
    assert [s.reverted for s in result.steps] == [(), ("a",), ("a", "b")]
    assert result.as_dict()["ratio"] == pytest.approx(0.99)


def test_a_child_slower_whatever_is_factorized_ends_as_the_parent():
    alloc, baselines = _setup()
    ratio_of, timed = _overhead_model(5.0)
    result = guard_model_latency(alloc, ratio_of, baselines, TOTALS, CostTargets())
    assert result.allocation.factorized == {} and result.met and result.reverted == ("a", "b", "c")
    assert len(timed) == 3 and () not in timed  # the parent itself is not timed against itself
    assert result.ratio == 1.0


def test_the_guard_stops_before_breaking_a_cost_target_and_says_so():
    alloc, baselines = _setup()
    ratio_of, _ = _overhead_model(0.9)
    # params kept: all three 400 of 1000; without a 500, without a and b 800: a target of 0.6 allows one revert
    result = guard_model_latency(alloc, ratio_of, baselines, TOTALS, CostTargets(params=0.6))
    assert result.reverted == ("a",) and not result.met
    assert "sending b back" in result.stopped_by and "cost target" in result.stopped_by
    assert sorted(result.allocation.factorized) == ["b", "c"] and result.steps[-1].ratio == pytest.approx(1.03)


def test_many_layers_need_few_timings():
    """Bisection over how many layers go back: about log2(n) + 2 timings, and the fewest that suffice."""
    names = [f"l{i:02d}" for i in range(32)]
    baselines = {n: LayerBaseline(Cost(100, 100), 1.0) for n in names}
    # layer i saves 0.01·i s of block time; each factorized layer costs 0.25 s of calls
    choice = {n: SimpleNamespace(latency_s=1.0 - 0.01 * i, cost=Cost(50, 50), method="svd", rank=(1,))
              for i, n in enumerate(names)}
    alloc = Allocation(choice, 0.5)
    timed = []

    def child_ratio(factorized):
        return (100.0 + sum(0.25 - 0.01 * int(n[1:]) for n in factorized)) / 100.0

    def ratio_of(a):
        timed.append(len(a.factorized))
        return child_ratio(a.factorized)

    result = guard_model_latency(alloc, ratio_of, baselines, ModelTotals(3200, 3200, 100.0), CostTargets())
    fewest = next(k for k in range(33) if not is_slower(RatioEstimate.exact(child_ratio(names[k:]))))  # brute force
    assert 0 < fewest < 32 and child_ratio(names[fewest - 1:]) > 1.01
    assert result.reverted == tuple(names[:fewest]) and result.met and result.ratio <= 1.01
    assert len(result.steps) <= 2 + 5 and len(timed) == len(result.steps)  # log2(32) = 5; each timed once


@pytest.mark.parametrize(
    "estimate, slower",
    [
        (RatioEstimate(1.004, 0.995, 1.012, 400), False),  # cannot tell from the parent: the savings stay
        (RatioEstimate(1.015, 0.990, 1.040, 400), False),  # noisy, median within the margin
        (RatioEstimate(1.008, 1.003, 1.013, 400), False),  # slower, by less than a session reproduces
        (RatioEstimate(1.018, 1.012, 1.024, 400), True),  # measurably more than 1 % slower
        (RatioEstimate(1.030, 0.950, 1.100, 400), True),  # too far above whatever the interval
        (RatioEstimate(0.970, 0.960, 0.990, 400), False),
    ],
)
def test_the_guard_reverts_only_what_is_measurably_slower(estimate, slower):
    alloc, baselines = _setup()
    timed = []

    def ratio_of(a):
        timed.append(len(a.factorized))
        return estimate if len(a.factorized) == 3 else RatioEstimate.exact(0.9)

    result = guard_model_latency(alloc, ratio_of, baselines, TOTALS, CostTargets())
    assert bool(result.reverted) is slower and result.met
    first = result.steps[0]
    assert (first.factorized, first.ratio, first.ratio_low, first.ratio_high, first.rounds) == (
        3, estimate.median, estimate.low, estimate.high, 400)
    assert timed[0] == 3 and len(timed) == len(set(timed))  # every allocation timed once
    assert is_slower(estimate) is slower and GUARD_MARGIN == 0.02


def test_a_plain_ratio_is_taken_as_exact():
    alloc, baselines = _setup()
    result = guard_model_latency(alloc, lambda a: 1.011 if len(a.factorized) == 3 else 0.9, baselines, TOTALS,
                                 CostTargets())
    assert result.reverted and result.steps[0].ratio_low == result.steps[0].ratio_high == 1.011
    assert result.steps[0].rounds == 0 and result.as_dict()["steps"][0]["ratio_low"] == 1.011


def test_when_no_layer_may_go_back_the_child_is_not_timed_again():
    alloc, baselines = _setup()
    ratio_of, timed = _overhead_model(0.9)
    result = guard_model_latency(alloc, ratio_of, baselines, TOTALS, CostTargets(params=0.45))  # 400 ≤ 450 < 500
    assert timed == [("a", "b", "c")] and not result.met and result.reverted == ()
    assert result.ratio == pytest.approx(1.11) and "sending a back" in result.stopped_by
