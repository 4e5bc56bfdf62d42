"""Great Expectations suites for the calibration set and the gate metrics (tasks.expectations)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from tasks.expectations import (
    CALIBRATION_SUITE,
    GATE_SUITE,
    CalibrationCheckError,
    CheckConfigError,
    GateMetricsCheckError,
    raise_if_failed,
    validate_calibration,
    validate_gate_metrics,
    write_outcome,
)
from tasks.expectations_frames import CALIBRATION_COLUMNS, calibration_frame

CALIBRATION_CHECKS = [
    "not_empty", "paired", "sample_shape", "dtype", "all_finite", "values_min", "values_max",
    "label_valid", "classes", "class_count", "duplicates",
]
THRESHOLDS = dict(
    input_shape=(8, 8, 1), num_classes=10, min_per_class=5, max_duplicate_fraction=0.05,
    value_range=(0.0, 1.0),
)


@dataclass(frozen=True)
class Raw:
    """Arrays that skip lrf_core.data.Dataset's own validation (NaN, bad labels, empty ...)."""

    x: Any
    y: Any
    name: str = "raw"


@pytest.fixture(scope="module")
def digits():
    from lrf_core.data import load_dataset

    return load_dataset("sklearn:digits", split="all")


@pytest.fixture(scope="module")
def digits_outcome(digits):
    return validate_calibration(digits, **THRESHOLDS)


def check(data, **overrides):
    return validate_calibration(data, **{**THRESHOLDS, **overrides})


def failed_checks(outcome) -> list[str]:
    return [r.check for r in outcome.results if not r.success]


def error_message(outcome) -> str:
    with pytest.raises((CalibrationCheckError, GateMetricsCheckError)) as info:
        raise_if_failed(outcome)
    return str(info.value)


# ----------------------------------------------------------------------------------------
# calibration suite
# ----------------------------------------------------------------------------------------
def test_digits_set_passes_every_calibration_expectation(digits, digits_outcome):
    outcome = digits_outcome
    assert digits.x.shape == (1797, 8, 8, 1) and digits.x.dtype == np.float32
    assert outcome.suite == CALIBRATION_SUITE
    assert outcome.success, outcome.failed_descriptions
    assert [r.check for r in outcome.results] == CALIBRATION_CHECKS
    assert all(r.success and not r.skipped for r in outcome.results)
    assert outcome.failed_descriptions == []
    assert outcome.result("not_empty").observed == 1797
    assert outcome.result("duplicates").observed == pytest.approx(1.0)
    smallest = outcome.result("class_count").description
    assert smallest.startswith(">= 5 examples per class: smallest class has ")
    # GE's own result agrees and every expectation ran
    assert outcome.result_json["success"] is True
    assert outcome.result_json["statistics"]["evaluated_expectations"] == len(CALIBRATION_CHECKS)
    assert outcome.docs_index is None
    raise_if_failed(outcome)  # no error


def test_nan_images_fail_finiteness_and_the_message_names_column_and_fix(digits):
    x = digits.x.copy()
    x[[3, 50, 700], 2, 2, 0] = [np.nan, np.inf, -np.inf]
    outcome = check(Raw(x, digits.y))
    assert failed_checks(outcome) == ["all_finite"]
    finite = outcome.result("all_finite")
    assert finite.column == "all_finite"
    assert finite.observed["unexpected_count"] == 3 and finite.observed["element_count"] == 1797
    assert finite.description == "values finite: 3 of 1797 images contain NaN or inf"
    message = error_message(outcome)
    assert message.startswith(
        "calibration set check failed: values finite: 3 of 1797 images contain NaN or inf"
    )
    assert "(column `all_finite`)" in message and "clean the data" in message
    # the finite pixels of those images still have a range, which stays within [0, 1]
    assert outcome.result("values_min").success and outcome.result("values_max").success


def test_missing_class_fails_presence_naming_the_class(digits):
    keep = digits.y != 7
    outcome = check(Raw(digits.x[keep], digits.y[keep]))
    assert failed_checks(outcome) == ["classes"]
    assert outcome.result("classes").observed == {"missing": [7]}
    assert outcome.result("classes").description == "all 10 classes present: class 7 has no examples"
    assert "class 7 has no examples (column `label`)" in error_message(outcome)


