"""Each goal of issue 5 as a row: what was measured, met or not, and what is responsible (from :mod:`bench.report.blame`)."""

from __future__ import annotations

from typing import Optional

from bench.report.blame import (
    block_blame,
    block_short,
    budget_blame,
    phase_blame,
    profile_blame,
    scale_blame,
    sigma_blame,
    sigma_detail,
    sigma_short,
    slow_blame,
    slow_short,
    worst_layer,
)
from bench.report.budget import recovery_line
from bench.report.fmt import extras_of, met_label, row_of, show, table, top_types
from bench.report.targets import GOALS


def _ok_rows(compare: dict, variant: str) -> dict:
    """model → the variant's row, for the models where it ran without error."""
    rows = {m: row_of(c, variant) for m, c in compare.items()}
    return {m: r for m, r in rows.items() if r and r["status"] == "ok"}


def compression_goals(compare: dict, variant: str, label: str) -> list[dict]:
    """The params and MACs goals for one variant over the zoo (empty when it did not run everywhere it was asked)."""
    rows = _ok_rows(compare, variant)
    if not rows:
        return []
    params = [100 * (1 - r["params_kept"]) for r in rows.values()]
    macs = [100 * (1 - r["macs_kept"]) for r in rows.values()]
    gates = all(r["gate_passed"] for r in rows.values())
    avg_p, avg_m = sum(params) / len(params), sum(macs) / len(macs)

    def blame(m: str) -> str:
        return budget_blame(compare[m]) if variant == "lrflow" else (
            "; " + (recovery_line("rungs", compare[m], variant) or "no recovery attempts recorded"))

    where = [f"{m}: params −{100 * (1 - r['params_kept']):.0f} %, MACs −{100 * (1 - r['macs_kept']):.0f} %, "
             f"drop {show(r['test_drop'], '{:+.2f}')} pt, remaining MACs in {top_types(r['cost_by_type'], 'macs')}"
             + blame(m) for m, r in rows.items()]
    best = {}
    for m, c in compare.items():
        passing = [r for r in c["rows"] if r["status"] == "ok" and r["gate_passed"] and r["macs_kept"] is not None]
        if passing:
            best[m] = min(passing, key=lambda r: r["macs_kept"])
    over = f" over {', '.join(rows)}" if len(rows) < len(compare) else ""
    return [{"goal": f"params −90 % avg at ≤ 1.0 point test drop ({label}){over}", "value": f"−{avg_p:.1f} %",
             "met": avg_p >= GOALS["params_reduction_avg"] and gates, "why": where,
             "short": _compression_short(compare, rows, variant)},
            {"goal": f"MACs −70 % avg at ≤ 1.0 point test drop ({label}){over}", "value": f"−{avg_m:.1f} %",
             "met": avg_m >= GOALS["macs_reduction_avg"] and gates,
             "why": [f"{m}: most MACs removed by a gate-passing variant: {b['variant']} (params "
                     f"−{100 * (1 - b['params_kept']):.0f} %, MACs −{100 * (1 - b['macs_kept']):.0f} %)" for m, b in best.items()],
             "short": "best gate-passing variant: " + ", ".join(f"{m} {b['variant']} (MACs −{100 * (1 - b['macs_kept']):.0f} %)"
                                                            for m, b in best.items())}]


def _compression_short(compare: dict, rows: dict, variant: str) -> str:
    """One line for the goals table: where the single budget binds, or which recovery rung each model kept."""
    if variant == "lrflow":
        bound = [m for m in rows if budget_blame(compare[m])]
        return f"the accuracy budget before the fine-tune binds ({', '.join(bound)})" if bound else ""
    kept = []
    for m in rows:
        tried = extras_of(compare[m], variant).get("recovery") or []
        chosen = next((a for a in tried if a["kept"]), None)
        if chosen:
            kept.append(f"{m} the {chosen['max_drop_before_finetune']:g} pt one after {len(tried)} fine-tune(s)")
    return ("rung kept on validation: " + ", ".join(kept)) if kept else ""


