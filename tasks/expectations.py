"""Great Expectations suites for the calibration set and for the gate metrics.

Two suites, each run on a table derived from its input (:mod:`tasks.expectations_frames`) by
a fresh, ephemeral GE 1.x context (:mod:`tasks.expectations_gx`):

* :func:`validate_calibration` -- is this set usable to fit and check a compressed model?
  Shape and dtype fit the model input, values finite and in range, labels valid, every class
  present with a minimum count, not dominated by exact duplicates.
* :func:`validate_gate_metrics` -- does the compressed model pass the gate? Accuracy drop,
  fractions of parameters / MACs kept, latency ratio.

Both return a :class:`ValidationOutcome` (plain data: one :class:`ExpectationOutcome` per
check with a one-line description, plus GE's own JSON result) and, when given ``docs_dir``,
write GE Data Docs there. :func:`write_outcome` saves an outcome as JSON;
:func:`raise_if_failed` turns a failed outcome into one clear error.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol, Sequence

import numpy as np
import pandas as pd

from lrf_core.errors import LRFError
from tasks.expectations_frames import calibration_frame, metrics_frame, shape_pattern, shape_text
from tasks.expectations_gx import Check, SuiteRun, run_checks
from tasks.expectations_render import (
    class_count_text,
    duplicates_text,
    exception_message,
    json_safe,
    missing_classes_text,
    number_text,
    observed_value,
    range_text,
    rows_text,
)

__all__ = [
    "CALIBRATION_SUITE",
    "GATE_SUITE",
    "CheckConfigError",
    "CalibrationCheckError",
    "GateMetricsCheckError",
    "ExpectationOutcome",
    "ValidationOutcome",
    "LabelledArrays",
    "validate_calibration",
    "validate_gate_metrics",
    "write_outcome",
    "raise_if_failed",
]

logger = logging.getLogger(__name__)

CALIBRATION_SUITE = "lrflow_calibration_set"
GATE_SUITE = "lrflow_gate_metrics"


# ----------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------
class CheckConfigError(LRFError, ValueError):
    """Thresholds or inputs of a check suite that make no sense (raised before any check runs)."""


class CalibrationCheckError(LRFError, ValueError):
    """The calibration set failed its expectations (the message lists each failure)."""


class GateMetricsCheckError(LRFError, ValueError):
    """The gate metrics failed their expectations (the message lists each threshold and value)."""


# ----------------------------------------------------------------------------------------
# Outcomes
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExpectationOutcome:
    """The result of one expectation, in plain JSON-friendly values.

    Attributes
    ----------
    check : str
        lrflow's id of the check within its suite (``"all_finite"``).
    expectation_type : str
        GE expectation type (``"expect_column_values_to_be_in_set"``).
    column : str or None
        Column of the suite's table; None for table-level expectations.
    kwargs : dict
        The thresholds that matter (``value_set``, ``min_value``, ``max_value``, ``regex``).
    success : bool
        True when the expectation held, or was skipped.
    observed : JSON value
        What GE observed: a number for aggregate expectations, ``{"unexpected_count",
        "element_count", "examples"}`` for per-row ones, ``{"missing": [...]}`` for sets.
    description : str
        One line, requirement then observation: ``">= 5 examples per class: class 7 has 2"``.
    advice : str
        What to do when it fails.
    skipped : bool
        Not run because its input was absent (the description says why).
    """

    check: str
    expectation_type: str
    column: Optional[str]
    kwargs: dict
    success: bool
    observed: Any
    description: str
    advice: str = ""
    skipped: bool = False


@dataclass(frozen=True, repr=False)
class ValidationOutcome:
    """The result of one suite: overall success, one outcome per expectation, GE's JSON.

    Attributes
    ----------
    suite : str
        :data:`CALIBRATION_SUITE` or :data:`GATE_SUITE`.
    success : bool
        Every expectation that ran held (skipped ones do not count against it).
    results : tuple of ExpectationOutcome
        In the suite's order.
    result_json : dict
        GE's ``ExpectationSuiteValidationResult.to_json_dict()``.
    docs_index : Path or None
        ``index.html`` of the Data Docs built for this validation.
    """

    suite: str
    success: bool
    results: tuple[ExpectationOutcome, ...]
    result_json: dict
    docs_index: Optional[Path] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "results", tuple(self.results))
        if not all(isinstance(r, ExpectationOutcome) for r in self.results):
            raise TypeError(f"ValidationOutcome of {self.suite}: results must be ExpectationOutcome objects.")
        if self.success and any(not r.success for r in self.results):
            raise ValueError(
                f"ValidationOutcome of {self.suite}: success=True but these failed: "
                f"{self.failed_descriptions}."
            )

    @property
    def failed_descriptions(self) -> list[str]:
        """One line per failed expectation."""
        return [r.description for r in self.results if not r.success]

    @property
    def skipped_descriptions(self) -> list[str]:
        """One line per expectation that was not run, saying why."""
        return [r.description for r in self.results if r.skipped]

    def result(self, check: str) -> ExpectationOutcome:
        """The outcome of the check with id ``check`` (KeyError lists the ids)."""
        for outcome in self.results:
            if outcome.check == check:
                return outcome
        known = [r.check for r in self.results]
        raise KeyError(f"No check `{check}` in suite {self.suite}. Checks: {known}.")

    def to_json_dict(self) -> dict:
        """Everything, JSON-serialisable: lrflow's summary plus GE's result."""
        return {
            "suite": self.suite,
            "success": self.success,
            "failed": self.failed_descriptions,
            "skipped": self.skipped_descriptions,
            "results": [asdict(r) for r in self.results],
            "docs_index": None if self.docs_index is None else str(self.docs_index),
            "great_expectations": self.result_json,
        }

    def __repr__(self) -> str:
        ran = [r for r in self.results if not r.skipped]
        passed = sum(r.success for r in ran)
        return (
            f"ValidationOutcome(suite={self.suite!r}, success={self.success}, "
            f"passed={passed}/{len(ran)}, skipped={len(self.results) - len(ran)}, "
            f"failed={self.failed_descriptions!r})"
        )


# ----------------------------------------------------------------------------------------
# Calibration suite
# ----------------------------------------------------------------------------------------
class LabelledArrays(Protocol):
    """What :func:`validate_calibration` reads: a :class:`lrf_core.data.Dataset`, or any object
    with ``x``, ``y`` (and optionally ``name``), e.g. arrays that have not been through
    ``Dataset``'s own validation."""

    x: Any
    y: Any