def test_class_below_minimum_count_names_the_class_and_its_count(digits):
    sevens = np.flatnonzero(digits.y == 7)
    keep = np.ones(len(digits.y), bool)
    keep[sevens[2:]] = False  # two sevens left
    outcome = check(Raw(digits.x[keep], digits.y[keep]))
    assert failed_checks(outcome) == ["class_count"]
    assert outcome.result("class_count").description == ">= 5 examples per class: class 7 has 2"
    assert outcome.result("class_count").observed["unexpected_count"] == 2  # the two rows of class 7
    assert check(Raw(digits.x[keep], digits.y[keep]), min_per_class=2).success


def test_labels_out_of_range_or_not_integers_fail(digits):
    y = digits.y.astype(np.float64)
    y[:4] = [10, -1, 2.5, np.nan]
    outcome = check(Raw(digits.x, y))
    assert failed_checks(outcome) == ["label_valid"]
    valid = outcome.result("label_valid")
    assert valid.observed["unexpected_count"] == 4
    assert valid.observed["examples"] == [10, -1, 2.5, "nan"]
    assert valid.kwargs == {"value_set": list(range(10))}
    assert "4 of 1797 labels are not, e.g. 10, -1, 2.5, nan" in error_message(outcome)


@pytest.mark.parametrize(
    "shape, printed",
    [
        ((40, 28, 28, 1), "(28, 28, 1)"),
        ((40, 8, 8), "(8, 8)"),  # no channel axis
        ((40, 64), "(64,)"),
        ((40, 8, 8, 3), "(8, 8, 3)"),
    ],
)
def test_images_of_another_shape_fail_the_shape_expectation(shape, printed):
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    y = np.arange(40) % 10
    outcome = check(Raw(x, y), min_per_class=1)
    assert failed_checks(outcome) == ["sample_shape"]
    result = outcome.result("sample_shape")
    assert result.observed == {"unexpected_count": 40, "element_count": 40, "examples": [printed]}
    assert f"image shape (8, 8, 1): 40 of 40 images have shape {printed}" in error_message(outcome)


def test_open_input_sizes_match_any_size_but_not_another_channel_count():
    rng = np.random.default_rng(0)
    y = np.arange(40) % 10
    grey = Raw(rng.random((40, 12, 9, 1), dtype=np.float32), y)
    colour = Raw(rng.random((40, 12, 9, 3), dtype=np.float32), y)
    assert check(grey, input_shape=(None, None, 1), min_per_class=1).success
    outcome = check(colour, input_shape=(None, None, 1), min_per_class=1)
    assert failed_checks(outcome) == ["sample_shape"]
    assert outcome.result("sample_shape").expectation_type == "expect_column_values_to_match_regex"


def test_wrong_dtype_fails_the_dtype_expectation(digits):
    outcome = check(Raw(digits.x.astype(np.float64), digits.y))
    assert failed_checks(outcome) == ["dtype"]
    assert outcome.result("dtype").observed["examples"] == ["float64"]
    assert "convert x to float32" in error_message(outcome)


def test_non_numeric_images_fail_expectations_without_crashing():
    x = np.array([["a", "b", "c"]] * 20)  # no per-pixel statistics possible
    outcome = check(Raw(x, np.arange(20) % 10), min_per_class=1, max_duplicate_fraction=1.0)
    assert failed_checks(outcome) == ["sample_shape", "dtype", "all_finite"]
    assert outcome.result("all_finite").description == "values finite: 20 of 20 images are not numbers"


def test_unequal_numbers_of_images_and_labels_fail_pairing(digits):
    outcome = check(Raw(digits.x, digits.y[:-5]))
    assert "paired" in failed_checks(outcome)
    assert outcome.result("paired").description == "one label per image: x has 1797 images, y has 1792 labels"
    assert outcome.result("paired").observed["unexpected_count"] == 5


def test_duplicate_heavy_set_fails(digits):
    x = digits.x[:100].copy()
    x[60:] = x[0]  # 40 copies of image 0
    outcome = check(Raw(x, digits.y[:100]), min_per_class=1)
    assert failed_checks(outcome) == ["duplicates"]
    duplicates = outcome.result("duplicates")
    assert duplicates.observed == pytest.approx(0.6)  # GE: distinct / all content hashes
    assert duplicates.kwargs == {"min_value": pytest.approx(0.95)}
    assert duplicates.description == (
        "exact duplicates <= 5.0%: 40 of 100 images (40.0%) repeat an earlier image"
    )
    assert check(Raw(x, digits.y[:100]), min_per_class=1, max_duplicate_fraction=0.4).success