def goals(results: dict) -> list[dict]:
    compare, out = results["compare"], []
    # 1. compression at the gate: the single-budget search (CompressConfig's default), and with recovery
    #    budgets (what `recovery_budgets: auto`, the pipeline's and `lrf compress`'s default, resolves to)
    out += compression_goals(compare, "lrflow", "lrflow, one budget")
    out += compression_goals(compare, "lrflow_recovery", "lrflow with recovery budgets 8/4/2, auto's")
    out += compression_goals(compare, "lrflow_pipeline", "the pipeline's default: recovery budgets and latency guard")
    lr = _ok_rows(compare, "lrflow")
    # 2. Σ without fine-tune
    sig_rows, cmp_rows = [], []
    for m, c in compare.items():
        s, f = row_of(c, "sigma@macs50"), row_of(c, "frobenius@macs50")
        if s and s["status"] == "ok":
            sig_rows.append((m, s))
            if f and f["status"] == "ok":
                cmp_rows.append((m, s, f))
    if sig_rows:
        worst = max(sig_rows, key=lambda t: t[1]["test_drop_no_ft"])
        out.append({"goal": "Σ-aware, no fine-tune: ≤ 2 points drop at −50 % MACs", "value": f"worst {worst[1]['test_drop_no_ft']:+.2f} pt ({worst[0]})",
                    "met": all(s["test_drop_no_ft"] <= GOALS["sigma_drop_at_macs50"] for _, s in sig_rows),
                    "why": [sigma_detail(m, s, compare[m]) for m, s in sig_rows],
                    "short": f"largest Σ-error of the worst model's layers: {worst[0]} {worst_layer(worst[1])}"})
    if cmp_rows:
        gains = [(m, f["test_drop_no_ft"] - s["test_drop_no_ft"]) for m, s, f in cmp_rows]
        out.append({"goal": "Σ ≥ 1 point better than Frobenius at equal ranks (no fine-tune, MACs ≤ 50 %)",
                    "value": ", ".join(f"{m} {g:+.2f} pt" for m, g in gains),
                    "met": all(g >= GOALS["sigma_vs_frobenius_points"] for _, g in gains), "why": sigma_blame(compare),
                    "short": sigma_short(compare)})
    # 3. latency
    lat_rows = [(m, r) for m, c in compare.items() for r in c["rows"]
                if r["status"] == "ok" and r.get("latency") and (r["macs_kept"] or 1) < 0.999]
    if lat_rows:
        for key, label in (("speedup_over_macs_ratio_tf_b1", "TF batch 1"), ("speedup_over_macs_ratio_tf_b64", "TF batch 64"),
                           ("speedup_over_macs_ratio_tflite_b1", "TFLite batch 1")):
            vals = [(m, r["variant"], r["latency"][key]) for m, r in lat_rows if r["latency"].get(key) is not None]
            if not vals:
                continue
            ok = sum(v >= GOALS["speedup_over_macs_ratio"] for _, _, v in vals)
            med = sorted(v for _, _, v in vals)[len(vals) // 2]
            out.append({"goal": f"speedup ≥ 0.8 × MACs ratio ({label})", "value": f"{ok}/{len(vals)} compressed children; median ratio {med:.2f}",
                        "met": ok == len(vals), "why": block_blame(compare), "short": block_short(compare)})
        for key, label in (("speedup_tf_b1", "TF batch 1"), ("speedup_tf_b64", "TF batch 64"), ("speedup_tflite_b1", "TFLite batch 1")):
            vals = [(m, r["variant"], r["latency"][key]) for m, r in lat_rows if r["latency"].get(key) is not None]
            if not vals:
                continue
            slower = [(m, v, s) for m, v, s in vals if s < 1.0]
            out.append({"goal": f"no compressed model slower than its parent ({label})",
                        "value": f"{len(slower)}/{len(vals)} slower" + (f"; slowest {min(slower, key=lambda t: t[2])[1]} on {min(slower, key=lambda t: t[2])[0]} ×{min(s for *_, s in slower):.2f}" if slower else ""),
                        "met": not slower, "why": slow_blame(compare, key), "short": slow_short(compare, key)})
    # 4. search time
    if lr:
        vals = {m: r["search_over_epoch"] for m, r in lr.items() if r["search_over_epoch"] is not None}
        why = [f"{m}: {phase_blame(r)}" for m, r in lr.items()]
        full_train = 54000
        scaled = {m: r["search_wall_s"] / (compare[m]["finetune_epoch_s"] * full_train / compare[m]["data"]["train"])
                  for m, r in lr.items() if compare[m]["data"]["train"] < full_train and compare[m].get("finetune_epoch_s")
                  and r["search_wall_s"] is not None}
        if scaled:
            why.append("against a full-data epoch (this epoch × 54 000 / training images, rough): "
                       + ", ".join(f"{m} {v:.2f}×" for m, v in scaled.items()))
        if vals:
            out.append({"goal": "search (calibration + selection) ≤ one fine-tune epoch (lrflow default)",
                        "value": ", ".join(f"{m} {v:.1f}×" for m, v in vals.items()),
                        "met": all(v <= GOALS["search_over_epoch"] for v in vals.values()),
                        "why": why + profile_blame(compare),
                        "short": "largest phase: " + ", ".join(f"{m} {phase_blame(r, top=1)}" for m, r in lr.items())})
    # 5. ResNet-50
    scale = results.get("scale")
    if scale:
        for run in scale["runs"]:
            wall = run.get("search_wall_s")
            rss = run.get("peak_rss_mb")
            capped = run.get("status") in ("capped", "failed")
            progress = run.get("progress") or {}
            value = (f"capped at {scale['cap_s']:.0f} s in phase {progress.get('phase')} "
                     f"({progress.get('done')}/{progress.get('total')})" if capped else f"{show(wall, '{:.0f}')} s")
            out.append({"goal": f"ResNet-50 search ≤ 10 min ({run['config']})", "value": value,
                        "met": (not capped) and wall is not None and wall <= GOALS["resnet50_search_s"],
                        "why": [], "short": scale_blame(run)})
            out.append({"goal": f"ResNet-50 peak RSS ≤ 8 GB ({run['config']})",
                        "value": f"{show(None if rss is None else rss / 1024, '{:.2f}')} GB" + (" (until the cap)" if capped else ""),
                        # a capped run under the limit says nothing about the rest of the search: n/a
                        "met": _rss_met(rss, capped), "why": [], "short": ""})
    return out


def _rss_met(rss_mb: Optional[float], capped: bool) -> Optional[bool]:
    if rss_mb is None:
        return None if capped else False
    within = rss_mb / 1024 <= GOALS["resnet50_peak_rss_gb"]
    return None if capped and within else within


def goals_section(goal_rows: list[dict]) -> list[str]:
    """The goals table (one line of blame each), then each goal's blame in full, one bullet per model or
    cause; a goal whose details repeat an earlier goal's points back to it."""
    ids = [f"G{i}" for i in range(1, len(goal_rows) + 1)]
    lines = ["## Goals", "", table(["", "goal", "measured", "status", "responsible (in short; in full below)"],
                                   [[i, g["goal"], g["value"], met_label(g["met"]), g["short"]] for i, g in zip(ids, goal_rows)]), ""]
    detailed = [(i, g) for i, g in zip(ids, goal_rows) if g["why"]]
    if not detailed:
        return lines
    lines += ["### Where each goal goes", ""]
    seen: dict[tuple, str] = {}
    for i, g in detailed:
        lines += [f"**{i}. {g['goal']}**: {g['value']}, {met_label(g['met'])}.", ""]
        first = seen.setdefault(tuple(g["why"]), i)
        lines += ([f"- as for {first}."] if first != i else [f"- {part}" for part in g["why"]]) + [""]
    return lines

