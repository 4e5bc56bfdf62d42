"""The readable summary of a compress-model run (flows.flow_cli.print_result)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from flows.flow_cli import print_result


def _result(**summary):
    base = {"parent_params": 1000, "child_params": 400, "params_kept": 0.4, "parent_macs": 2000, "child_macs": 900,
            "macs_kept": 0.45, "parent_test_accuracy": 0.98, "child_test_accuracy": 0.975, "latency_batch": 1,
            "checks": [], "recovery": [], "hints": []}
    return {"name": "m", "passed": True, "summary": {**base, **summary}, "uri": "s3://b/m/1", "status": "published",
            "promotion": "production -> 1", "report_dir": "/tmp/r"}


@pytest.mark.parametrize(
    "summary, shown",
    [
        ({"latency_ratio": 0.9873, "latency_interval": [0.9712, 1.0034]}, "0.99 (95 %: 0.97-1.00)"),
        ({"latency_ratio": 0.9873}, "0.99"),  # a summary written before the interval existed
    ],
)
def test_the_latency_row_shows_the_paired_median_and_its_interval(summary, shown):
    console = Console(file=io.StringIO(), width=120)
    print_result(_result(**summary), console)
    row = next(line for line in console.file.getvalue().splitlines() if "latency (child / parent, batch 1)" in line)
    assert row.rstrip(" │|").endswith(shown)


def test_no_latency_row_when_latency_was_not_measured():
    console = Console(file=io.StringIO(), width=120)
    print_result(_result(latency_ratio=None, latency_interval=None), console)
    assert "latency" not in console.file.getvalue()


def test_a_recovery_attempt_shows_its_validation_bootstrap_confidence():
    tried = [{"max_drop_before_finetune": 8.0, "params_kept": 0.155, "val_drop_after_finetune": 0.53,
              "val_confidence": 0.931, "val_bound": 1.5, "heldout_pass_probability": 0.812, "accept_max_drop": 1.0,
              "kept": False},
             {"max_drop_before_finetune": 1.0, "params_kept": 0.3, "val_drop_after_finetune": 0.1, "kept": True}]
    console = Console(file=io.StringIO(), width=200)
    print_result(_result(latency_ratio=None, recovery=tried), console)
    lines = [line.strip() for line in console.file.getvalue().splitlines() if line.strip().startswith("budget ")]
    assert lines == ["budget 8 points before the fine-tune: params 15.5% kept, validation drop +0.53 after it "
                     "(P(drop < 1.5) = 0.93, P(held-out drop ≤ 1) = 0.81), refused",
                     "budget 1 points before the fine-tune: params 30.0% kept, validation drop +0.10 after it, kept"]
