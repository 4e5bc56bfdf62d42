"""Words and JSON values for Great Expectations results (plain dicts in, text out; no GE).

GE returns one ``result`` dict per expectation, shaped by the expectation kind (SUMMARY
format): per-row expectations report ``unexpected_count`` / ``element_count`` /
``partial_unexpected_list`` (at most 20 examples), aggregate ones an ``observed_value``,
set-containment ones a ``partial_missing_list``. These helpers turn that into the
observation half of a one-line description ("3 of 100 images contain NaN or inf") and a
JSON-friendly observed value.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "observed_value",
    "exception_message",
    "rows_text",
    "range_text",
    "missing_classes_text",
    "class_count_text",
    "duplicates_text",
    "number_text",
    "json_safe",
]


def observed_value(result: Mapping[str, Any]) -> Any:
    """The JSON-friendly observation in one GE ``result`` dict.

    ``{"unexpected_count", "element_count", "examples"}`` for per-row expectations,
    ``{"missing": [...]}`` for set containment, else GE's ``observed_value`` (a number, or
    None when it could not be computed).
    """
    if "unexpected_count" in result:
        return {
            "unexpected_count": int(result["unexpected_count"]),
            "element_count": int(result.get("element_count", 0)),
            "examples": distinct(result.get("partial_unexpected_list") or []),
        }
    if "partial_missing_list" in result:
        return {"missing": list(result["partial_missing_list"])}
    return json_safe(result.get("observed_value"))


def exception_message(info: Mapping[str, Any]) -> str:
    """GE's error text, or "" when the expectation was evaluated.

    GE stores an expectation's own error flat (``raised_exception``, ``exception_message``)
    but a failed metric (e.g. a missing column) under the metric's id.
    """
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    nested = [
        v.get("exception_message")
        for v in info.values()
        if isinstance(v, Mapping) and v.get("raised_exception")
    ]
    return "; ".join(str(m) for m in dict.fromkeys(nested))


def distinct(values: Sequence[Any], limit: int = 5) -> list:
    """First ``limit`` distinct values, JSON-friendly (anything unusual becomes text)."""
    plain = (json_safe(v) if isinstance(v, (float, int, bool, str, type(None))) else str(v) for v in values)
    return list(dict.fromkeys(plain))[:limit]


def rows_text(result: Mapping[str, Any], noun: str, verb: str, when_ok: str, *, examples: bool = True) -> str:
    """``"3 of 100 images have shape (28, 28, 1)"``, or ``when_ok`` when no row failed."""
    bad = int(result.get("unexpected_count", 0))
    total = int(result.get("element_count", 0))
    if not bad:
        return when_ok if total else f"no {noun}"
    shown = ", ".join(str(v) for v in distinct(result.get("partial_unexpected_list") or []))
    return f"{bad} of {total} {noun} {verb}" + (f" {shown}" if examples and shown else "")


def range_text(
    result: Mapping[str, Any], column: pd.Series, verb: str, extreme: str, reduce: Callable
) -> str:
    """``"2 of 100 images go below 0, lowest value -0.5"``; the extreme comes from the frame
    (GE's examples are capped at 20, the frame has every image)."""
    values = column.dropna()
    if values.empty:
        return "no finite values"
    bad = int(result.get("unexpected_count", 0))
    prefix = f"{bad} of {int(result.get('element_count', 0))} images {verb}, " if bad else ""
    return f"{prefix}{extreme} value {float(reduce(values)):g}"


def missing_classes_text(result: Mapping[str, Any]) -> str:
    """``"class 7 has no examples"`` from ``partial_missing_list``."""
    missing = list(result.get("partial_missing_list") or [])
    if not missing:
        return "all present"
    if len(missing) == 1:
        return f"class {missing[0]} has no examples"
    return f"classes {', '.join(str(m) for m in missing)} have no examples"


def class_count_text(frame: pd.DataFrame, min_per_class: int) -> str:
    """``"class 7 has 2, class 3 has 4"`` (smallest first), from the frame's ``class_count``.

    GE reports the failing *rows*; the classes they belong to are read from the frame.
    """
    counts = frame.dropna(subset=["class_count"]).groupby("label")["class_count"].first()
    if counts.empty:
        return "no valid labels"
    low = counts[counts < min_per_class].sort_values()
    if low.empty:
        return f"smallest class has {int(counts.min())}"
    return ", ".join(f"class {label} has {int(n)}" for label, n in low.items())


def duplicates_text(frame: pd.DataFrame) -> str:
    """``"40 of 100 images (40.0%) repeat an earlier image"``, from ``content_hash``."""
    hashes = frame["content_hash"].dropna()
    if hashes.empty:
        return "no images"
    copies = len(hashes) - hashes.nunique()
    return f"{copies} of {len(hashes)} images ({copies / len(hashes):.1%}) repeat an earlier image"


def number_text(result: Mapping[str, Any]) -> str:
    """``"observed 1.5"`` from an aggregate expectation's ``observed_value``."""
    value = result.get("observed_value")
    return "observed no finite value" if value is None else f"observed {float(value):g}"


def json_safe(value: Any) -> Any:
    """``value`` with NumPy scalars made Python and NaN/inf made None, recursively, so that
    ``json.dumps(..., allow_nan=False)`` accepts it."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