def validate_calibration(
    data: LabelledArrays,
    *,
    input_shape: Sequence[Optional[int]],
    num_classes: int,
    min_per_class: int,
    max_duplicate_fraction: float,
    value_range: tuple[float, float],
    dtype: str = "float32",
    docs_dir: Optional[Path] = None,
) -> ValidationOutcome:
    """Check that a calibration set fits the model input and represents every class.

    The set becomes one row per example (:func:`~tasks.expectations_frames.calibration_frame`)
    and each check is one GE expectation on that table:

    ============  ================================================  ==================================
    check         passes when                                       GE expectation (column)
    ============  ================================================  ==================================
    not_empty     the set has at least one example                  table_row_count_to_be_between
    paired        x and y have the same length                      values_to_be_in_set (paired)
    sample_shape  every image has ``input_shape`` (``None`` = any)  values_to_be_in_set, or
                                                                    values_to_match_regex (sample_shape)
    dtype         x has the model's input dtype                     values_to_be_in_set (dtype)
    all_finite    no image holds NaN or inf (or non-numbers)        values_to_be_in_set (all_finite)
    values_min    no value is below ``value_range[0]``              values_to_be_between (pixel_min)
    values_max    no value is above ``value_range[1]``              values_to_be_between (pixel_max)
    label_valid   every label is an integer in [0, num_classes)     values_to_be_in_set (label)
    classes       every class occurs                                distinct_values_to_contain_set
                                                                    (label)
    class_count   every class has >= ``min_per_class`` examples     values_to_be_between (class_count)
    duplicates    (N - distinct images) / N                         proportion_of_unique_values_to_be
                  <= ``max_duplicate_fraction``                     _between (content_hash)
    ============  ================================================  ==================================

    Parameters
    ----------
    data : Dataset, or an object with ``x`` ``(N, ...)`` and ``y`` ``(N,)``
        Checked as given: unusable data (wrong shape or dtype, NaN, empty, unequal lengths)
        fails expectations, it does not raise.
    input_shape : sequence of int or None
        Model input shape without the batch axis, e.g. ``(8, 8, 1)``.
    num_classes : int
        Number of model outputs.
    min_per_class : int, >= 0
    max_duplicate_fraction : float in [0, 1]
    value_range : (low, high)
        Inclusive range of the values the model was trained on, e.g. ``(0.0, 1.0)``.
    dtype : str
        Model input dtype.
    docs_dir : Path, optional
        Write GE Data Docs here. Use one directory per validation (GE's index builder removes
        pages of results it does not know, so a shared directory keeps only the last one).

    Returns
    -------
    ValidationOutcome
        Suite :data:`CALIBRATION_SUITE`.

    Raises
    ------
    CheckConfigError
        Thresholds that make no sense (checked before anything runs).
    """
    _check_calibration_args(
        data, input_shape, num_classes, min_per_class, max_duplicate_fraction, value_range
    )
    frame = calibration_frame(data.x, data.y, num_classes=num_classes)
    checks = _calibration_checks(
        frame,
        input_shape=tuple(input_shape),
        dtype=str(np.dtype(dtype)),
        num_classes=int(num_classes),
        min_per_class=int(min_per_class),
        max_duplicate_fraction=float(max_duplicate_fraction),
        value_range=(float(value_range[0]), float(value_range[1])),
        sizes=(_length(data.x), _length(data.y)),
    )
    run = run_checks(
        frame,
        checks,
        suite_name=CALIBRATION_SUITE,
        asset_name="calibration_examples",
        meta={"dataset": str(getattr(data, "name", "calibration data")), "rows": len(frame)},
        docs_dir=docs_dir,
    )
    return _outcome(CALIBRATION_SUITE, checks, run, skipped=())


