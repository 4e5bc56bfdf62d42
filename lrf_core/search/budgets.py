"""Recovery budgets: larger accuracy budgets before the fine-tune, tried first (no TensorFlow here).

The search checks its accuracy budget ``max_drop`` **before** the fine-tune, on the estimated
drop of the rebuilt child; the one-shot fine-tune then recovers part of that drop. Measured on
the Fashion-MNIST zoo (bench/REPORT.md, "Accuracy budget before the fine-tune"), a 4-point
budget before the fine-tune still left the VGG-style child within a 1-point gate after it
(params 7 % kept instead of 18 %). ``recovery_budgets`` lets the search also choose at such
larger budgets; :func:`lrf_core.search.compress.finetune_first_within` fine-tunes those choices
first and keeps the first whose validation drop after the fine-tune is within ``max_drop``.
Both :class:`lrf_core.search.compress.CompressConfig` and the pipeline's ``search`` parameters
validate with :func:`check_recovery_budgets`.
"""

from __future__ import annotations

from typing import Optional, Sequence

from lrf_core.errors import PlanError

__all__ = ["check_recovery_budgets"]


def check_recovery_budgets(budgets: Sequence[float], *, max_drop: Optional[float], cost_targets: bool,
                           rank_rule: bool, selection: str) -> None:
    """Raise :class:`PlanError` unless ``budgets`` can be tried before ``max_drop``."""
    if not budgets:
        return
    name = "recovery_budgets"
    if max_drop is None or cost_targets or rank_rule:
        raise PlanError(f"{name} are larger accuracy budgets tried before max_drop: they need max_drop and "
                        "neither cost targets nor a rank rule. Set max_drop or drop recovery_budgets.")
    if selection != "layerwise":
        raise PlanError(f"{name} work with selection: layerwise only. Received {selection!r}.")
    low = [b for b in budgets if not b > max_drop]
    if low:
        raise PlanError(f"{name} must each be larger than max_drop ({max_drop}): {low} are not. They are the "
                        "budgets before the fine-tune tried first; max_drop is the one that always remains.")
    if len(set(budgets)) != len(budgets):
        raise PlanError(f"{name} lists a budget twice: {list(budgets)}.")
