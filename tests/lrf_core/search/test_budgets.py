"""Recovery budgets: what "auto" resolves to and which explicit lists are refused (no TensorFlow)."""

from __future__ import annotations

import pytest

from lrf_core.errors import PlanError
from lrf_core.search.budgets import AUTO_RECOVERY_BUDGETS, resolve_recovery_budgets

ALONE = dict(cost_targets=False, rank_rule=False, selection="layerwise")


@pytest.mark.parametrize("max_drop, expected", [(1.0, (8.0, 4.0, 2.0)), (2.0, (8.0, 4.0)), (0.5, (8.0, 4.0, 2.0)),
                                                (8.0, ())])
def test_auto_is_the_fixed_ladder_strictly_above_max_drop(max_drop, expected):
    assert AUTO_RECOVERY_BUDGETS == (8.0, 4.0, 2.0)
    assert resolve_recovery_budgets("auto", max_drop=max_drop, **ALONE) == expected


@pytest.mark.parametrize("settings", [
    dict(ALONE, max_drop=None),
    dict(ALONE, max_drop=1.0, cost_targets=True),
    dict(ALONE, max_drop=1.0, rank_rule=True),
    dict(ALONE, max_drop=1.0, selection="sequential"),
])
def test_auto_is_none_where_budgets_cannot_be_tried_and_never_raises(settings):
    """A cost target set on top of the defaults (dvc exp run -S search.target_macs=0.3) must not be refused."""
    assert resolve_recovery_budgets("auto", **settings) == ()


def test_an_explicit_list_is_checked_and_ordered_largest_first():
    assert resolve_recovery_budgets([2, 6.5], max_drop=1.0, **ALONE) == (6.5, 2.0)
    assert resolve_recovery_budgets([], max_drop=1.0, **dict(ALONE, cost_targets=True)) == ()
    with pytest.raises(PlanError, match="neither cost targets"):
        resolve_recovery_budgets([4.0], max_drop=1.0, **dict(ALONE, cost_targets=True))
    with pytest.raises(PlanError, match=r"larger than max_drop \(1.0\): \[1.0\]"):
        resolve_recovery_budgets([4.0, 1.0], max_drop=1.0, **ALONE)
    for bad in (float("inf"), float("nan")):  # inf would pass "larger" and break JSON parameters
        with pytest.raises(PlanError, match="finite"):
            resolve_recovery_budgets([4.0, bad], max_drop=1.0, **ALONE)


def test_any_other_word_is_refused_with_what_is_allowed():
    with pytest.raises(PlanError, match=r'"auto" or a list of budgets.*Received \'on\''):
        resolve_recovery_budgets("on", max_drop=1.0, **ALONE)