def _check_calibration_args(
    data, input_shape, num_classes, min_per_class, max_duplicate_fraction, value_range
) -> None:
    where = "validate_calibration"
    if not (hasattr(data, "x") and hasattr(data, "y")):
        raise CheckConfigError(
            f"{where}: expected a Dataset or an object with x and y. Received {type(data).__name__}."
        )
    try:
        shape_ok = all(d is None or (_is_int(d) and d > 0) for d in input_shape)
    except TypeError:
        shape_ok = False
    if not shape_ok:
        raise CheckConfigError(
            f"{where}: input_shape must be a tuple of positive ints or None, without the batch "
            f"axis, e.g. (8, 8, 1). Received {input_shape!r}."
        )
    if not _is_int(num_classes) or num_classes < 1:
        raise CheckConfigError(f"{where}: num_classes must be a positive integer. Received {num_classes!r}.")
    if not _is_int(min_per_class) or min_per_class < 0:
        raise CheckConfigError(f"{where}: min_per_class must be an integer >= 0. Received {min_per_class!r}.")
    if not _is_real(max_duplicate_fraction) or not 0.0 <= max_duplicate_fraction <= 1.0:
        raise CheckConfigError(
            f"{where}: max_duplicate_fraction must be in [0, 1]. Received {max_duplicate_fraction!r}."
        )
    if (
        not isinstance(value_range, (tuple, list))
        or len(value_range) != 2
        or not all(_is_real(v) and math.isfinite(v) for v in value_range)
        or value_range[0] > value_range[1]
    ):
        raise CheckConfigError(
            f"{where}: value_range must be (low, high) with finite low <= high. Received {value_range!r}."
        )


