"""Apply a plan to a model: calibrate, fit every planned layer, rebuild, report (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import keras
import numpy as np

from lrf_core import __version__
from lrf_core.calibration import collect_statistics
from lrf_core.decompose.registry import get_method
from lrf_core.errors import DataError
from lrf_core.factorize import FittedLayer, Objective, fit_layer
from lrf_core.graph import describe_model, kernel_and_bias, model_cost
from lrf_core.plan import parse_plan
from lrf_core.rebuild import rebuild_model

__all__ = ["RebuildResult", "apply_plan"]


@dataclass(frozen=True)
class RebuildResult:
    """The rebuilt model, the fitted layers, and the report (a JSON-ready dict)."""

    model: keras.Model
    fitted: tuple[FittedLayer, ...]
    report: dict


def apply_plan(
    model: keras.Model,
    plan: Mapping[str, Any],
    *,
    calibration: Optional[np.ndarray] = None,
    objective: Optional[Objective] = None,
    seed: int = 0,
    on_batch: Optional[Callable[[int, int], None]] = None,
) -> RebuildResult:
    """Factorize the planned layers of ``model`` and rebuild it.

    Parameters
    ----------
    plan : raw plan mapping (see :mod:`lrf_core.plan`); validated before any work
    calibration : model inputs ``(N, ...)`` for Σ statistics; needed by ``objective="sigma"``
    objective : ``"sigma"`` or ``"frobenius"``; default ``"sigma"`` when calibration data is
        given, else ``"frobenius"``
    """
    summary = describe_model(model)
    parsed = parse_plan(plan, summary)
    if objective is None:
        objective = "sigma" if calibration is not None else "frobenius"
    if objective == "sigma" and calibration is None:
        raise DataError("--objective sigma needs calibration data: pass --data URI (e.g. sklearn:digits).")
    names = [p.layer for p in parsed.layers]
    stats = collect_statistics(model, calibration, names, on_batch=on_batch) if calibration is not None else {}
    fitted = []
    for entry in parsed.layers:
        layer = model.get_layer(entry.layer)
        record = summary.record(entry.layer)
        kernel, bias = kernel_and_bias(layer)
        method = get_method(record.geometry.kind, entry.method)
        fitted.append(
            fit_layer(
                entry.layer, kernel, bias, record.geometry, method, entry.rank,
                stats=stats.get(entry.layer), objective=objective, seed=seed,
            )
        )
    child = rebuild_model(model, {f.layer: f for f in fitted})
    before, after = model_cost(model), model_cost(child)
    report = {
        "lrflow_version": __version__,
        "model": model.name,
        "objective": objective,
        "seed": seed,
        "calibration_examples": int(len(calibration)) if calibration is not None else 0,
        "layers": [f.as_dict() for f in fitted],
        "total": {
            "params_before": before.params,
            "params_after": after.params,
            "macs_before": before.macs,
            "macs_after": after.macs,
            "params_kept": after.params / before.params if before.params else 1.0,
            "macs_kept": after.macs / before.macs if before.macs else 1.0,
        },
    }
    return RebuildResult(model=child, fitted=tuple(fitted), report=report)