def test_empty_set_fails_clearly():
    outcome = check(Raw(np.zeros((0, 8, 8, 1), np.float32), np.zeros((0,), np.int64)))
    assert not outcome.success
    assert outcome.failed_descriptions[0] == "set not empty: 0 examples"
    assert outcome.result("classes").observed == {"missing": list(range(10))}
    assert error_message(outcome).startswith("calibration set check failed: set not empty: 0 examples")


def test_values_outside_the_range_fail_naming_the_extremes(digits):
    x = digits.x.copy()
    x[5, 0, 0, 0] = -0.5
    x[6:8, 1, 1, 0] = 2.0
    outcome = check(Raw(x, digits.y))
    assert failed_checks(outcome) == ["values_min", "values_max"]
    assert outcome.result("values_min").description == (
        "values >= 0: 1 of 1797 images go below 0, lowest value -0.5"
    )
    assert outcome.result("values_max").description == (
        "values <= 1: 2 of 1797 images go above 1, highest value 2"
    )
    assert "scale the images to [0, 1]" in error_message(outcome)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"input_shape": (0, 8, 1)}, "input_shape"),
        ({"num_classes": 0}, "num_classes"),
        ({"min_per_class": -1}, "min_per_class"),
        ({"max_duplicate_fraction": 1.5}, "max_duplicate_fraction"),
        ({"value_range": (1.0, 0.0)}, "value_range"),
    ],
)
def test_nonsense_thresholds_raise_before_any_check(digits, overrides, fragment):
    with pytest.raises(CheckConfigError, match=fragment):
        check(digits, **overrides)


def test_calibration_frame_of_an_empty_set_has_every_column():
    frame = calibration_frame(np.zeros((0, 8, 8, 1)), np.zeros((0,)), num_classes=10)
    assert list(frame.columns) == list(CALIBRATION_COLUMNS)
    assert len(frame) == 0


# ----------------------------------------------------------------------------------------
# gate-metrics suite
# ----------------------------------------------------------------------------------------
def gate(metrics, **overrides):
    options = dict(max_drop=1.0, compression_target={"params_kept": 0.5, "macs_kept": 0.6})
    return validate_gate_metrics(metrics, **{**options, **overrides})


GOOD_METRICS = {"accuracy_drop_points": 0.5, "params_kept": 0.4, "macs_kept": 0.55, "latency_ratio": 0.9}


def test_gate_passes_when_every_metric_is_within_its_threshold():
    outcome = gate(GOOD_METRICS)
    assert outcome.suite == GATE_SUITE
    assert outcome.success, outcome.failed_descriptions
    assert [r.check for r in outcome.results] == [
        "accuracy_drop_points", "params_kept", "macs_kept", "latency_ratio",
    ]
    assert outcome.result("accuracy_drop_points").observed == 0.5
    assert outcome.result("accuracy_drop_points").kwargs == {"max_value": 1.0}
    raise_if_failed(outcome)


def test_gate_fails_on_accuracy_drop_naming_threshold_and_value():
    outcome = gate({**GOOD_METRICS, "accuracy_drop_points": 1.5})
    assert failed_checks(outcome) == ["accuracy_drop_points"]
    assert outcome.result("accuracy_drop_points").observed == 1.5
    message = error_message(outcome)
    assert message.startswith("gate metrics check failed: accuracy drop <= 1 points: observed 1.5")
    with pytest.raises(GateMetricsCheckError):
        raise_if_failed(outcome)


def test_gate_fails_on_compression_fraction_above_target():
    outcome = gate({**GOOD_METRICS, "params_kept": 0.7})
    assert failed_checks(outcome) == ["params_kept"]
    assert outcome.result("params_kept").description == "params_kept <= 0.5: observed 0.7"


def test_gate_fails_on_a_child_that_compresses_nothing():
    outcome = gate({**GOOD_METRICS, "compressed": 1.0})
    assert failed_checks(outcome) == ["compressed"]
    assert "keeps less than all of the parent's params or MACs" in error_message(outcome)
    assert gate({**GOOD_METRICS, "compressed": 0.55}).success


def test_gate_fails_on_latency_ratio_above_limit():
    outcome = gate({**GOOD_METRICS, "latency_ratio": 1.2})
    assert failed_checks(outcome) == ["latency_ratio"]
    assert "latency ratio (child/parent) <= 1: observed 1.2" in error_message(outcome)
    assert gate({**GOOD_METRICS, "latency_ratio": 1.2}, max_latency_ratio=1.25).success


