"""The Markdown report: rows a reader relies on."""

from __future__ import annotations

from lrf_core.report_render import render_markdown


def _report(**extra):
    return {"model": "m", "lrflow_version": "0", "layers": [], "config": {
        "methods": {"conv2d": ["svd"]}, "selection": "layerwise", "similarity": "cka", "objective": "sigma", "seed": 0},
        **extra}


def test_the_latency_row_shows_the_paired_ratio_its_interval_and_what_it_was_timed_at():
    ratio = {"median": 0.98, "low": 0.97, "high": 0.995, "rounds": 400, "confidence": 0.95}
    child = {"latency_s": 0.98e-3, "latency_ratio": ratio, "latency_timing": {"batch": 8, "threads": 1}}
    text = render_markdown(_report(parent={"latency_s": 1e-3}, child=child))
    assert "| latency (batch 8, 1 thread, ms) | 1.000 | 0.980 | 98.00 % (95 % interval 97.00 %–99.50 %) |" in text
    child["latency_timing"] = {"batch": 1, "threads": None}  # TensorFlow's default thread count
    assert "| latency (batch 1, ms) | 1.000 |" in render_markdown(_report(parent={"latency_s": 1e-3}, child=child))
    older = render_markdown(_report(parent={"latency_s": 1e-3}, child={"latency_s": 0.98e-3}))  # before intervals
    assert "| latency (ms) | 1.000 | 0.980 | 98.00 % |" in older


def test_a_recovery_budget_that_was_not_tried_says_why():
    text = render_markdown(_report(recovery_skipped=[{"max_drop": 8.0, "reason": "nothing left factorized"}]))
    assert "Recovery budget 8 points was not tried: nothing left factorized." in text
    assert "not tried" not in render_markdown(_report())


def test_recovery_rows_show_the_validation_bootstrap_confidence():
    tried = [{"max_drop_before_finetune": 8.0, "params_kept": 0.155, "macs_kept": 0.2, "val_drop_after_finetune": 0.53,
              "val_confidence": 0.931, "val_bound": 1.5, "accept_max_drop": 1.0, "accept_confidence": 0.95,
              "heldout_pass_probability": 0.8123, "kept": False}]
    text = render_markdown(_report(recovery=tried))
    assert "| 8 | 15.50 % | 20.00 % | 0.53 points | 0.931 (bound 1.5, needs 0.95) | 0.812 | no |" in text
    older = {k: v for k, v in tried[0].items() if not k.startswith(("val_c", "val_b", "accept", "heldout"))}
    assert "| 0.53 points | — | — | no |" in render_markdown(_report(recovery=[older]))  # written before it was recorded