def _calibration_checks(
    frame: pd.DataFrame,
    *,
    input_shape: tuple,
    dtype: str,
    num_classes: int,
    min_per_class: int,
    max_duplicate_fraction: float,
    value_range: tuple[float, float],
    sizes: tuple[int, int],
) -> list[Check]:
    """The calibration suite. ``frame`` is only read to word observations (the extremes,
    which classes are short) that GE's capped example lists cannot give."""
    low, high = value_range
    classes = list(range(num_classes))
    shape = shape_text(input_shape)
    scale = f"scale the images to [{low:g}, {high:g}] as in training"
    numeric = frame["dtype"].dropna().map(lambda t: np.dtype(t).kind in "biuf").all()
    not_finite = "contain NaN or inf" if numeric else "are not numbers"
    if None in input_shape:  # sizes left open: match the printed shape with a regex
        shape_expectation = "expect_column_values_to_match_regex"
        shape_kwargs = {"column": "sample_shape", "regex": shape_pattern(input_shape)}
    else:
        shape_expectation = "expect_column_values_to_be_in_set"
        shape_kwargs = {"column": "sample_shape", "value_set": [shape]}
    return [
        Check(
            "not_empty", "expect_table_row_count_to_be_between", {"min_value": 1},
            meaning="set not empty",
            advice="check the data URI, the split and the calibration sample size",
            explain=lambda r: f"{r['observed_value']} examples",
        ),
        Check(
            "paired", "expect_column_values_to_be_in_set", {"column": "paired", "value_set": [True]},
            meaning="one label per image",
            advice="store exactly one label per image",
            explain=lambda r: f"x has {sizes[0]} images, y has {sizes[1]} labels",
        ),
        Check(
            "sample_shape", shape_expectation, shape_kwargs,
            meaning=f"image shape {shape}",
            advice="use data of the model's input size (channels last, no batch axis) "
            "or a model trained on this data",
            explain=lambda r: rows_text(r, "images", "have shape", f"all {shape}"),
        ),
        Check(
            "dtype", "expect_column_values_to_be_in_set", {"column": "dtype", "value_set": [dtype]},
            meaning=f"dtype {dtype}",
            advice=f"convert x to {dtype}, scaled as the model was trained",
            explain=lambda r: rows_text(r, "images", "have dtype", f"x is {dtype}"),
        ),
        Check(
            "all_finite", "expect_column_values_to_be_in_set", {"column": "all_finite", "value_set": [True]},
            meaning="values finite",
            advice="clean the data (drop or fix those images) or choose another calibration set",
            explain=lambda r: rows_text(r, "images", not_finite, "no NaN or inf", examples=False),
        ),
        Check(
            "values_min", "expect_column_values_to_be_between", {"column": "pixel_min", "min_value": low},
            meaning=f"values >= {low:g}",
            advice=scale,
            explain=lambda r: range_text(r, frame["pixel_min"], f"go below {low:g}", "lowest", np.min),
        ),
        Check(
            "values_max", "expect_column_values_to_be_between", {"column": "pixel_max", "max_value": high},
            meaning=f"values <= {high:g}",
            advice=scale,
            explain=lambda r: range_text(r, frame["pixel_max"], f"go above {high:g}", "highest", np.max),
        ),
        Check(
            "label_valid", "expect_column_values_to_be_in_set", {"column": "label", "value_set": classes},
            meaning=f"labels integers in [0, {num_classes})",
            advice="fix the labels, or num_classes if the model has more outputs",
            explain=lambda r: rows_text(r, "labels", "are not, e.g.", "all valid"),
        ),
        Check(
            "classes", "expect_column_distinct_values_to_contain_set",
            {"column": "label", "value_set": classes},
            meaning=f"all {num_classes} classes present",
            advice="use a larger or stratified calibration sample (lrf_core.data.stratified_sample)",
            explain=missing_classes_text,
        ),
        Check(
            "class_count", "expect_column_values_to_be_between",
            {"column": "class_count", "min_value": min_per_class},
            meaning=f">= {min_per_class} examples per class",
            advice="use a larger or stratified calibration sample, or lower min_per_class",
            explain=lambda r: class_count_text(frame, min_per_class),
        ),
        Check(
            "duplicates", "expect_column_proportion_of_unique_values_to_be_between",
            {"column": "content_hash", "min_value": 1.0 - max_duplicate_fraction},
            meaning=f"exact duplicates <= {max_duplicate_fraction:.1%}",
            advice="deduplicate the images or draw the calibration set from a larger pool",
            explain=lambda r: duplicates_text(frame),
        ),
    ]


# ----------------------------------------------------------------------------------------
# Gate-metrics suite
# ----------------------------------------------------------------------------------------
ACCURACY_DROP = "accuracy_drop_points"
LATENCY_RATIO = "latency_ratio"
#: min(params kept, MACs kept): below 1 when the child is cheaper than its parent at all.
COMPRESSED = "compressed"