def test_gate_reports_missing_latency_as_skipped():
    metrics = {k: v for k, v in GOOD_METRICS.items() if k != "latency_ratio"}
    outcome = gate(metrics)
    assert outcome.success
    latency = outcome.result("latency_ratio")
    assert latency.skipped and latency.success and latency.observed is None
    assert outcome.skipped_descriptions == [latency.description]
    assert "skipped" in latency.description and "latency_ratio" in latency.description
    assert outcome.result_json["statistics"]["evaluated_expectations"] == 3  # not sent to GE


def test_gate_fails_on_a_nan_metric():
    outcome = gate({**GOOD_METRICS, "accuracy_drop_points": float("nan")})
    assert failed_checks(outcome) == ["accuracy_drop_points"]
    assert outcome.result("accuracy_drop_points").observed is None


@pytest.mark.parametrize(
    "metrics, overrides, fragment",
    [
        ({"params_kept": 0.4}, {}, "accuracy_drop_points"),
        ({"accuracy_drop_points": 0.1}, {"compression_target": {"params_kept": 0.5}}, "params_kept"),
        (GOOD_METRICS, {"max_drop": float("nan")}, "max_drop"),
    ],
)
def test_gate_configuration_errors_raise_before_any_check(metrics, overrides, fragment):
    with pytest.raises(CheckConfigError, match=fragment):
        gate(metrics, **overrides)


# ----------------------------------------------------------------------------------------
# Data Docs, JSON, isolation
# ----------------------------------------------------------------------------------------
def test_data_docs_are_written_only_to_the_given_directory(digits, tmp_path, monkeypatch):
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # GE must not scaffold a project where it runs
    docs = tmp_path / "docs" / "calibration"
    outcome = check(digits, docs_dir=docs)
    assert outcome.docs_index == (docs / "index.html").resolve()
    html = outcome.docs_index.read_text(encoding="utf-8")
    assert CALIBRATION_SUITE in html
    assert (docs / "expectations" / f"{CALIBRATION_SUITE}.html").is_file()
    assert list(docs.glob(f"validations/{CALIBRATION_SUITE}/**/*.html"))
    assert list(workdir.iterdir()) == []


def test_gate_data_docs_name_the_gate_suite(tmp_path):
    outcome = gate(GOOD_METRICS, docs_dir=tmp_path / "gate")
    assert GATE_SUITE in outcome.docs_index.read_text(encoding="utf-8")


def test_write_outcome_saves_strict_json(tmp_path):
    outcome = gate({**GOOD_METRICS, "accuracy_drop_points": 1.5, "macs_kept": float("nan")})
    path = write_outcome(outcome, tmp_path / "out" / "gate.json")
    saved = json.loads(path.read_text(encoding="utf-8"))  # strict: no NaN tokens
    assert saved["suite"] == GATE_SUITE and saved["success"] is False
    assert saved["failed"] == outcome.failed_descriptions and len(saved["failed"]) == 2
    assert [r["check"] for r in saved["results"]] == [r.check for r in outcome.results]
    assert saved["great_expectations"]["statistics"]["unsuccessful_expectations"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["gate.json"]  # no temp file left


def test_two_validations_in_one_process_do_not_interfere(digits, tmp_path):
    x = digits.x.copy()
    x[:2] = np.nan
    bad = check(Raw(x, digits.y), docs_dir=tmp_path / "bad")
    good = check(digits, docs_dir=tmp_path / "good")
    assert failed_checks(bad) == ["all_finite"] and good.success
    assert bad.result_json["meta"]["validation_id"] != good.result_json["meta"]["validation_id"]
    # each site lists its own validation only
    assert "Failed" in (tmp_path / "bad" / "index.html").read_text(encoding="utf-8")
    assert "Failed" not in (tmp_path / "good" / "index.html").read_text(encoding="utf-8")


def test_validations_from_several_threads_match_sequential_ones(digits):
    x = digits.x.copy()
    x[:4] = np.nan
    jobs = {
        "good": lambda: check(digits).failed_descriptions,
        "nan": lambda: check(Raw(x, digits.y)).failed_descriptions,
        "gate": lambda: gate({**GOOD_METRICS, "latency_ratio": 1.2}).failed_descriptions,
    }
    expected = {name: job() for name, job in jobs.items()}
    names = list(jobs) * 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        observed = list(pool.map(lambda name: jobs[name](), names))
    assert observed == [expected[name] for name in names]
    assert expected["good"] == [] and len(expected["nan"]) == 1 and len(expected["gate"]) == 1
