"""Where a large model's search time goes, per method (bench.scale.time_by_method and its report table)."""

from __future__ import annotations

import pytest

from bench.report.blame import scale_blame
from bench.report.render import scale_methods_section
from bench.scale import time_by_method

REPORT = {
    "candidate_counts": {
        "a": {"fitted": 3, "fit_s": {"svd": 1.0, "cp": 10.0}},
        "b": {"fitted": 3, "fit_s": {"svd": 2.0, "cp": 20.0, "tucker2": 5.0}},
        "c": {"fitted": 0},  # a layer skipped before fitting records no times
    },
    "refits": [
        {"layer": "a", "method": "cp", "seconds": 100.0, "sweeps": 100, "proxy_error_before": 0.10,
         "proxy_error_after": 0.08, "kept": True},
        {"layer": "b", "method": "cp", "seconds": 50.0, "sweeps": 60, "proxy_error_before": 0.20,
         "proxy_error_after": 0.19, "kept": False},
        {"layer": "b2", "method": "tucker2", "seconds": 4.0, "sweeps": 30, "proxy_error_before": 0.0,
         "proxy_error_after": 0.0, "kept": True},
    ],
}


def test_time_by_method_sums_grids_and_refits_per_method():
    by = time_by_method(REPORT)
    assert set(by) == {"svd", "cp", "tucker2"}
    assert by["svd"] == {"candidates_s": 3.0, "refits": 0, "refit_s": 0.0}  # closed form: never refitted
    assert by["cp"]["candidates_s"] == 30.0 and by["cp"]["refit_s"] == 150.0 and by["cp"]["refits"] == 2
    assert by["cp"]["refit_sweeps_median"] == 80 and by["cp"]["refits_kept"] == 1
    assert by["cp"]["refit_error_gain_median"] == pytest.approx((0.2 + 0.05) / 2)
    assert by["tucker2"]["refit_error_gain_median"] is None  # an exact fit has no relative gain


def test_the_report_table_lists_the_costliest_method_first():
    lines = scale_methods_section([{"config": "all_methods", "search_iterations": 5, "by_method": time_by_method(REPORT)},
                                   {"config": "older run without the breakdown"}])
    lines = "\n".join(lines).splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| method")]
    assert [row.split(" | ")[0] for row in rows] == ["| cp", "| tucker2", "| svd"]
    assert rows[0] == "| cp | 30 | 2 | 150 | 80 | 12.5 % | 1 |"
    assert sum("Fitting time by method" in line for line in lines) == 1


def test_the_goal_row_names_the_costliest_method_phases():
    run = {"phases_s": {"candidates": 40.0, "refit": 160.0, "calibration": 5.0}, "by_method": time_by_method(REPORT)}
    assert scale_blame(run) == "refit 160 s, candidates 40 s; by method: cp refits 150 s, cp grids 30 s"
    assert scale_blame({"phases_s": {"candidates": 40.0}}) == "candidates 40 s"  # older runs: phases only