def validate_gate_metrics(
    metrics: Mapping[str, float],
    *,
    max_drop: float,
    compression_target: Optional[Mapping[str, float]] = None,
    max_latency_ratio: float = 1.0,
    docs_dir: Optional[Path] = None,
) -> ValidationOutcome:
    """Check a compressed model's metrics against the gate's thresholds.

    The metrics become a one-row table (:func:`~tasks.expectations_frames.metrics_frame`).
    Each threshold is ``expect_column_max_to_be_between(column, max_value=threshold)``: on
    one row GE then reports the value itself as ``observed_value``, and a NaN value fails
    (its max does not exist) instead of being skipped as a missing row would be.

    * ``accuracy_drop_points <= max_drop``: parent minus child accuracy, percentage points;
    * ``<key> <= target`` for each ``compression_target`` entry, e.g. ``params_kept <= 0.5``:
      the fraction of the parent's parameters (MACs, ...) that the child keeps;
    * ``compressed < 1`` when the metrics have it: ``min(params kept, MACs kept)``, so a child
      that compresses nothing fails;
    * ``latency_ratio <= max_latency_ratio``: child / parent latency. When the metrics have no
      ``latency_ratio`` this check is not run and is reported as skipped.

    Parameters
    ----------
    metrics : mapping str -> float
    max_drop : float
    compression_target : mapping str -> float, optional
        Metric name -> largest allowed value.
    max_latency_ratio : float
    docs_dir : Path, optional
        Write GE Data Docs here (one directory per validation).

    Returns
    -------
    ValidationOutcome
        Suite :data:`GATE_SUITE`.

    Raises
    ------
    CheckConfigError
        No ``accuracy_drop_points`` metric, a target without its metric, or thresholds that
        are not finite numbers (checked before anything runs).
    """
    _check_gate_args(metrics, max_drop, compression_target, max_latency_ratio)
    checks = [
        _max_check(
            ACCURACY_DROP, max_drop, meaning=f"accuracy drop <= {max_drop:g} points",
            advice="keep more rank (a milder compression target), fine-tune longer, or raise max_drop",
        )
    ]
    checks += [
        _max_check(
            key, target, meaning=f"{key} <= {float(target):g}",
            advice="compress harder (lower ranks, more layers) or relax the compression target",
        )
        for key, target in (compression_target or {}).items()
    ]
    if COMPRESSED in metrics:
        checks.append(_max_check(
            COMPRESSED, 1.0 - 1e-9, meaning="the child keeps less than all of the parent's params or MACs",
            advice="the search factorized nothing: allow more methods, a larger accuracy budget, or (on a busy "
            "host) re-run so the latency rule sees quiet timings",
        ))
    latency = _max_check(
        LATENCY_RATIO, max_latency_ratio,
        meaning=f"latency ratio (child/parent) <= {max_latency_ratio:g}",
        advice="the factorized model is slower: leave small layers alone, prefer methods with "
        "fewer layers, or raise max_latency_ratio",
    )
    skipped: tuple[ExpectationOutcome, ...] = ()
    if LATENCY_RATIO in metrics:
        checks.append(latency)
    else:
        skipped = (_skipped(latency, f"skipped, the metrics have no `{LATENCY_RATIO}` (not measured)"),)
    run = run_checks(
        metrics_frame(metrics),
        checks,
        suite_name=GATE_SUITE,
        asset_name="gate_metrics",
        meta={"skipped_checks": [s.check for s in skipped]},
        docs_dir=docs_dir,
    )
    return _outcome(GATE_SUITE, checks, run, skipped=skipped)


def _max_check(column: str, threshold: float, *, meaning: str, advice: str) -> Check:
    kwargs = {"column": column, "max_value": float(threshold)}
    return Check(column, "expect_column_max_to_be_between", kwargs, meaning=meaning, advice=advice,
                 explain=number_text)


def _check_gate_args(metrics, max_drop, compression_target, max_latency_ratio) -> None:
    where = "validate_gate_metrics"
    if not isinstance(metrics, Mapping):
        raise CheckConfigError(
            f"{where}: metrics must be a mapping name -> number. Received {type(metrics).__name__}."
        )
    if ACCURACY_DROP not in metrics:
        raise CheckConfigError(
            f"{where}: metrics have no `{ACCURACY_DROP}`. Received keys {sorted(metrics)}."
        )
    for name, value in (("max_drop", max_drop), ("max_latency_ratio", max_latency_ratio)):
        if not _is_real(value) or not math.isfinite(value):
            raise CheckConfigError(f"{where}: {name} must be a finite number. Received {value!r}.")
    for key, target in (compression_target or {}).items():
        if key not in metrics:
            raise CheckConfigError(
                f"{where}: compression_target has `{key}` but the metrics do not. "
                f"Metrics keys: {sorted(metrics)}."
            )
        if not _is_real(target) or not math.isfinite(target):
            raise CheckConfigError(
                f"{where}: compression_target[{key!r}] must be a finite number. Received {target!r}."
            )


