"""Render ``REPORT.md`` and its PNG plots from the result files alone (issue 5).

``python -m bench.report [--results DIR] [--out REPORT.md]`` reads ``DIR/zoo.json``,
``DIR/compare_*.json``, ``DIR/depth_sweep.json``, ``DIR/scale_resnet50.json`` and
``DIR/dask_search.json`` (any may be missing), and writes the report with its figures in ``<out dir>/figures[-MODE]/``:

* ``pareto_<model>.png``: test accuracy against MACs kept, every variant, before (hollow) and
  after (filled) its fine-tune, the parent and the 1-point gate, the front of final points;
* ``latency.png``: measured speedup against the MACs ratio (TF batch 1, TF batch 64, TFLite
  batch 1), with the ``speedup = MACs ratio`` and ``0.8 ×`` lines;
* ``depth.png``: search time per phase against the number of eligible layers.

Every goal of the issue is stated as met or not met with its figure, and where one is missed
the report names the phase or layer type responsible (from the per-phase timings, the cProfile
of the default search, the per-layer block timings and the remaining cost per layer type).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Optional

from bench.common import BENCH, RESULTS_DIR
from bench.harness import accepted_bound, budget_of

GOALS = {
    "params_reduction_avg": 90.0, "macs_reduction_avg": 70.0, "sigma_drop_at_macs50": 2.0,
    "sigma_vs_frobenius_points": 1.0, "speedup_over_macs_ratio": 0.8, "search_over_epoch": 1.0,
    "resnet50_search_s": 600.0, "resnet50_peak_rss_gb": 8.0,
}
#: The zoo's models in report order (bench.harness.MODES["full"].models); any other model follows.
ZOO_ORDER = ("fashion_vgg", "fashion_resnet", "fashion_mobilenetv2")
#: Other processes' average busy cores during a variant above which its timings are flagged.
CONTENTION_CORES = 0.3
FAMILY_COLORS = {"lrflow": "#d62728", "budget": "#e377c2", "selection": "#ff7f0e", "uniform": "#1f77b4", "objective": "#2ca02c",
                 "baseline": "#9467bd", "error": "#7f7f7f"}


# -- loading ------------------------------------------------------------------------------------


#: Result files a full run may not have yet; the report then shows the quick run's, labelled as such.
FALLBACK_FILES = ("depth_sweep.json", "dask_search.json")


def load_results(directory: Path, fallback: Optional[Path] = None) -> dict:
    """Every result file of ``directory``; a file of :data:`FALLBACK_FILES` missing there is read from
    ``fallback`` (the quick run's directory) and marked with ``"_from": <its path>``."""
    directory = Path(directory)

    def read(name):
        path = directory / name
        if not path.exists() and fallback is not None and name in FALLBACK_FILES:
            path = Path(fallback) / name
            return {**json.loads(path.read_text()), "_from": _rel(path)} if path.exists() else None
        return json.loads(path.read_text()) if path.exists() else None

    compare = {}
    for path in sorted(directory.glob("compare_*.json")):
        data = json.loads(path.read_text())
        compare[data["model"]] = data
    compare = dict(sorted(compare.items(), key=lambda kv: (ZOO_ORDER.index(kv[0]) if kv[0] in ZOO_ORDER else len(ZOO_ORDER),
                                                           kv[0])))
    return {"zoo": read("zoo.json"), "compare": compare, "depth": read("depth_sweep.json"),
            "scale": read("scale_resnet50.json"), "dask": read("dask_search.json")}


# -- formatting ---------------------------------------------------------------------------------


def _f(value, fmt="{:.2f}", none="—"):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    return fmt.format(value)


def _pct(value):
    return _f(None if value is None else 100 * value, "{:.1f} %")


def _rate_at_kept_epoch(parent: dict) -> str:
    """The learning rate the parent's kept weights were trained at, and that epoch (records since the schedule)."""
    rates, kept = parent.get("learning_rates"), parent.get("kept_epoch")
    if not rates or not kept:
        return "—"
    return f"{rates[kept - 1]:.0e} (epoch {kept})"


def _met(flag: Optional[bool]) -> str:
    return "n/a" if flag is None else ("**met**" if flag else "**not met**")


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _row(compare: dict, variant: str) -> Optional[dict]:
    for row in compare["rows"]:
        if row["variant"] == variant:
            return row
    return None


def _drop_vs_control(row: dict, compare: dict) -> Optional[float]:
    """A fine-tuned child's test drop against the parent fine-tuned the same way (points), else None."""
    control = (compare.get("parent_extra_epochs") or {}).get("test_accuracy")
    if not row.get("finetuned") or control is None or row.get("test_accuracy") is None:
        return None
    return 100 * (control - row["test_accuracy"])


def _lat(row, key):
    return (row.get("latency") or {}).get(key)


# -- plots --------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    """Lay out, write ``path`` (creating its folder) and free the figure."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_pareto(compare: dict, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    parent = compare["parent"]["test_accuracy"] * 100
    ax.axhline(parent, color="k", lw=1, label=f"parent {parent:.2f} %")
    ax.axhline(parent - compare["gate_points"], color="k", lw=1, ls="--", label="gate (−1 point)")
    extra = compare.get("parent_extra_epochs") or {}
    if extra.get("test_accuracy") is not None:
        ax.axhline(100 * extra["test_accuracy"], color="grey", lw=1, ls=":", label="parent + same extra epochs")
    points = [r for r in compare["rows"] if r["status"] == "ok" and r["macs_kept"] is not None]
    finals = [(100 * r["macs_kept"], 100 * r["test_accuracy"]) for r in points]
    floor = parent - 25  # the axis stops here; lower points are drawn on the edge with their value
    low = max(min([y for _, y in finals] + [parent - 3]) - 1, floor)
    top = max(parent + 3, max((y for _, y in finals), default=parent) + 1)

    def clip(y):
        return max(y, low)

    for row in points:
        color = FAMILY_COLORS.get(row["family"], "#7f7f7f")
        x, y = 100 * row["macs_kept"], 100 * row["test_accuracy"]
        if row["test_accuracy_no_ft"] is not None and row["finetuned"]:
            y0 = 100 * row["test_accuracy_no_ft"]
            ax.scatter(x, clip(y0), facecolors="none", edgecolors=color, s=40, marker="o" if y0 >= low else "v")
            ax.plot([x, x], [clip(y0), clip(y)], color=color, lw=0.6, alpha=0.6)
        marker = "s" if row["family"] == "objective" and row["objective"] == "frobenius" else "o"
        ax.scatter(x, clip(y), color=color, marker=marker if y >= low else "v", s=50, zorder=3)
        label = row["variant"] if y >= low else f"{row['variant']} ({y:.1f} %)"
        ax.annotate(label, (x, clip(y)), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front, best = [], -1.0
    for x, y in sorted(finals, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    if front:
        ax.step([p[0] for p in front] + [105], [clip(p[1]) for p in front] + [clip(front[-1][1])], where="post",
                color="#444", lw=0.8, alpha=0.7, label="front of final points")
    ax.set_ylim(low - 0.5, top)
    ax.set_xlim(0, 105)
    ax.set_xlabel("MACs kept (% of parent)")
    ax.set_ylabel("test top-1 accuracy (%)")
    for family, color in FAMILY_COLORS.items():
        if family != "error":
            ax.scatter([], [], color=color, label=family)
    ax.scatter([], [], facecolors="none", edgecolors="k", label="before fine-tune")
    ax.scatter([], [], color="k", marker="s", label="Frobenius fit (no fine-tune)")
    ax.set_title(f"{compare['model']}: accuracy vs MACs ({compare['mode']} mode)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def plot_latency(compare: dict, path: Path) -> Optional[Path]:
    plt = _plt()
    panels = (("tf_b1", "speedup_vs_control_tf_b1", "TF tf.function, batch 1"),
              ("tf_b64", "speedup_vs_control_tf_b64", "TF tf.function, batch 64"),
              ("tflite_b1", "speedup_tflite_b1", "TFLite interpreter, batch 1"))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
    markers = "osD^v<>"
    any_point = False
    top = 2.0
    for ax, (_, key, title) in zip(axes, panels):
        for i, (model, data) in enumerate(compare.items()):
            xs, ys = [], []
            for row in data["rows"]:
                ratio, speed = _lat(row, "macs_ratio"), _lat(row, key)
                if ratio and speed:
                    xs.append(ratio)
                    ys.append(speed)
            if xs:
                any_point = True
                top = max(top, max(xs) * 1.1, max(ys) * 1.1)
                ax.scatter(xs, ys, marker=markers[i % len(markers)], label=model, alpha=0.8)
        ax.plot([0.9, top], [0.9, top], color="k", lw=0.8, label="speedup = MACs ratio")
        ax.plot([0.9, top], [0.72, 0.8 * top], color="k", lw=0.8, ls="--", label="0.8 × MACs ratio")
        ax.axhline(1.0, color="r", lw=0.8, ls=":", label="parent speed")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("MACs ratio (parent / child), log")
        ax.set_ylabel("measured speedup, log")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    if not any_point:
        plt.close(fig)
        return None
    axes[0].legend(fontsize=7)
    return _save(plt, fig, path)


def plot_depth(depth: dict, path: Path) -> Optional[Path]:
    rows = [r for r in depth["rows"] if r.get("phases_s")]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    xs = [r["eligible_layers"] for r in rows]
    bottom = [0.0] * len(rows)
    for phase in ("calibration", "candidates", "allocation", "refit"):
        ys = [r["phases_s"].get(phase, 0.0) for r in rows]
        ax.bar([str(x) for x in xs], ys, bottom=bottom, label=phase)
        bottom = [b + y for b, y in zip(bottom, ys)]
    ax.plot([str(x) for x in xs], [r["search_wall_s"] for r in rows], "k.-", label="search wall time")
    ax.set_xlabel("eligible layers (ResNet-style, 1… blocks per stage)")
    ax.set_ylabel("seconds")
    ax.set_title(f"search time vs depth ({depth['mode']} mode)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(plt, fig, path)


# -- goals --------------------------------------------------------------------------------------


def _top_types(cost_by_type: dict, key: str, n: int = 2) -> str:
    total = sum(v[key] for v in cost_by_type.values()) or 1
    ranked = sorted(cost_by_type.items(), key=lambda kv: -kv[1][key])[:n]
    return ", ".join(f"{name} {100 * v[key] / total:.0f} %" for name, v in ranked)


def _ok_rows(compare: dict, variant: str) -> dict:
    """model → the variant's row, for the models where it ran without error."""
    rows = {m: _row(c, variant) for m, c in compare.items()}
    return {m: r for m, r in rows.items() if r and r["status"] == "ok"}


def _compression_goals(compare: dict, variant: str, label: str) -> list[dict]:
    """The params and MACs goals for one variant over the zoo (empty when it did not run everywhere it was asked)."""
    rows = _ok_rows(compare, variant)
    if not rows:
        return []
    params = [100 * (1 - r["params_kept"]) for r in rows.values()]
    macs = [100 * (1 - r["macs_kept"]) for r in rows.values()]
    gates = all(r["gate_passed"] for r in rows.values())
    avg_p, avg_m = sum(params) / len(params), sum(macs) / len(macs)

    def blame(m: str) -> str:
        return _budget_blame(compare[m]) if variant == "lrflow" else (
            "; " + (_recovery_line("rungs", compare[m], variant) or "no recovery attempts recorded"))

    where = [f"{m}: params −{100 * (1 - r['params_kept']):.0f} %, MACs −{100 * (1 - r['macs_kept']):.0f} %, "
             f"drop {_f(r['test_drop'], '{:+.2f}')} pt, remaining MACs in {_top_types(r['cost_by_type'], 'macs')}"
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
        bound = [m for m in rows if _budget_blame(compare[m])]
        return f"the accuracy budget before the fine-tune binds ({', '.join(bound)})" if bound else ""
    kept = []
    for m in rows:
        tried = ((compare[m].get("extras") or {}).get(variant) or {}).get("recovery") or []
        chosen = next((a for a in tried if a["kept"]), None)
        if chosen:
            kept.append(f"{m} the {chosen['max_drop_before_finetune']:g} pt one after {len(tried)} fine-tune(s)")
    return ("rung kept on validation: " + ", ".join(kept)) if kept else ""


def goals(results: dict) -> list[dict]:
    compare, out = results["compare"], []
    # 1. compression at the gate: the single-budget search (CompressConfig's default), and with recovery
    #    budgets (what `recovery_budgets: auto`, the pipeline's and `lrf compress`'s default, resolves to)
    out += _compression_goals(compare, "lrflow", "lrflow, one budget")
    out += _compression_goals(compare, "lrflow_recovery", "lrflow with recovery budgets 8/4/2, auto's")
    out += _compression_goals(compare, "lrflow_pipeline", "the pipeline's default: recovery budgets and latency guard")
    lr = _ok_rows(compare, "lrflow")
    # 2. Σ without fine-tune
    sig_rows, cmp_rows = [], []
    for m, c in compare.items():
        s, f = _row(c, "sigma@macs50"), _row(c, "frobenius@macs50")
        if s and s["status"] == "ok":
            sig_rows.append((m, s))
            if f and f["status"] == "ok":
                cmp_rows.append((m, s, f))
    if sig_rows:
        worst = max(sig_rows, key=lambda t: t[1]["test_drop_no_ft"])
        out.append({"goal": "Σ-aware, no fine-tune: ≤ 2 points drop at −50 % MACs", "value": f"worst {worst[1]['test_drop_no_ft']:+.2f} pt ({worst[0]})",
                    "met": all(s["test_drop_no_ft"] <= GOALS["sigma_drop_at_macs50"] for _, s in sig_rows),
                    "why": [_sigma_detail(m, s, compare[m]) for m, s in sig_rows],
                    "short": f"largest Σ-error of the worst model's layers: {worst[0]} {_worst_layer(worst[1])}"})
    if cmp_rows:
        gains = [(m, f["test_drop_no_ft"] - s["test_drop_no_ft"]) for m, s, f in cmp_rows]
        out.append({"goal": "Σ ≥ 1 point better than Frobenius at equal ranks (no fine-tune, MACs ≤ 50 %)",
                    "value": ", ".join(f"{m} {g:+.2f} pt" for m, g in gains),
                    "met": all(g >= GOALS["sigma_vs_frobenius_points"] for _, g in gains), "why": _sigma_blame(compare),
                    "short": _sigma_short(compare)})
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
                        "met": ok == len(vals), "why": _block_blame(compare), "short": _block_short(compare)})
        for key, label in (("speedup_tf_b1", "TF batch 1"), ("speedup_tf_b64", "TF batch 64"), ("speedup_tflite_b1", "TFLite batch 1")):
            vals = [(m, r["variant"], r["latency"][key]) for m, r in lat_rows if r["latency"].get(key) is not None]
            if not vals:
                continue
            slower = [(m, v, s) for m, v, s in vals if s < 1.0]
            out.append({"goal": f"no compressed model slower than its parent ({label})",
                        "value": f"{len(slower)}/{len(vals)} slower" + (f"; slowest {min(slower, key=lambda t: t[2])[1]} on {min(slower, key=lambda t: t[2])[0]} ×{min(s for *_, s in slower):.2f}" if slower else ""),
                        "met": not slower, "why": _slow_blame(compare, key), "short": _slow_short(compare, key)})
    # 4. search time
    if lr:
        vals = {m: r["search_over_epoch"] for m, r in lr.items() if r["search_over_epoch"] is not None}
        why = [f"{m}: {_phase_blame(r)}" for m, r in lr.items()]
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
                        "why": why + _profile_blame(compare),
                        "short": "largest phase: " + ", ".join(f"{m} {_phase_blame(r, top=1)}" for m, r in lr.items())})
    # 5. ResNet-50
    scale = results.get("scale")
    if scale:
        for run in scale["runs"]:
            wall = run.get("search_wall_s")
            rss = run.get("peak_rss_mb")
            capped = run.get("status") in ("capped", "failed")
            progress = run.get("progress") or {}
            value = (f"capped at {scale['cap_s']:.0f} s in phase {progress.get('phase')} "
                     f"({progress.get('done')}/{progress.get('total')})" if capped else f"{_f(wall, '{:.0f}')} s")
            out.append({"goal": f"ResNet-50 search ≤ 10 min ({run['config']})", "value": value,
                        "met": (not capped) and wall is not None and wall <= GOALS["resnet50_search_s"],
                        "why": [], "short": _scale_blame(run)})
            out.append({"goal": f"ResNet-50 peak RSS ≤ 8 GB ({run['config']})",
                        "value": f"{_f(None if rss is None else rss / 1024, '{:.2f}')} GB" + (" (until the cap)" if capped else ""),
                        # a capped run under the limit says nothing about the rest of the search: n/a
                        "met": _rss_met(rss, capped), "why": [], "short": ""})
    return out


def _rss_met(rss_mb: Optional[float], capped: bool) -> Optional[bool]:
    if rss_mb is None:
        return None if capped else False
    within = rss_mb / 1024 <= GOALS["resnet50_peak_rss_gb"]
    return None if capped and within else within


def provenance(compare: dict[str, dict]) -> list[str]:
    """Which commit each zoo model's rows come from: one run, or pieces (``--resume``) at several commits.

    A reader comparing models must know when their rows were fitted by different code; the last
    note says so when the models' commits differ.
    """
    notes, commits = [], {}
    for name, c in compare.items():
        pieces = [(str(r.get("commit"))[:12], r["variants"]) for r in c.get("runs") or [] if r.get("variants")]
        commits[name] = frozenset(commit for commit, _ in pieces)
        if len(pieces) == 1:
            notes.append(f"{name}: every variant in one run at {pieces[0][0]}.")
        elif pieces:  # a resumed run: rows from several commits, latency re-timed together at the end
            notes.append(f"{name}: done in {len(pieces)} pieces (`--resume`): " + "; ".join(
                f"{', '.join(variants)} at {commit}" for commit, variants in pieces)
                + ". Latency of every child comes from the last piece's single interleaved timing run.")
    if len({v for v in commits.values() if v}) > 1:
        notes.append("The zoo models' rows come from different commits (above), so a difference between models "
                     "may be a change in lrflow, not in the model; compare the rows of one model with each other.")
    return notes


def observations(results: dict) -> list[str]:
    """Caveats that follow from the data (not opinions): unconverged parents, no-op variants, timing noise."""
    notes = ["The accuracy budget of the lrflow default (`max_drop=1.0`) is enforced **before** the fine-tune, on the "
             "paired 95 % upper bound of the drop over the estimation set (validation, topped up with training images when it "
             "has fewer than 4 096; the goals table names which images a result used); the gate here is the test "
             "drop **after** the fine-tune. The budget is therefore conservative by design: the `lrflow_budget<N>` rows "
             "(when run; section \"Accuracy budget before the fine-tune\") show what a larger one buys, and the "
             "`lrflow_target` row what the goal's cost targets cost in accuracy after the fine-tune.",
             "Every variant but `lrflow_guarded`, `lrflow_model_guard` and `lrflow_pipeline` runs with the latency "
             "guard off (the "
             "`lrf_core` default; the pipeline's `params.yaml` turns it on), so the latency columns show what the "
             "factorizations do unguarded. `lrflow_guarded` is the default with the guard on: a child timed slower "
             "than its parent (TF, batch 1, in the search's process) gives layers back before the fine-tune. "
             "`lrflow_model_guard` drops the guard's per-block rule: blocks timed slower than their dense layer stay "
             "candidates and only the whole child, timed against its parent, decides what goes back to dense. "
             "`lrflow_pipeline` is what `params.yaml` runs: the guard and recovery budgets `auto`. The guard times "
             "blocks and children in the search's own process, at TensorFlow's default intra-op threads (2 on this "
             "machine) with op determinism on, as the pipeline does; the latency columns are timed at 1 thread in a "
             "separate process. A child the guard timed slower at 2 threads can be faster at 1 (its factor chains' "
             "small ops gain less from a second thread), so compare a guarded row's decision with the guard's own "
             "child ÷ parent time, not with the unguarded row's 1-thread speedup.",
             "Params and MACs are lrflow's cost model (`lrf_core.graph.model_cost`; MACs per image, FLOPs ≈ 2 × MACs); "
             "peak RSS is the whole benchmark process sampled every 20 ms (\"+\" is the rise during the variant)."]
    compare = results["compare"]
    mode = next((c.get("mode") for c in compare.values()), None)
    missing = [m for m in ZOO_ORDER if m not in compare]
    if mode == "full" and missing:
        notes.append(f"**Partial full run**: {', '.join(f'`{m}`' for m in compare) or 'no zoo model'} ran; "
                     f"{', '.join(f'`{m}`' for m in missing)} did not, so the zoo averages above are over the models "
                     "that ran. `python -m bench.run --models MODEL ...` adds one.")
    for name, c in compare.items():
        # the objective variant's rows are named sigma@macsNN / frobenius@macsNN
        ran = {"objective" if r.get("family") == "objective" else r["variant"] for r in c["rows"]}
        not_run = [v for v in (c.get("settings") or {}).get("variants", ()) if v not in ran]
        if not_run:
            notes.append(f"{name}: variants not in this run: {', '.join(not_run)}.")
    notes.extend(provenance(compare))
    for name, c in compare.items():
        gain = (c.get("parent_extra_epochs") or {}).get("test_gain_points")
        if gain is not None and gain > 0.5:
            notes.append(f"{name}: the parent gains {gain:+.2f} points from the fine-tune epochs alone, so it was not "
                         f"converged; compare fine-tuned children with the control column, not with the parent.")
        busy = [f"{r['variant']} ({r['other_cpu_cores']:.1f})" for r in c["rows"]
                if (r.get("other_cpu_cores") or 0) >= CONTENTION_CORES]
        if busy:
            notes.append(f"{name}: other processes kept cores busy while these variants ran (average cores in "
                         f"brackets): {', '.join(busy)}. Their search and fine-tune times are inflated; "
                         f"`--resume --redo` them on a quiet machine.")
        idle = [r["variant"] for r in c["rows"] if r["status"] == "ok" and r["params_kept"] is not None
                and r["params_kept"] >= 0.9999 and r["macs_kept"] >= 0.9999]
        if idle:
            notes.append(f"{name}: {', '.join(idle)} kept every layer dense (no candidate met its rule, the budget "
                         f"or, for the guarded variants, the latency guard); "
                         f"their accuracy change is the fine-tune alone.")
        tf_t = (c.get("timing") or {}).get("tf", {})
        for batch in ("1", "64"):
            p, k = tf_t.get(batch, {}).get("parent"), tf_t.get(batch, {}).get("control")
            if p and k and abs(k["median_s"] / p["median_s"] - 1) > 0.03:
                notes.append(f"{name}: at batch {batch} the same-structure control times {k['median_s'] / p['median_s']:.2f}× "
                             f"the parent: differences of that size are timing noise on this shared machine.")
    return notes


def _worst_layer(row) -> str:
    layers = [r for r in row.get("layers") or [] if r.get("sigma_error") is not None]
    if not layers:
        return "—"
    worst = max(layers, key=lambda r: r["sigma_error"])
    return f"{worst['layer']} {worst['method']}{worst['rank']} {worst['sigma_error']:.3f}"


def _phase_blame(row, top: int = 2) -> str:
    """``search 59 s: candidates 25 s (44 %), allocation 19 s (33 %)``: the ``top`` phases of a row's search;
    with ``top=1`` just the largest (``candidates 44 %``)."""
    phases = row.get("search_phases_s") or {}
    total = sum(phases.values()) or 1
    ranked = sorted(phases.items(), key=lambda kv: -kv[1])[:top]
    if top == 1:
        return ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in ranked)
    wall = row.get("search_wall_s") or 0
    return f"search {wall:.0f} s: " + ", ".join(f"{k} {v:.0f} s ({100 * v / total:.0f} %)" for k, v in ranked)


def _profile_blame(compare) -> list[str]:
    """Per model, the two functions with the most self time in the cProfile of the default search."""
    parts = []
    for m, c in compare.items():
        prof = (c.get("extras") or {}).get("lrflow", {}).get("profile")
        if prof:
            top = prof["top_tottime"][:2]
            parts.append(f"{m}, self time (cProfile of the default search): "
                         + ", ".join(f"`{p['function']}` {p['tottime']:.0f} s" for p in top))
    return parts


def _budget_blame(c: dict) -> str:
    """What stopped the default's λ search: the accuracy budget is checked before the fine-tune, on the paired
    95 % upper bound of the drop over the estimation set. Names the chosen point's estimate (beside its test
    drop without fine-tune) and the closest cheaper point the budget refused."""
    row, path = _row(c, "lrflow"), ((c.get("extras") or {}).get("lrflow") or {}).get("lambda_path") or []
    if not row or not path or row.get("macs_kept") is None:
        return ""
    chosen = min(path, key=lambda q: abs(q["macs_kept"] - row["macs_kept"]) + abs(q["params_kept"] - row["params_kept"]))
    cheaper = [q for q in path if q["macs_kept"] + q["params_kept"] < chosen["macs_kept"] + chosen["params_kept"]]
    n_val = (c.get("data") or {}).get("val")
    images = "validation" if n_val is not None and chosen["examples"] <= n_val else "validation + training"
    text = (f"; the budget (before fine-tune) binds: chosen point est drop {chosen['est_drop']:+.2f} pt, 95 % bound "
            f"{chosen['est_drop_ucb95']:+.2f} on {chosen['examples']} {images} images (test drop without fine-tune "
            f"{_f(row.get('test_drop_no_ft'), '{:+.2f}')})")
    if cheaper:
        near = max(cheaper, key=lambda q: q["macs_kept"] + q["params_kept"])
        text += (f", closest cheaper point (params {100 * near['params_kept']:.0f} %, MACs {100 * near['macs_kept']:.0f} %) "
                 f"refused at bound {near['est_drop_ucb95']:+.2f}")
    return text


def _sigma_detail(model: str, row: dict, c: dict) -> str:
    """One model's Σ row at −50 % MACs: its drop, worst layer, and where the parent's MACs are when over the bound."""
    text = f"{model}: {row['test_drop_no_ft']:+.2f} pt at MACs kept {100 * row['macs_kept']:.0f} % (worst layer Σ-error {_worst_layer(row)}"
    by_type = (c.get("parent") or {}).get("cost_by_type")
    if row["test_drop_no_ft"] > GOALS["sigma_drop_at_macs50"] and by_type:
        text += f"; the parent's MACs are in {_top_types(by_type, 'macs')}"
    return text + ")"


def _sigma_gains(compare: dict) -> dict:
    """Per model, per objective cut: ``(MACs kept, Σ's gain over Frobenius (pt), Frobenius's own drop (pt))``."""
    out = {}
    for m, c in compare.items():
        cuts = []
        for s in c["rows"]:
            if not (s["variant"].startswith("sigma@") and s["status"] == "ok"):
                continue
            f = _row(c, "frobenius@" + s["variant"].split("@", 1)[1])
            if f and f["status"] == "ok":
                cuts.append((s["macs_kept"], f["test_drop_no_ft"] - s["test_drop_no_ft"], f["test_drop_no_ft"]))
        if cuts:
            out[m] = sorted(cuts)
    return out


def _sigma_blame(compare: dict) -> list[str]:
    """Why Σ's gain is what it is, per model: the gain at every cut, and Frobenius's own drop (the gain
    cannot exceed it)."""
    parts = []
    for m, cuts in _sigma_gains(compare).items():
        near = _near_half(cuts)
        parts.append(f"{m}: Σ gains " + " / ".join(f"{g:+.2f}" for _, g, _ in cuts) + " pt at MACs kept "
                     + " / ".join(f"{100 * k:.0f}" for k, _, _ in cuts)
                     + f" %; at {100 * near[0]:.0f} % Frobenius itself drops {near[2]:+.2f} pt, which bounds the gain")
    return parts


def _near_half(cuts: list) -> tuple:
    """The cut of :func:`_sigma_gains` closest to half the MACs."""
    return min(cuts, key=lambda t: abs(t[0] - 0.5))


def _sigma_short(compare: dict) -> str:
    """The model whose gain at −50 % MACs is smallest, and the Frobenius drop that bounds it."""
    gains = {m: _near_half(cuts) for m, cuts in _sigma_gains(compare).items()}
    if not gains:
        return ""
    m, (kept, gain, frob) = min(gains.items(), key=lambda kv: kv[1][1])
    return f"smallest gain {m} {gain:+.2f} pt, where Frobenius itself drops only {frob:+.2f} pt at {100 * kept:.0f} % MACs"


def _median(values: list) -> Optional[float]:
    values = sorted(values)
    return values[len(values) // 2] if values else None


def _block_medians(compare: dict) -> dict:
    """``"<layer type> → <method>"`` → (median block speedup, median MACs ratio, count) over every timed block.

    Block speedup = dense layer time ÷ factor chain time at batch 1 (``bench.timing.time_blocks``).
    """
    by_type: dict = {}
    for c in compare.values():
        for b in (c.get("timing") or {}).get("blocks", []):
            slot = by_type.setdefault(f"{b['type']} → {b['method']}", ([], []))
            slot[0].append(1.0 / b["chain_over_dense"])
            if b.get("macs_after"):
                slot[1].append(b["macs_before"] / b["macs_after"])
    return {key: (_median(speed), _median(ratio), len(speed)) for key, (speed, ratio) in sorted(by_type.items())}


def _block_whose(compare: dict) -> str:
    variants = {b.get("variant") for c in compare.values() for b in (c.get("timing") or {}).get("blocks", [])}
    return "lrflow children" if variants <= {"lrflow"} else "every timed child"


def _block_blame(compare) -> list[str]:
    """Per layer type and method: the median block speedup (batch 1) against the median MACs ratio."""
    medians = _block_medians(compare)
    if not medians:
        return []
    return [f"per-layer blocks at batch 1 ({_block_whose(compare)}), median per layer type and method; block "
            "speedup = dense layer time ÷ factor chain time:",
            *(f"{key}: block speedup {speed:.2f}× for MACs ratio {_f(ratio, '{:.1f}')}× ({n} blocks)"
              for key, (speed, ratio, n) in medians.items())]


def _block_short(compare) -> str:
    """The range of the block medians: the factor chains' speedup is far below their MACs ratio."""
    medians = [(speed, ratio) for speed, ratio, _ in _block_medians(compare).values() if ratio]
    if not medians:
        return ""
    speeds, ratios = [s for s, _ in medians], [r for _, r in medians]
    return (f"factor chains' speedup over their dense layer {min(speeds):.2f}–{max(speeds):.2f}× against MACs ratios "
            f"{min(ratios):.1f}–{max(ratios):.1f}× (medians per layer type and method, batch 1)")


def _slow_blame(compare, key) -> list[str]:
    """Why children run slower than the parent: factor chains slower than the layer they replace, and noise;
    and what the latency guard (``lrflow_guarded``) did about it."""
    slow = [f"{k} {speed:.2f}× (median of {n})" for k, speed, n in _slow_chains(compare)]
    return [p for p in (_noise(compare, key),
                        ("factor chains slower than the dense layer they replace, batch 1 "
                         f"({_block_whose(compare)}): " + ", ".join(slow)) if slow else "",
                        *_guard_summary(compare, key)) if p]


def _slow_chains(compare) -> list[tuple[str, float, int]]:
    """``(layer type → method, median block speedup, blocks)`` for the chains slower than their dense layer."""
    return [(k, speed, n) for k, (speed, _, n) in _block_medians(compare).items() if speed < 1.0]


def _slow_short(compare, key) -> str:
    noise = _noise(compare, key, short=True)
    slow = [f"{k} {speed:.2f}×" for k, speed, _ in _slow_chains(compare)]
    return "; ".join(p for p in (noise, "chains slower than their dense layer: " + ", ".join(slow) if slow else "") if p)


def _guard_summary(compare, key) -> list[str]:
    """Per guarded variant and model: the measured speedup, the MACs kept against the unguarded default's,
    and how many layers the whole-model check sent back to dense."""
    rules = {"lrflow_guarded": "candidate blocks timed slower than their dense layer are never chosen, then ",
             "lrflow_model_guard": "no per-block rule, "}
    sentences = []
    for variant, rule in rules.items():
        parts = []
        for m, c in compare.items():
            row = _row(c, variant)
            if not row or row["status"] != "ok":
                continue
            guard = ((c.get("extras") or {}).get(variant) or {}).get("latency_guard") or {}
            speed, free = _lat(row, key), _row(c, "lrflow")
            steps, reverted = guard.get("steps") or [], guard.get("reverted") or []
            first = (f" (chosen child with {steps[0]['factorized']} layer(s) factorized timed at {_f(steps[0]['ratio'])})"
                     if reverted and steps else "")
            parts.append(f"{m} ×{_f(speed)} at MACs kept {_pct(row['macs_kept'])} (unguarded lrflow "
                         f"{_pct((free or {}).get('macs_kept'))}: {rule}{len(reverted)} layer(s) "
                         f"sent back by the whole-model check{first}, child ÷ parent time in the search {_f(guard.get('ratio'))})")
        if parts:
            sentences.append(f"with the latency guard on ({variant}): " + ", ".join(parts))
    return sentences


def _noise(compare, key, *, short: bool = False) -> str:
    """The same-structure control's time over the parent's per model (ideally 1.00); ``short``: their range."""
    ratios = {}
    for m, c in compare.items():
        tf_t = (c.get("timing") or {}).get("tf", {})
        batch = "64" if key.endswith("64") else "1"
        p, k = tf_t.get(batch, {}).get("parent"), tf_t.get(batch, {}).get("control")
        if p and k:
            ratios[m] = k["median_s"] / p["median_s"]
    if not ratios:
        return ""
    if short:
        return f"timing noise: control/parent {min(ratios.values()):.2f}–{max(ratios.values()):.2f}"
    return ("timing noise (same-structure control vs parent, ideally 1.00): "
            + ", ".join(f"{m} control/parent {r:.2f}" for m, r in ratios.items()))


def _scale_blame(run) -> str:
    phases = run.get("phases_s") or {}
    if phases:
        ranked = sorted(phases.items(), key=lambda kv: -kv[1])[:2]
        text = ", ".join(f"{k} {v:.0f} s" for k, v in ranked)
        by = run.get("by_method") or {}
        costly = sorted(((f"{m} {phase}", e.get(f"{key}_s") or 0.0) for m, e in by.items()
                         for phase, key in (("grids", "candidates"), ("refits", "refit"))), key=lambda t: -t[1])[:2]
        return text + ("; by method: " + ", ".join(f"{what} {v:.0f} s" for what, v in costly) if costly else "")
    progress = run.get("progress") or {}
    steps = progress.get("phases") or {}
    return "; ".join(f"{k}: {v.get('done')}/{v.get('total')} after {v.get('at_s', 0) - v.get('started_s', 0):.0f} s"
                     for k, v in steps.items())


# -- markdown -----------------------------------------------------------------------------------


def render(results: dict, out: Path, *, results_dir: Path) -> str:
    out = Path(out)
    compare = results["compare"]
    any_data = next(iter(compare.values()), None) or results.get("depth") or results.get("scale") or results.get("zoo")
    mode = (any_data or {}).get("mode", "?")
    figures = out.parent / ("figures" if mode == "full" else f"figures-{mode}")
    machine = (any_data or {}).get("machine", {})
    lines = [f"# lrflow benchmark report ({mode} mode)", ""]
    lines += [f"Generated by `python -m bench.report --results {_rel(results_dir)}` from the JSON result files alone; "
              f"re-run `make bench` (full) or `make bench-quick` to refresh it.", ""]
    if mode != "full":
        lines += ["> **Quick mode**: small training subsets, under-trained parents, coarse search grids, Conv2D methods svd and tucker2 only, "
                  "few repetitions. These numbers check that everything runs; they are not the benchmark's verdict. "
                  "The full mode (`make bench`) trains every parent to convergence on all 54 000 training images.", ""]
    if machine:
        pk = machine.get("packages", {})
        lines += [f"Machine: {machine.get('cpu')} ({machine.get('cpu_count')} cores, {machine.get('memory_gb')} GB), "
                  f"{machine.get('platform')}; Python {machine.get('python')}, TensorFlow {pk.get('tensorflow')}, "
                  f"Keras {pk.get('keras')}, NumPy {pk.get('numpy')}, lrflow {pk.get('lrflow')} at {machine.get('git_commit')}. "
                  f"Load average when the runs started: {machine.get('load_average_at_start')} (the machine is shared; "
                  f"timings include that contention). Latency measured with {machine.get('threads')} intra-op thread(s).", ""]

    lines += _goals_section(goals(results))

    notes = observations(results)
    if notes:
        lines += ["## Notes for reading the numbers", ""] + [f"- {n}" for n in notes] + [""]

    zoo = results.get("zoo")
    if zoo or compare:
        lines += ["## The zoo", ""]
        rows = []
        for name, c in compare.items():
            p, e = c["parent"], c.get("parent_extra_epochs") or {}
            rows.append([name, f"{p['params']:,}", f"{p['macs']:,}", p.get("epochs"), "yes" if p.get("stopped_early") else "no (cap)",
                         _rate_at_kept_epoch(p),
                         _f(p.get("seconds_per_epoch"), "{:.0f} s"), _pct(p["val_accuracy"]), _pct(p["test_accuracy"]),
                         f"{_pct(e.get('test_accuracy'))} ({_f(e.get('test_gain_points'), '{:+.2f}')} pt)",
                         _f(c.get("finetune_epoch_s"), "{:.1f} s"), f"{c['data']['train']}/{c['data']['val']}/{c['data']['test']}"])
        lines += [_table(["model", "params", "MACs/image", "epochs", "early-stopped", "rate (kept epoch)", "s/epoch",
                          "val acc", "test acc",
                          "parent + same extra epochs (control)", "one fine-tune epoch", "train/val/test"], rows), ""]
        lines += ["The control column fine-tunes the parent itself with the children's fine-tune settings: a gain there "
                  "means the parent was not converged and a child's post-fine-tune accuracy flatters the method.", ""]

    for name, c in compare.items():
        lines += [f"## {name}", ""]
        if c.get("partial"):
            lines += [f"> **Partial**: this model's run is still in progress ({len(c['rows'])} variant rows so far, "
                      f"latency not measured yet).", ""]
        p = c["parent"]
        lines += [f"Parent: {p['params']:,} params, {p['macs']:,} MACs/image, test {100 * p['test_accuracy']:.2f} %. "
                  f"Gate: test drop ≤ {c['gate_points']} point after the variant's last step. "
                  f"\"drop FT vs control\" compares a fine-tuned child with the parent fine-tuned the same way. "
                  f"Latency speedups are against the same-structure control (TF) or the parent (TFLite).", ""]
        rows = []
        for r in c["rows"]:
            lat = r.get("latency") or {}
            rows.append([
                r["variant"], r["status"] if r["status"] != "ok" else "", _pct(r["params_kept"]), _pct(r["macs_kept"]),
                _f(r["test_drop_no_ft"], "{:+.2f}"), _f(r["test_drop"], "{:+.2f}") if r["finetuned"] else "—",
                _f(_drop_vs_control(r, c), "{:+.2f}"),
                "pass" if r["gate_passed"] else ("fail" if r["gate_passed"] is not None else "—"),
                _f(lat.get("speedup_vs_control_tf_b1"), "{:.2f}×"), _f(lat.get("speedup_vs_control_tf_b64"), "{:.2f}×"),
                _f(lat.get("speedup_tflite_b1"), "{:.2f}×"), _f(lat.get("macs_ratio"), "{:.2f}×"),
                _f(lat.get("speedup_over_macs_ratio_tf_b64"), "{:.2f}"),
                _f(r["search_wall_s"], "{:.0f} s"), _f(r["search_over_epoch"], "{:.1f}"),
                f"{_f(r['peak_rss_mb'], '{:.0f}')} (+{_f(r['peak_rss_delta_mb'], '{:.0f}')})",
                ", ".join(r["methods"] or []),
            ])
        lines += [_table(["variant", "status", "params kept", "MACs kept", "drop no-FT (pt)", "drop FT (pt)",
                          "drop FT vs control (pt)", "gate",
                          "TF b1", "TF b64", "TFLite b1", "MACs ratio", "speedup÷MACs ratio (b64)", "search",
                          "search ÷ FT epoch", "peak RSS MB (+ over start)", "methods"], rows), ""]
        errors = [r for r in c["rows"] if r["status"] != "ok"]
        for r in errors:
            lines += [f"- `{r['variant']}` {r['status']}: {(r['error'] or '').splitlines()[0][:300]}"]
        if errors:
            lines += [""]
        lr = _row(c, "lrflow")
        if lr and lr.get("layers"):
            lines += ["lrflow default, per layer:", ""]
            lines += [_table(["layer", "status", "method", "rank", "params before→after", "MACs before→after", "Σ-error", "CKA"],
                             [[x["layer"], x["status"], x.get("method") or "", x.get("rank") or "",
                               f"{x.get('params_before')}→{x.get('params_after')}", f"{x.get('macs_before')}→{x.get('macs_after')}",
                               _f(x.get("sigma_error"), "{:.3f}"), _f(x.get("similarity"), "{:.3f}")] for x in lr["layers"]]), ""]
        if lr and lr.get("search_phases_s"):
            lines += ["Search phases of the default (s): " + ", ".join(f"{k} {v:.1f}" for k, v in lr["search_phases_s"].items())
                      + f"; wall {lr['search_wall_s']:.1f} s.", ""]
        png = plot_pareto(c, figures / f"pareto_{name}.png")
        lines += [f"![{name} Pareto]({_relative(png, out.parent)})", ""]

    if compare:
        png = plot_latency(compare, figures / "latency.png")
        lines += ["## Latency", ""]
        lines += ["All models of one parent were timed in one process, interleaved round-robin after warm-up "
                  "(`bench/timing.py`): TF `tf.function` forward and the TFLite interpreter, median of many calls. "
                  "`control` is the parent rebuilt through lrflow's rebuild path with nothing factorized.", ""]
        rows = []
        for name, c in compare.items():
            t = c.get("timing") or {}
            for batch in ("1", "64"):
                table = t.get("tf", {}).get(batch, {})
                lite = t.get("tflite", {}).get(batch, {})
                for key in ("parent", "control", "lrflow"):
                    if key in table:
                        e = table[key]
                        rows.append([name, batch, key, f"{1e3 * e['median_s']:.3f}", f"{1e3 * e['p10_s']:.3f}–{1e3 * e['p90_s']:.3f}",
                                     e["repeats"], _f(1e3 * lite[key]["median_s"] if isinstance(lite.get(key), dict) and "median_s" in lite[key] else None, "{:.3f}")])
        if rows:
            lines += [_table(["zoo model", "batch", "timed", "TF median ms", "TF p10–p90 ms", "reps", "TFLite median ms"], rows), ""]
        if png:
            lines += [f"![latency]({_relative(png, out.parent)})", ""]
        blocks = [b for c in compare.values() for b in (c.get("timing") or {}).get("blocks", [])]
        if blocks:
            lines += ["Per-layer blocks (batch 1, each layer's dense op vs its factor chain, lrflow children):", ""]
            lines += [_table(["variant", "layer", "type", "method", "rank", "dense µs", "chain µs", "chain/dense", "MACs ratio"],
                             [[b["variant"], b["layer"], b["type"], b["method"], b["rank"], f"{1e6 * b['dense_s']:.0f}",
                               f"{1e6 * b['chain_s']:.0f}", f"{b['chain_over_dense']:.2f}",
                               _f(b["macs_before"] / b["macs_after"] if b.get("macs_after") else None, "{:.1f}")] for b in blocks]), ""]

    lines += _budget_section(compare)

    profiles = [(m, (c.get("extras") or {}).get("lrflow", {}).get("profile")) for m, c in compare.items()]
    profiles = [(m, p) for m, p in profiles if p]
    if profiles:
        lines += ["## Where the search time goes (cProfile of the default search)", ""]
        for m, prof in profiles:
            lines += [f"{m} (profiled wall {prof['seconds']:.0f} s):", ""]
            lines += [_table(["function", "calls", "self s", "cumulative s"],
                             [[f"`{p['function']}`", p["ncalls"], f"{p['tottime']:.1f}", f"{p['cumtime']:.1f}"]
                              for p in prof["top_tottime"][:8]]), ""]
            if prof.get("top_lrf_core_cumtime"):  # which lrflow step the self time above is spent under
                lines += [f"{m}, lrflow functions by cumulative time:", "",
                          _table(["function", "calls", "cumulative s"],
                                 [[f"`{p['function']}`", p["ncalls"], f"{p['cumtime']:.1f}"]
                                  for p in prof["top_lrf_core_cumtime"][:10]]), ""]

    depth = results.get("depth")
    if depth:
        lines += ["## Search time against depth", "", *_fallback_line(depth),
                  f"ResNet-style model with 1… basic blocks per stage, random weights, cost target MACs ≤ 50 %, "
                  f"grid {depth['settings']['grid_points']} points, {depth['settings']['calibration']} calibration images, "
                  f"Conv2D methods {depth['settings']['conv_methods'] or 'all'}.", ""]
        lines += [_table(["blocks/stage", "eligible layers", "MACs", "calibration s", "candidates s", "allocation s", "refit s",
                          "wall s", "s / layer", "peak RSS MB"],
                         [[r["blocks_per_stage"], r["eligible_layers"], f"{r['macs']:,}",
                           *(_f((r["phases_s"] or {}).get(k), "{:.1f}") for k in ("calibration", "candidates", "allocation", "refit")),
                           f"{r['search_wall_s']:.1f}", f"{r['search_wall_s'] / r['eligible_layers']:.2f}", _f(r.get("peak_rss_mb"), "{:.0f}")]
                          for r in depth["rows"]]), ""]
        png = plot_depth(depth, figures / "depth.png")
        if png:
            lines += [f"![depth]({_relative(png, out.parent)})", ""]

    scale = results.get("scale")
    if scale:
        lines += ["## ResNet-50 at 224×224", "",
                  f"`keras.applications.ResNet50(weights=None)`, 10 classes, calibration on Fashion-MNIST images upscaled "
                  f"to 224×224×3, cost target only; each configuration in its own process, capped at {scale['cap_s']:.0f} s.", ""]
        lines += [_table(["config", "status", "eligible layers", "calibration images", "grid", "calibration s", "candidates s",
                          "allocation s", "refit s", "search wall s", "peak RSS MB", "MACs kept"],
                         [[r["config"], r["status"], r.get("eligible_layers", "—"), r.get("calibration_images", "—"),
                           r.get("grid_points", "—"),
                           *(_f((r.get("phases_s") or {}).get(k), "{:.0f}") for k in ("calibration", "candidates", "allocation", "refit")),
                           _f(r.get("search_wall_s"), "{:.0f}"), _f(r.get("peak_rss_mb"), "{:.0f}"), _pct(r.get("macs_kept"))]
                          for r in scale["runs"]]), ""]
        for r in scale["runs"]:
            if r.get("status") in ("capped", "failed"):
                lines += [f"- `{r['config']}` {r['status']}: progress {_scale_blame(r)}"]
        lines += [""]
        lines += _scale_methods_section(scale["runs"])
    lines += _dask_section(results.get("dask"))
    text = "\n".join(lines).rstrip() + "\n"
    out.write_text(text)
    return text


def _goals_section(goal_rows: list[dict]) -> list[str]:
    """The goals table (one line of blame each), then each goal's blame in full, one bullet per model or
    cause; a goal whose details repeat an earlier goal's points back to it."""
    ids = [f"G{i}" for i in range(1, len(goal_rows) + 1)]
    lines = ["## Goals", "", _table(["", "goal", "measured", "status", "responsible (in short; in full below)"],
                                    [[i, g["goal"], g["value"], _met(g["met"]), g["short"]] for i, g in zip(ids, goal_rows)]), ""]
    detailed = [(i, g) for i, g in zip(ids, goal_rows) if g["why"]]
    if not detailed:
        return lines
    lines += ["### Where each goal goes", ""]
    seen: dict[tuple, str] = {}
    for i, g in detailed:
        lines += [f"**{i}. {g['goal']}**: {g['value']}, {_met(g['met'])}.", ""]
        first = seen.setdefault(tuple(g["why"]), i)
        lines += ([f"- as for {first}."] if first != i else [f"- {part}" for part in g["why"]]) + [""]
    return lines


def _scale_methods_section(runs: list[dict]) -> list[str]:
    """Per run that recorded it: fitting seconds by method, candidate grid and refit (what to cut first)."""
    lines = []
    for r in runs:
        by = r.get("by_method")
        if not by:
            continue
        lines += [f"Fitting time by method, `{r['config']}` (candidate grids at {r.get('search_iterations', '—')} "
                  "sweeps; the chosen layers' refit at full sweeps; error gain: median relative drop of the "
                  "chosen candidate's proxy error from its refit):", ""]
        lines += [_table(["method", "candidates s", "refits", "refit s", "median refit sweeps", "median error gain",
                          "refits kept"],
                         [[m, _f(e.get("candidates_s"), "{:.0f}"), e.get("refits", 0), _f(e.get("refit_s"), "{:.0f}"),
                           _f(e.get("refit_sweeps_median"), "{:.0f}"), _pct(e.get("refit_error_gain_median")),
                           e.get("refits_kept", "—")]
                          for m, e in sorted(by.items(), key=lambda t: -(t[1]["candidates_s"] + t[1]["refit_s"]))]), ""]
    return lines


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


def _budget_section(compare: dict) -> list[str]:
    """What a larger accuracy budget before the fine-tune buys: compression against the drop after it."""
    per_model = budget_points(compare)
    if not per_model:
        return []
    rows, best = [], []
    for name, points in per_model.items():
        for budget, r in points:
            rows.append([name, f"{budget:g}", r["status"] if r["status"] != "ok" else "", _pct(r["params_kept"]), _pct(r["macs_kept"]),
                         _f(_bound(r, compare[name]), "{:+.2f}"), _f(r["test_drop_no_ft"], "{:+.2f}"),
                         _f(r["test_drop"], "{:+.2f}"), _f(_val_drop(r, compare[name]), "{:+.2f}"),
                         _f(_drop_vs_control(r, compare[name]), "{:+.2f}"),
                         "pass" if r["gate_passed"] else ("fail" if r["gate_passed"] is not None else "—")])
        passing = [(b, r) for b, r in points if r["status"] == "ok" and r["gate_passed"]]
        if passing:
            b, r = max(passing, key=lambda t: t[0])
            best.append(f"{name}: {b:g} point(s) (params {_pct(r['params_kept'])}, MACs {_pct(r['macs_kept'])} kept, "
                        f"drop after fine-tune {r['test_drop']:+.2f})")
        else:
            best.append(f"{name}: none")
    recovery = [_recovery_line(name, compare[name]) for name in per_model]
    recovery = [line for line in recovery if line]
    return ["## Accuracy budget before the fine-tune", "",
            "The default checks its budget **before** the fine-tune (the `max_drop` of `lrf_core`, `search.max_drop` in "
            "`params.yaml`); the gate is checked **after** it. The `lrflow_budget<N>` rows give the search an N-point "
            "budget and keep the gate at the same point: how much compression the one-shot fine-tune buys back. "
            "\"bound\" is the 95 % upper bound of the estimated drop the search accepted.", "",
            _table(["model", "budget before FT (pt)", "status", "params kept", "MACs kept", "bound (pt)",
                    "drop no-FT (pt)", "drop FT (pt)", "validation drop FT (pt)", "drop FT vs control (pt)", "gate"],
                   rows), "",
            "Largest budget whose child still passes the gate: " + "; ".join(best) + ".", "",
            *_validation_gap_lines(compare),
            *((["`lrflow_recovery` (the recovery budgets fine-tuned in turn, largest first, the first within 1 point "
                "on validation after its fine-tune kept; what `search.recovery_budgets: auto` in `params.yaml` and "
                "`lrf compress --max-drop` do by default):", ""]
               + [f"- {line}" for line in recovery] + [""]) if recovery else []),
            *_abandon_lines(compare)]


#: Margins (points over the acceptance threshold) of the simulated early-abandon rule.
ABANDON_MARGINS = (0.0, 0.5, 1.0)
RECOVERY_VARIANTS = ("lrflow_recovery", "lrflow_pipeline")


def early_abandon(attempts: list[dict], margin: float, after_epoch: int = 1) -> dict:
    """Simulate abandoning a recovery rung after ``after_epoch`` fine-tune epochs when its validation drop then
    exceeds the acceptance threshold (``accept_max_drop``) by more than ``margin`` points.

    Uses the attempts' recorded ``val_drop_by_epoch`` (entry 0 before the fine-tune); attempts without it,
    and the last rung (kept whatever its drop), are never abandoned. Returns ``epochs`` (fine-tune epochs the
    attempts ran), ``saved`` (epochs the rule would have skipped), ``abandoned`` (rungs cut short) and ``lost``
    (of those, rungs that were in fact kept: the rule would have thrown away the child the run shipped).
    """
    epochs = saved = abandoned = lost = 0
    for i, a in enumerate(attempts):
        drops = a.get("val_drop_by_epoch") or []
        epochs += max(len(drops) - 1, 0)
        if i == len(attempts) - 1 or len(drops) <= after_epoch + 1 or a.get("accept_max_drop") is None:
            continue
        if drops[after_epoch] > a["accept_max_drop"] + margin:
            abandoned += 1
            saved += len(drops) - 1 - after_epoch
            lost += bool(a["kept"])
    return {"epochs": epochs, "saved": saved, "abandoned": abandoned, "lost": lost}


def _abandon_lines(compare: dict) -> list[str]:
    """What abandoning refused rungs after their first epoch would have saved, and cost, on the recorded runs."""
    runs = [(m, v, tried) for m, c in compare.items() for v in RECOVERY_VARIANTS
            if (tried := ((c.get("extras") or {}).get(v) or {}).get("recovery"))
            and any(a.get("val_drop_by_epoch") for a in tried)]
    if not runs:
        return []
    parts = []
    for margin in ABANDON_MARGINS:
        total = {k: sum(early_abandon(t, margin)[k] for _, _, t in runs) for k in ("epochs", "saved", "abandoned", "lost")}
        parts.append(f"margin {margin:+.1f} pt: {total['saved']} of {total['epochs']} fine-tune epochs saved, "
                     f"{total['abandoned']} rung(s) cut short, {total['lost']} of them the kept one")
    return ["Abandoning a rung after the first epoch of its fine-tune when its validation drop then exceeds the "
            "acceptance threshold by more than a margin (simulated on the recorded per-epoch drops of "
            + ", ".join(f"{m} {v}" for m, v, _ in runs) + "): " + "; ".join(parts) + ". A kept rung cut short would "
            "have shipped a less compressed child; `lrf_core` does not abandon rungs.", ""]


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
    return accepted_bound(((c.get("extras") or {}).get(row["variant"]) or {}).get("lambda_path") or [], row["params_kept"])


def _recovery_line(name: str, c: dict, variant: str = "lrflow_recovery") -> Optional[str]:
    """One model's recovery attempts (of ``variant``): budget, validation drop after the fine-tune, which was kept,
    the test result."""
    row, tried = _row(c, variant), ((c.get("extras") or {}).get(variant) or {}).get("recovery")
    if not row or row["status"] != "ok" or not tried:
        return None
    steps = ", ".join(f"{a['max_drop_before_finetune']:g} pt → validation drop {a['val_drop_after_finetune']:+.2f}"
                      f"{_by_epoch(a)}{' **kept**' if a['kept'] else ''}" for a in tried)
    return (f"{name}: {steps}; test drop {_f(row['test_drop'], '{:+.2f}')} ({'pass' if row['gate_passed'] else 'fail'}), "
            f"params {_pct(row['params_kept'])}, MACs {_pct(row['macs_kept'])} kept, "
            f"{len(tried)} fine-tune(s) in {_f(row['finetune_s'], '{:.0f}')} s")


def _by_epoch(attempt: dict) -> str:
    """`` (+5.20 untuned → +2.10 → +1.75 by epoch)``: an attempt's validation drop through its fine-tune, when recorded."""
    drops = attempt.get("val_drop_by_epoch")
    if not drops:
        return ""
    return f" ({drops[0]:+.2f} untuned → " + " → ".join(f"{d:+.2f}" for d in drops[1:]) + " by epoch)"


def _dask_section(dask: Optional[dict]) -> list[str]:
    """The search of one parent with its layer jobs in process, on 1 and on 2 Dask workers (issue 6)."""
    if not dask:
        return []
    settings = dask["settings"]
    lines = ["## Search on a Dask cluster: 1 vs 2 workers", "", *_fallback_line(dask),
             f"`{dask['model']}`, search to MACs ≤ {settings['target_macs']:.0%} (grid {settings['grid_points']}, Conv2D methods "
             f"{settings['conv_methods'] or 'all'}); the per-layer fitting jobs (candidate grids and the final refits) run "
             f"in the flow's process or on a local Dask cluster of worker processes with {settings['threads_per_worker']} "
             "thread each; latency, similarity and the allocation's evaluations stay in the flow's process, which "
             f"shares this machine's {dask['machine'].get('cpu_count', '?')} cores with the workers.", ""]
    lines += [_table(["runner", "search wall s", "calibration s", "candidates s", "allocation s", "refit s"],
                     [[name, f"{r['search_wall_s']:.1f}",
                       *(_f(r["phases_s"].get(k), "{:.1f}") for k in ("calibration", "candidates", "allocation", "refit"))]
                      for name, r in dask["runs"].items()]), ""]
    lines += [f"2 workers over 1: **{dask['speedup_2_vs_1']:.2f}×** on the whole search, "
              f"**{dask['candidates_speedup_2_vs_1']:.2f}×** on the candidate phase. "
              f"Same decision on every runner: **{'yes' if dask['same_decisions'] else 'NO'}**.", ""]
    return lines


def _fallback_line(part: dict) -> list[str]:
    if "_from" not in part:
        return []
    return [f"**From the {part.get('mode', '?')} run** (`{part['_from']}`): this part of the full run has not been "
            f"done yet (`python -m bench.run --skip resnet50 zoo` does it).", ""]


def _relative(path: Path, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(base).resolve()))
    except ValueError:
        return str(path)


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(BENCH.parent))
    except ValueError:
        return str(path)


def quick_fallback(results: Path) -> Optional[Path]:
    """The full results directory falls back on its quick run for the files of :data:`FALLBACK_FILES`."""
    return RESULTS_DIR / "quick" if Path(results).resolve() == RESULTS_DIR.resolve() else None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--out", type=Path, default=BENCH / "REPORT.md")
    args = parser.parse_args(argv)
    render(load_results(args.results, fallback=quick_fallback(args.results)), args.out, results_dir=args.results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
