"""A compression plan: which layers to factorize, by which method, at which rank.

The JSON form (``lrf rebuild --plan``) maps a layer name to
``{"method": "tucker2", "rank": [8, 16]}``; ``rank`` is an int, a list for multi-rank
methods, or ``"full"``. :func:`parse_plan` validates it against the model up front, so
every problem is reported before any fitting starts.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Mapping

from lrf_core.decompose.base import check_rank_tuple
from lrf_core.decompose.registry import get_method
from lrf_core.errors import MethodNotApplicableError, PlanError
from lrf_core.graph import ModelSummary

__all__ = ["LayerPlan", "Plan", "parse_plan"]

ENTRY_KEYS = frozenset({"method", "rank"})


@dataclass(frozen=True)
class LayerPlan:
    """One planned layer: resolved method id and rank tuple."""

    layer: str
    method: str
    rank: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    """Validated plan, in the model's layer order."""

    layers: tuple[LayerPlan, ...]

    def __post_init__(self) -> None:
        names = [p.layer for p in self.layers]
        if len(set(names)) != len(names):
            raise PlanError(f"A plan names each layer once. Repeated: {sorted({n for n in names if names.count(n) > 1})}.")

    def as_dict(self) -> dict:
        return {p.layer: {"method": p.method, "rank": list(p.rank)} for p in self.layers}


def _resolve_rank(value: Any, layer: str, method_id: str, limits: tuple[int, ...], names: tuple[str, ...]):
    if value == "full":
        return limits
    if isinstance(value, bool) or not isinstance(value, (int, list, tuple)):
        raise PlanError(
            f"Plan entry for layer `{layer}`: `rank` must be an int, a list of ints or \"full\". "
            f"Received: {value!r}."
        )
    rank = (value,) if isinstance(value, int) else tuple(value)
    if any(isinstance(r, bool) or not isinstance(r, int) for r in rank):
        raise PlanError(f"Plan entry for layer `{layer}`: rank entries must be integers. Received: {value!r}.")
    return check_rank_tuple(method_id, rank, limits, names, layer=layer)


def parse_plan(raw: Mapping[str, Any], summary: ModelSummary) -> Plan:
    """Validate a plan mapping against a model summary (see module docstring)."""
    if not isinstance(raw, Mapping) or not raw:
        raise PlanError(
            "A plan is a non-empty JSON object mapping layer names to "
            '{"method": ..., "rank": ...}. Received: ' + (type(raw).__name__ if raw else "an empty plan") + "."
        )
    entries = {}
    for layer, entry in raw.items():
        if layer not in summary.names:
            close = difflib.get_close_matches(str(layer), summary.names, n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else " Run `lrf inspect MODEL` to list them."
            raise PlanError(f"Plan names layer `{layer}`, which model `{summary.name}` does not have.{hint}")
        if not isinstance(entry, Mapping):
            raise PlanError(f"Plan entry for layer `{layer}` must be an object with `method` and `rank`. Received: {entry!r}.")
        unknown = set(entry) - ENTRY_KEYS
        missing = ENTRY_KEYS - set(entry)
        if unknown or missing:
            problem = f"unknown keys {sorted(unknown)}" if unknown else f"missing keys {sorted(missing)}"
            raise PlanError(f"Plan entry for layer `{layer}` has {problem}: expected exactly `method` and `rank`.")
        record = summary.record(layer)
        if record.geometry is None:
            raise MethodNotApplicableError(
                f"Layer `{layer}` ({record.class_name}) cannot be factorized: {record.skip_reason}."
            )
        method = get_method(record.geometry.kind, str(entry["method"]))
        reason = method.not_applicable(record.geometry)
        if reason:
            raise MethodNotApplicableError(f"Method `{method.id}` does not apply to layer `{layer}`: {reason}.")
        rank = _resolve_rank(entry["rank"], layer, method.id, method.max_rank(record.geometry), method.rank_names)
        entries[layer] = LayerPlan(layer, method.id, rank)
    return Plan(tuple(entries[n] for n in summary.names if n in entries))