# ----------------------------------------------------------------------------------------
# Outcomes from GE results
# ----------------------------------------------------------------------------------------
def _outcome(
    suite: str, checks: Sequence[Check], run: SuiteRun, *, skipped: Sequence[ExpectationOutcome]
) -> ValidationOutcome:
    results = tuple(_expectation_outcome(c, run.by_check[c.key]) for c in checks) + tuple(skipped)
    outcome = ValidationOutcome(
        suite=suite,
        success=bool(run.result_json["success"]),
        results=results,
        result_json=run.result_json,
        docs_index=run.docs_index,
    )
    logger.info("%r in %.2f s", outcome, run.seconds)
    return outcome


def _expectation_outcome(check: Check, ge_result: Mapping[str, Any]) -> ExpectationOutcome:
    result = ge_result.get("result") or {}
    error = exception_message(ge_result.get("exception_info") or {})
    if error:
        detail = f"could not be evaluated ({error})"
    else:
        detail = check.explain(result) if check.explain else str(result.get("observed_value"))
    return ExpectationOutcome(
        check=check.key,
        expectation_type=check.expectation,
        column=check.column,
        kwargs=_thresholds(check),
        success=bool(ge_result["success"]),
        observed=observed_value(result),
        description=f"{check.meaning}: {detail}",
        advice=check.advice,
    )


def _skipped(check: Check, why: str) -> ExpectationOutcome:
    return ExpectationOutcome(
        check=check.key,
        expectation_type=check.expectation,
        column=check.column,
        kwargs=_thresholds(check),
        success=True,
        observed=None,
        description=f"{check.meaning}: {why}",
        advice=check.advice,
        skipped=True,
    )


def _thresholds(check: Check) -> dict:
    return {k: v for k, v in check.kwargs.items() if k != "column"}


# ----------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------
def write_outcome(outcome: ValidationOutcome, path: os.PathLike | str) -> Path:
    """Write ``outcome.to_json_dict()`` to ``path`` as strict JSON (NaN -> null), atomically.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(json_safe(outcome.to_json_dict()), indent=2, allow_nan=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
        os.replace(tmp, path)  # readers never see a half-written file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_FAILURES = {
    CALIBRATION_SUITE: (CalibrationCheckError, "calibration set check failed"),
    GATE_SUITE: (GateMetricsCheckError, "gate metrics check failed"),
}


def raise_if_failed(outcome: ValidationOutcome) -> None:
    """Raise when ``outcome`` failed, naming every failed expectation on one line.

    Each failure reads ``<requirement>: <observed> (column `c`) -- <what to do>``, e.g.
    "calibration set check failed: values finite: 3 of 100 images contain NaN or inf (column
    `all_finite`) -- clean the data (drop or fix those images) or choose another calibration
    set."

    Raises
    ------
    CalibrationCheckError
        For :data:`CALIBRATION_SUITE`.
    GateMetricsCheckError
        For :data:`GATE_SUITE`.
    """
    if outcome.success:
        return
    error, title = _FAILURES.get(outcome.suite, (CalibrationCheckError, f"{outcome.suite} check failed"))
    failures = [
        r.description
        + (f" (column `{r.column}`)" if r.column else "")
        + (f" -- {r.advice}" if r.advice else "")
        for r in outcome.results
        if not r.success
    ]
    if not failures:  # GE said no though every expectation held: still say where to look
        failures = ["Great Expectations reported a failure; see the validation result JSON"]
    raise error(f"{title}: " + "; ".join(failures) + ".")


# ----------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    real = isinstance(value, (int, float, np.integer, np.floating))
    return real and not isinstance(value, (bool, np.bool_))


def _length(values: Any) -> int:
    """Number of rows of ``values`` (0 for a scalar), without converting ragged lists."""
    if isinstance(values, (list, tuple)):
        return len(values)
    shape = np.shape(values)
    return int(shape[0]) if shape else 0
