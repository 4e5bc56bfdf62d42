"""The goals of issue 5, as thresholds."""

from __future__ import annotations

GOALS = {
    "params_reduction_avg": 90.0, "macs_reduction_avg": 70.0, "sigma_drop_at_macs50": 2.0,
    "sigma_vs_frobenius_points": 1.0, "speedup_over_macs_ratio": 0.8, "search_over_epoch": 1.0,
    "resnet50_search_s": 600.0, "resnet50_peak_rss_gb": 8.0,
}
