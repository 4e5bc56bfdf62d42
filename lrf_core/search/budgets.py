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

The pipeline and ``lrf compress`` default to ``"auto"`` (:func:`resolve_recovery_budgets`):
those of :data:`AUTO_RECOVERY_BUDGETS` larger than ``max_drop`` whenever recovery budgets can be tried (an
accuracy budget alone, layerwise selection), none otherwise, so a cost target set on top of
the defaults (``dvc exp run -S search.target_macs=0.3``) is not refused. The library's
:class:`~lrf_core.search.compress.CompressConfig` stays explicit (its default is none).
"""

from __future__ import annotations

import math
from typing import Literal, Optional, Sequence, Union

from lrf_core.errors import PlanError

__all__ = ["AUTO_RECOVERY_BUDGETS", "check_recovery_budgets", "resolve_recovery_budgets"]

#: What ``"auto"`` tries, largest first. Measured (bench/REPORT.md, ``lrflow_recovery``): the
#: 8-point choice was within a 1-point gate after one fine-tune on all three zoo models (params
#: 6.9 / 28.8 / 53.3 % kept instead of 18.4 / 66.2 / 66.4 %); on the digits demo the 8-point
#: child was refused and the 4-point one kept. A refused rung costs one fine-tune.
AUTO_RECOVERY_BUDGETS: tuple[float, ...] = (8.0, 4.0, 2.0)

NAME = "recovery_budgets"


def _why_not_tried(max_drop: Optional[float], cost_targets: bool, rank_rule: bool, selection: str) -> Optional[str]:
    """Why no recovery budget can be tried under these settings (``None``: they can)."""
    if max_drop is None or cost_targets or rank_rule:
        return (f"{NAME} are larger accuracy budgets tried before max_drop: they need max_drop and "
                "neither cost targets nor a rank rule. Set max_drop or drop recovery_budgets.")
    if selection != "layerwise":
        return f"{NAME} work with selection: layerwise only. Received {selection!r}."
    return None


def check_recovery_budgets(budgets: Sequence[float], *, max_drop: Optional[float], cost_targets: bool,
                           rank_rule: bool, selection: str) -> None:
    """Raise :class:`PlanError` unless ``budgets`` can be tried before ``max_drop``."""
    if not budgets:
        return
    reason = _why_not_tried(max_drop, cost_targets, rank_rule, selection)
    if reason:
        raise PlanError(reason)
    if not all(math.isfinite(b) for b in budgets):
        raise PlanError(f"{NAME} must be finite numbers of points: {list(budgets)}.")
    low = [b for b in budgets if not b > max_drop]
    if low:
        raise PlanError(f"{NAME} must each be larger than max_drop ({max_drop}): {low} are not. They are the "
                        "budgets before the fine-tune tried first; max_drop is the one that always remains.")
    if len(set(budgets)) != len(budgets):
        raise PlanError(f"{NAME} lists a budget twice: {list(budgets)}.")


def resolve_recovery_budgets(spec: Union[Literal["auto"], Sequence[float]], *, max_drop: Optional[float],
                             cost_targets: bool, rank_rule: bool, selection: str) -> tuple[float, ...]:
    """The budgets to try, largest first: ``"auto"`` resolved, an explicit list checked.

    ``"auto"`` is :data:`AUTO_RECOVERY_BUDGETS` strictly above ``max_drop`` when budgets can be
    tried at all, else ``()``; it never raises. An explicit list (``[]`` switches them off) raises
    :class:`PlanError` as :func:`check_recovery_budgets` does.
    """
    if isinstance(spec, str):
        if spec != "auto":
            raise PlanError(f'{NAME} is "auto" or a list of budgets in points (e.g. [4, 2]; [] for none). '
                            f"Received {spec!r}.")
        if _why_not_tried(max_drop, cost_targets, rank_rule, selection):
            return ()
        return tuple(b for b in AUTO_RECOVERY_BUDGETS if b > max_drop)
    budgets = tuple(float(b) for b in spec)
    check_recovery_budgets(budgets, max_drop=max_drop, cost_targets=cost_targets, rank_rule=rank_rule,
                           selection=selection)
    return tuple(sorted(budgets, reverse=True))
