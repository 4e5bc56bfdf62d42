"""The search's decision as plain data: per layer, the method, rank and factor chain.

The pipeline runs search and rebuild as separate steps, so the chosen chains cross a
process boundary. They are stored as JSON metadata plus named arrays (an ``.npz``), never
pickles: loading a decision cannot run code, and the chain layers are checked against the
standard-layer allow-list again when they are instantiated (:mod:`lrf_core.keras_chain`).
This module converts; the caller reads and writes the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from lrf_core.decompose.base import LayerSpec
from lrf_core.errors import PlanError

__all__ = ["ChosenLayer", "DECISION_SCHEMA", "decision_to_data", "decision_from_data"]

DECISION_SCHEMA = 1


@dataclass(frozen=True)
class ChosenLayer:
    """One replaced layer: what :func:`lrf_core.rebuild.rebuild_model` needs (``specs``)."""

    layer: str
    method: str
    rank: tuple[int, ...]
    specs: tuple[LayerSpec, ...]


def _array_key(layer: str, spec_index: int, weight_index: int) -> str:
    return f"{layer}/{spec_index}/{weight_index}"


def _tuples(value: Any) -> Any:
    """JSON turns tuples into lists; Keras configs (kernel_size, strides, shapes) want tuples."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def decision_to_data(chosen: Mapping[str, Any]) -> tuple[dict, dict[str, np.ndarray]]:
    """``{layer: FittedLayer | ChosenLayer}`` → (JSON-ready metadata, named weight arrays)."""
    layers, arrays = [], {}
    for name, fit in chosen.items():
        specs = []
        for i, spec in enumerate(fit.specs):
            for j, w in enumerate(spec.weights):
                arrays[_array_key(name, i, j)] = np.asarray(w)
            specs.append({"class_name": spec.class_name, "config": dict(spec.config), "weights": len(spec.weights),
                          "macs": int(spec.macs)})
        layers.append({"layer": name, "method": fit.method, "rank": [int(r) for r in fit.rank], "specs": specs})
    return {"schema": DECISION_SCHEMA, "layers": layers}, arrays


def decision_from_data(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> dict[str, ChosenLayer]:
    """Inverse of :func:`decision_to_data`; a malformed decision raises :class:`PlanError`."""
    if meta.get("schema") != DECISION_SCHEMA:
        raise PlanError(f"Decision schema {meta.get('schema')!r} is not {DECISION_SCHEMA}: re-run the search step.")
    chosen = {}
    try:
        for row in meta["layers"]:
            name = row["layer"]
            specs = tuple(
                LayerSpec(s["class_name"], _tuples(s["config"]),
                          tuple(np.asarray(arrays[_array_key(name, i, j)]) for j in range(int(s["weights"]))),
                          int(s["macs"]))
                for i, s in enumerate(row["specs"])
            )
            chosen[name] = ChosenLayer(name, str(row["method"]), tuple(int(r) for r in row["rank"]), specs)
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"The decision file is incomplete ({exc!r} missing or malformed): re-run the search step.") from exc
    return chosen
