"""The zoo's training plans: full and quick parents end at the fine-tune's rate; the report shows it."""

from __future__ import annotations

from dataclasses import asdict

from bench.report.fmt import rate_at_kept_epoch
from bench.zoo import TRAIN_PLANS
from lrf_core.finetune import FinetuneConfig


def test_full_parent_is_trained_down_to_the_fine_tune_rate():
    plan = TRAIN_PLANS["full"]
    assert plan.lr_patience is not None and plan.lr_patience < plan.patience
    # after two drops the parent has trained at or below the children's fine-tune rate
    assert plan.learning_rate * plan.lr_factor ** 2 <= FinetuneConfig().learning_rate
    # the schedule is part of the stored parent's request, so a parent trained without it is retrained
    assert {"lr_patience", "lr_factor"} <= set(asdict(plan))


def test_report_shows_the_rate_of_the_kept_epoch():
    parent = {"learning_rates": [1e-3, 1e-3, 1e-4, 1e-4, 1e-5], "kept_epoch": 4}
    assert rate_at_kept_epoch(parent) == "1e-04 (epoch 4)"
    assert rate_at_kept_epoch({"epochs": 15}) == "—"  # a record from before the schedule
