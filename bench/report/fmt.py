"""Shared by the report's sections: formatting (numbers, percentages, markdown tables), looking up a variant's
row and extras, and the small per-row quantities several sections print (drop against the control, medians)."""

from __future__ import annotations

import math
from typing import Optional


def show(value, fmt="{:.2f}", none="—"):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    return fmt.format(value)


def pct(value):
    return show(None if value is None else 100 * value, "{:.1f} %")


def rate_at_kept_epoch(parent: dict) -> str:
    """The learning rate the parent's kept weights were trained at, and that epoch (records since the schedule)."""
    rates, kept = parent.get("learning_rates"), parent.get("kept_epoch")
    if not rates or not kept:
        return "—"
    return f"{rates[kept - 1]:.0e} (epoch {kept})"


def met_label(flag: Optional[bool]) -> str:
    return "n/a" if flag is None else ("**met**" if flag else "**not met**")


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def row_of(compare: dict, variant: str) -> Optional[dict]:
    for row in compare["rows"]:
        if row["variant"] == variant:
            return row
    return None



def extras_of(compare: dict, variant: str) -> dict:
    """What the harness kept beside a variant's row (λ path, recovery attempts, latency guard, profile); {} if none."""
    return (compare.get("extras") or {}).get(variant) or {}

def drop_vs_control(row: dict, compare: dict) -> Optional[float]:
    """A fine-tuned child's test drop against the parent fine-tuned the same way (points), else None."""
    control = (compare.get("parent_extra_epochs") or {}).get("test_accuracy")
    if not row.get("finetuned") or control is None or row.get("test_accuracy") is None:
        return None
    return 100 * (control - row["test_accuracy"])


def latency_of(row, key):
    return (row.get("latency") or {}).get(key)


def top_types(cost_by_type: dict, key: str, n: int = 2) -> str:
    total = sum(v[key] for v in cost_by_type.values()) or 1
    ranked = sorted(cost_by_type.items(), key=lambda kv: -kv[1][key])[:n]
    return ", ".join(f"{name} {100 * v[key] / total:.0f} %" for name, v in ranked)


def median(values: list) -> Optional[float]:
    values = sorted(values)
    return values[len(values) // 2] if values else None
