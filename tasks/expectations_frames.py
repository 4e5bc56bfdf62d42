"""Tables that the Great Expectations suites check (NumPy and pandas only, no GE).

GE validates tables, so each suite first turns its input into a frame:

* :func:`calibration_frame`: one row per example of a calibration set;
* :func:`metrics_frame`: one row holding the gate metrics.

The frame is built from whatever ``x`` and ``y`` hold, even when they are unusable
(wrong shape, wrong dtype, NaN, unequal lengths, empty): every such defect becomes a value
that an expectation rejects, never an exception here.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

__all__ = ["CALIBRATION_COLUMNS", "calibration_frame", "metrics_frame", "shape_text", "shape_pattern"]

#: Columns of :func:`calibration_frame`, one row per example.
CALIBRATION_COLUMNS = (
    "row",  # position in x / y
    "label",  # y[row]: int when integral, float when not, "nan"/"inf"/text otherwise; None if absent
    "paired",  # True when the row has both an image x[row] and a label y[row]
    "sample_shape",  # shape of x[row] as text, "(8, 8, 1)"; None if there is no image
    "dtype",  # dtype of x as text, "float32"
    "all_finite",  # no NaN or inf in x[row]
    "pixel_min",  # smallest finite value of x[row] (NaN when it has none)
    "pixel_max",  # largest finite value of x[row]
    "content_hash",  # blake2b of x[row]'s bytes: equal hashes are exact duplicates
    "class_count",  # examples whose label equals this row's valid label (NaN if label invalid)
)


def shape_text(shape: Sequence[Optional[int]]) -> str:
    """A shape as Python prints a tuple: ``(8, 8, 1)``, ``(64,)``, ``(None, None, 3)``."""
    return str(tuple(None if d is None else int(d) for d in shape))


def shape_pattern(shape: Sequence[Optional[int]]) -> str:
    """Regex matching :func:`shape_text` of shapes that fit ``shape`` (``None`` = any size)."""
    parts = [r"\d+" if d is None else str(int(d)) for d in shape]
    inner = ", ".join(parts) + ("," if len(parts) == 1 else "")
    return r"^\(" + inner + r"\)$"


def calibration_frame(x: Any, y: Any, *, num_classes: int) -> pd.DataFrame:
    """One row per example of ``(x, y)``, with the columns in :data:`CALIBRATION_COLUMNS`.

    Parameters
    ----------
    x : array-like, ``(N, ...)``
        Images; any dtype and shape. A 0-d ``x`` counts as no images.
    y : array-like, ``(M,)``
        Labels. Rows ``min(N, M)`` and beyond are unpaired (``paired`` False).
    num_classes : int
        Labels in ``[0, num_classes)`` count as valid for ``class_count``.

    Returns
    -------
    DataFrame
        ``max(N, M)`` rows (zero for an empty set, with every column present).
    """
    x = _as_array(x)
    y = _as_array(y)
    n_x = x.shape[0] if x.ndim else 0
    n_y = y.shape[0] if y.ndim else 0
    n = max(n_x, n_y)
    image = _image_columns(x if x.ndim else np.empty((0,), dtype=x.dtype), n)
    labels = [_label_value(y[i]) if i < n_y else None for i in range(n)]
    frame = pd.DataFrame(
        {
            "row": np.arange(n, dtype=np.int64),
            "label": pd.Series(labels, dtype=object),
            "paired": np.arange(n) < min(n_x, n_y),
            **image,
            "class_count": _class_counts(labels, num_classes),
        }
    )
    return frame[list(CALIBRATION_COLUMNS)]


def metrics_frame(metrics: Mapping[str, float]) -> pd.DataFrame:
    """One row, one float column per metric (non-finite values become NaN, i.e. missing)."""
    row = {str(k): [_float_or_nan(v)] for k, v in metrics.items()}
    return pd.DataFrame(row, dtype=np.float64)


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------
def _as_array(values: Any) -> np.ndarray:
    try:
        return np.asarray(values)
    except ValueError:  # ragged nesting: keep one object per example
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
        return array


def _image_columns(x: np.ndarray, n: int) -> dict:
    """Per-image columns for rows ``[0, len(x))``, padded with missing values up to ``n``."""
    n_x = x.shape[0]
    shapes = [shape_text(np.shape(x[i]) if x.dtype == object else x.shape[1:]) for i in range(n_x)]
    hashes = [_content_hash(x[i]) for i in range(n_x)]
    if x.dtype.kind in "biuf" and n_x:
        flat = x.reshape(n_x, -1).astype(np.float64)
        finite = np.isfinite(flat)
        # min/max over the finite values only, so the range checks stay separate from the
        # finiteness check (an image with one NaN still has a meaningful range).
        with np.errstate(invalid="ignore"):
            low = np.where(finite, flat, np.inf).min(axis=1, initial=np.inf)
            high = np.where(finite, flat, -np.inf).max(axis=1, initial=-np.inf)
        all_finite = finite.all(axis=1).tolist()
        low = np.where(np.isfinite(low), low, np.nan)
        high = np.where(np.isfinite(high), high, np.nan)
    else:  # not numbers: cannot be finite, has no range
        all_finite = [False] * n_x
        low = high = np.full(n_x, np.nan)
    pad = [None] * (n - n_x)
    return {
        "sample_shape": pd.Series(shapes + pad, dtype=object),
        "dtype": pd.Series([str(x.dtype)] * n_x + pad, dtype=object),
        "all_finite": pd.Series(all_finite + pad, dtype=object),
        "pixel_min": np.concatenate([low, np.full(n - n_x, np.nan)]),
        "pixel_max": np.concatenate([high, np.full(n - n_x, np.nan)]),
        "content_hash": pd.Series(hashes + pad, dtype=object),
    }


def _content_hash(image: Any) -> str:
    array = np.asarray(image)
    if array.dtype == object:  # bytes of an object array are pointers: hash the values
        data = repr(array.tolist()).encode()
    else:
        data = f"{array.dtype.str}{array.shape}".encode() + np.ascontiguousarray(array).tobytes()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _label_value(value: Any) -> Any:
    """A JSON-friendly label: int if integral, float if not, text for anything else."""
    if isinstance(value, np.ndarray) and value.ndim:  # e.g. one-hot rows
        return str(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return str(value)  # "nan" / "inf": visible to in_set, unlike a null
        return int(value) if value.is_integer() else value
    return str(value)


def _class_counts(labels: list, num_classes: int) -> np.ndarray:
    """For each row, how many rows share its label; NaN where the label is not valid."""
    valid = [lab if isinstance(lab, int) and 0 <= lab < num_classes else None for lab in labels]
    present = np.asarray([lab for lab in valid if lab is not None], dtype=np.int64)
    counts = np.bincount(present, minlength=max(num_classes, 0))
    return np.array([np.nan if lab is None else float(counts[lab]) for lab in valid], dtype=np.float64)


def _float_or_nan(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan
