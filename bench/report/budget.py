"""The accuracy budget before the fine-tune: what a larger budget buys, the recovery rungs (their attempts, what
they cost and bought against one rung), the validation-vs-test gap that makes the rungs conservative, and a
simulated early-abandon rule."""

from __future__ import annotations

from typing import Optional

from bench.harness import accepted_bound, budget_of

from bench.report.fmt import drop_vs_control, extras_of, pct, row_of, show, table


def budget_points(compare: dict) -> dict:
    """Per model, the default and its ``lrflow_budget<N>`` rows as ``[(budget points, row)]``, budget ascending.

    The default's budget is the gate (``gate_points``); a row that failed is kept (its status says why).
    """
    out = {}
    for name, c in compare.items():
        points = [(float(c.get("gate_points", 1.0)), r) for r in c["rows"] if r["variant"] == "lrflow"]
        points += [(budget_of(r["variant"]), r) for r in c["rows"] if budget_of(r["variant"]) is not None]
        if len(points) > 1:
            out[name] = sorted(points, key=lambda t: t[0])
    return out


def budget_section(compare: dict) -> list[str]:
    """What a larger accuracy budget before the fine-tune buys: compression against the drop after it."""
    per_model = budget_points(compare)
    if not per_model:
        return []
    rows, best = [], []
    for name, points in per_model.items():
        for budget, r in points:
            rows.append([name, f"{budget:g}", r["status"] if r["status"] != "ok" else "", pct(r["params_kept"]), pct(r["macs_kept"]),
                         show(_bound(r, compare[name]), "{:+.2f}"), show(r["test_drop_no_ft"], "{:+.2f}"),
                         show(r["test_drop"], "{:+.2f}"), show(_val_drop(r, compare[name]), "{:+.2f}"),
                         show(drop_vs_control(r, compare[name]), "{:+.2f}"),
                         "pass" if r["gate_passed"] else ("fail" if r["gate_passed"] is not None else "—")])
        passing = [(b, r) for b, r in points if r["status"] == "ok" and r["gate_passed"]]
        if passing:
            b, r = max(passing, key=lambda t: t[0])
            best.append(f"{name}: {b:g} point(s) (params {pct(r['params_kept'])}, MACs {pct(r['macs_kept'])} kept, "
                        f"drop after fine-tune {r['test_drop']:+.2f})")
        else:
            best.append(f"{name}: none")
    recovery = [recovery_line(name, compare[name]) for name in per_model]
    recovery = [line for line in recovery if line]
    return ["## Accuracy budget before the fine-tune", "",
            "The default checks its budget **before** the fine-tune (the `max_drop` of `lrf_core`, `search.max_drop` in "
            "`params.yaml`); the gate is checked **after** it. The `lrflow_budget<N>` rows give the search an N-point "
            "budget and keep the gate at the same point: how much compression the one-shot fine-tune buys back. "
            "\"bound\" is the 95 % upper bound of the estimated drop the search accepted.", "",
            table(["model", "budget before FT (pt)", "status", "params kept", "MACs kept", "bound (pt)",
                   "drop no-FT (pt)", "drop FT (pt)", "validation drop FT (pt)", "drop FT vs control (pt)", "gate"],
                  rows), "",
            "Largest budget whose child still passes the gate: " + "; ".join(best) + ".", "",
            *_validation_gap_lines(compare),
            *((["`lrflow_recovery` (the recovery budgets fine-tuned in turn, largest first, the first within 1 point "
                "on validation after its fine-tune kept; what `search.recovery_budgets: auto` in `params.yaml` and "
                "`lrf compress --max-drop` do by default):", ""]
               + [f"- {line}" for line in recovery] + [""]) if recovery else []),
            *recovery_cost_lines(compare),
            *abandon_lines(compare)]


#: Margins (points over the acceptance threshold) of the simulated early-abandon rule.
ABANDON_MARGINS = (0.0, 0.5, 1.0)
#: Each recovery variant and the single-budget variant it extends (same search settings, one rung).
RECOVERY_BASE = {"lrflow_recovery": "lrflow", "lrflow_pipeline": "lrflow_guarded"}
RECOVERY_VARIANTS = tuple(RECOVERY_BASE)


def early_abandon(attempts: list[dict], margin: float, after_epoch: int = 1) -> dict:
    """Simulate abandoning a recovery rung after ``after_epoch`` fine-tune epochs when its validation drop then
    exceeds the acceptance threshold (``accept_max_drop``) by more than ``margin`` points.

    Uses the attempts' recorded ``val_drop_by_epoch`` (entry 0 before the fine-tune); attempts without it,
    and the last rung (kept whatever its drop), are never abandoned. Returns ``epochs`` (fine-tune epochs the
    attempts ran), ``saved`` (epochs the rule would have skipped), ``abandoned`` (rungs cut short), ``late``
    (of those, rungs whose fine-tune in fact ended within the threshold: the rule judged them too early) and
    ``lost`` (of the abandoned, rungs that were kept: the rule would have thrown away the child the run shipped).
    """
    epochs = saved = abandoned = late = lost = 0
    for i, a in enumerate(attempts):
        drops = a.get("val_drop_by_epoch") or []
        epochs += max(len(drops) - 1, 0)
        if i == len(attempts) - 1 or len(drops) <= after_epoch + 1 or a.get("accept_max_drop") is None:
            continue
        if drops[after_epoch] > a["accept_max_drop"] + margin:
            abandoned += 1
            saved += len(drops) - 1 - after_epoch
            late += a["val_drop_after_finetune"] <= a["accept_max_drop"]
            lost += bool(a["kept"])
    return {"epochs": epochs, "saved": saved, "abandoned": abandoned, "late": late, "lost": lost}


def _recovery_runs(compare: dict) -> list[tuple[str, str, list[dict]]]:
    """``(model, recovery variant, its attempts)`` for every recovery variant that recorded attempts."""
    return [(m, v, tried) for m, c in compare.items() for v in RECOVERY_VARIANTS
            if (tried := extras_of(c, v).get("recovery"))]


def abandon_lines(compare: dict) -> list[str]:
    """What abandoning refused rungs after their first epoch would have saved, and cost, on the recorded runs."""
    runs = [(m, v, t) for m, v, t in _recovery_runs(compare) if any(a.get("val_drop_by_epoch") for a in t)]
    if not runs:
        return []
    parts = []
    for margin in ABANDON_MARGINS:
        counts = [early_abandon(t, margin) for _, _, t in runs]  # once per run, summed per count
        total = {k: sum(c[k] for c in counts) for k in counts[0]}
        parts.append(f"margin {margin:+.1f} pt: {total['saved']} of {total['epochs']} fine-tune epochs saved, "
                     f"{total['abandoned']} rung(s) cut short, {total['late']} of them within the threshold by the "
                     f"end of their fine-tune, {total['lost']} of them the kept one")
    return ["Abandoning a rung after the first epoch of its fine-tune when its validation drop then exceeds the "
            "acceptance threshold by more than a margin (simulated on the recorded per-epoch drops of "
            + ", ".join(f"{m} {v}" for m, v, _ in runs) + "): " + "; ".join(parts) + ". A kept rung cut short would "
            "have shipped a less compressed child; `lrf_core` does not abandon rungs.", ""]


def recovery_cost_lines(compare: dict) -> list[str]:
    """What the recovery rungs cost (fine-tune time) and bought (compression), against the single-budget variant
    that makes the same search with only the last rung."""
    parts = []
    for m, v, tried in _recovery_runs(compare):
        row, base = row_of(compare[m], v), row_of(compare[m], RECOVERY_BASE[v])
        if not (row and base and row["status"] == base["status"] == "ok" and row.get("finetune_s")
                and base.get("finetune_s")):
            continue
        same_size = (abs(row["params_kept"] - base["params_kept"]) < 1e-4
                     and abs(row["macs_kept"] - base["macs_kept"]) < 1e-4)
        # the same size and the same test accuracy: the same rung's child (the searches are deterministic)
        bought = (("the same child" if row["test_accuracy"] == base["test_accuracy"] else "a child of the same size")
                  if same_size else f"params {pct(row['params_kept'])} kept against {pct(base['params_kept'])}, MACs "
                                    f"{pct(row['macs_kept'])} against {pct(base['macs_kept'])}")
        parts.append(f"{m} {v}: {len(tried)} fine-tune(s) in {row['finetune_s']:.0f} s against "
                     f"{RECOVERY_BASE[v]}'s one in {base['finetune_s']:.0f} s "
                     f"({row['finetune_s'] / base['finetune_s']:.1f}×), for {bought}")
    if not parts:
        return []
    return ["What the recovery rungs cost and bought, against the variant with the same search and one rung: "
            + "; ".join(parts) + ".", ""]


def _val_drop(row: dict, c: dict) -> Optional[float]:
    """A row's final drop on the validation split (points), when the row and its parent record both have it."""
    parent = (c.get("parent") or {}).get("val_accuracy")
    if parent is None or row.get("val_accuracy") is None:
        return None
    return 100 * (parent - row["val_accuracy"])


def validation_gap(compare: dict) -> dict[str, tuple[float, int]]:
    """Per model: mean (validation drop − test drop) after the fine-tune over its fine-tuned children, and their count."""
    gaps = {}
    for name, c in compare.items():
        pairs = [(_val_drop(r, c), r["test_drop"]) for r in c["rows"]
                 if r["status"] == "ok" and r.get("finetuned") and r.get("test_drop") is not None]
        diffs = [v - t for v, t in pairs if v is not None]
        if diffs:
            gaps[name] = (sum(diffs) / len(diffs), len(diffs))
    return gaps


def _validation_gap_lines(compare: dict) -> list[str]:
    """Why the recovery budgets, judged on validation, refuse children the test gate would pass."""
    gaps = validation_gap(compare)
    if not gaps:
        return []
    text = "; ".join(f"{name} {gap:+.2f} pt over {n} children" for name, (gap, n) in gaps.items())
    return ["Validation vs test after the fine-tune, mean (validation drop − test drop): " + text + ". A positive "
            "gap means validation judges fine-tuned children more harshly than the held-out test split; the recovery "
            "budgets accept on validation, so it makes them refuse children the gate would pass. A likely cause, not "
            "established: the zoo's parents were early-stopped (and their rate cut) on this validation split, so the "
            "parent's validation accuracy is the best of its epochs there, and a child the fine-tune moves away from "
            "the parent's weights keeps less of that selection.", ""]


def _bound(row: dict, c: dict) -> Optional[float]:
    """A row's accepted 95 % bound; rows written before it was matched by cost get it from their λ path."""
    if row.get("est_drop_ucb95") is not None or row.get("params_kept") is None:
        return row.get("est_drop_ucb95")
    return accepted_bound(extras_of(c, row["variant"]).get("lambda_path") or [], row["params_kept"])


def recovery_line(name: str, c: dict, variant: str = "lrflow_recovery") -> Optional[str]:
    """One model's recovery attempts (of ``variant``): budget, validation drop after the fine-tune, which was kept,
    the test result."""
    row, tried = row_of(c, variant), extras_of(c, variant).get("recovery")
    if not row or row["status"] != "ok" or not tried:
        return None
    steps = ", ".join(f"{a['max_drop_before_finetune']:g} pt → validation drop {a['val_drop_after_finetune']:+.2f}"
                      f"{_by_epoch(a)}{' **kept**' if a['kept'] else ''}" for a in tried)
    return (f"{name}: {steps}; test drop {show(row['test_drop'], '{:+.2f}')} ({'pass' if row['gate_passed'] else 'fail'}), "
            f"params {pct(row['params_kept'])}, MACs {pct(row['macs_kept'])} kept, "
            f"{len(tried)} fine-tune(s) in {show(row['finetune_s'], '{:.0f}')} s")


def _by_epoch(attempt: dict) -> str:
    """`` (+5.20 untuned → +2.10 → +1.75 by epoch)``: an attempt's validation drop through its fine-tune, when recorded."""
    drops = attempt.get("val_drop_by_epoch")
    if not drops:
        return ""
    return f" ({drops[0]:+.2f} untuned → " + " → ".join(f"{d:+.2f}" for d in drops[1:]) + " by epoch)"
