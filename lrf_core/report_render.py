"""Human views of a compress report: Markdown text and the Pareto figure.

Computes only: returns a string or a ``matplotlib.figure.Figure`` (no pyplot, no backend
switching, no files); the caller saves them.
"""

from __future__ import annotations

from typing import Optional

from matplotlib.figure import Figure

__all__ = ["render_markdown", "pareto_figure"]


def _pct(x: Optional[float]) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def _num(x) -> str:
    return "—" if x is None else f"{x:,}"


def _prob(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:.3f}"


def _ms(x: Optional[float]) -> str:
    return "—" if x is None else f"{1000 * x:.3f}"


def _timing(timing: Optional[dict]) -> str:
    """"batch 1, 1 thread, " from what the latency was timed at; "" when the report does not say."""
    if not timing:
        return ""
    threads = timing.get("threads")
    return f"batch {timing['batch']}, " + (f"{threads} thread{'s' if threads != 1 else ''}, " if threads else "")


def _confidence(attempt: dict) -> str:
    """"0.931 (bound 1.5, needs 0.95)" for a recovery attempt; "—" for reports written before it was recorded."""
    if attempt.get("val_confidence") is None:
        return "—"
    return f"{attempt['val_confidence']:.3f} (bound {attempt['val_bound']:g}, needs {attempt['accept_confidence']:g})"


def render_markdown(report: dict) -> str:
    """The report for people: summary, targets, per-layer table, phases."""
    parent, child = report.get("parent", {}), report.get("child", {})
    lines = [f"# lrflow compress report: `{report['model']}`", ""]
    cfg = report["config"]
    methods = ", ".join(f"{kind}: {'/'.join(ids)}" for kind, ids in cfg["methods"].items())
    lines += [
        f"lrflow {report['lrflow_version']}; selection `{cfg['selection']}`, similarity `{cfg['similarity']}`, "
        f"objective `{cfg['objective']}`, methods {methods}, "
        f"seed {cfg['seed']}.",
        "",
        "## Summary",
        "",
        "| | parent | compressed | kept |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (("params", "parameters"), ("macs", "MACs per image")):
        if key in parent:
            kept = child[key] / parent[key] if parent[key] else 1.0
            lines.append(f"| {label} | {_num(parent[key])} | {_num(child[key])} | {_pct(kept)} |")
    for key, label in (("val_accuracy", "validation accuracy"), ("test_accuracy", "held-out accuracy")):
        if key in parent:
            lines.append(f"| {label} | {_pct(parent[key])} | {_pct(child[key])} | drop {100 * (parent[key] - child[key]):.2f} points |")
    if "latency_s" in parent:
        ratio = child.get("latency_ratio")  # median of paired rounds (reports before it: the two medians)
        within = f" (95 % interval {_pct(ratio['low'])}–{_pct(ratio['high'])})" if ratio else ""
        lines.append(f"| latency ({_timing(child.get('latency_timing'))}ms) | {_ms(parent['latency_s'])} | "
                     f"{_ms(child['latency_s'])} | "
                     f"{_pct(child['latency_s'] / parent['latency_s'])}{within} |")
    lines += ["", "MACs are multiply-accumulates per image (FLOPs ≈ 2 × MACs).", ""]
    if report.get("targets"):
        lines += ["## Targets", "", "| target | wanted | achieved | met |", "|---|---:|---:|:---:|"]
        for t in report["targets"]:
            fmt = (lambda v: f"{v:.2f} points") if "points" in t["name"] else _pct
            lines.append(f"| {t['name']} | ≤ {fmt(t['target'])} | {fmt(t['achieved'])} | {'yes' if t['met'] else '**no**'} |")
        lines.append("")
    lines += [
        "## Layers", "",
        "| layer | status | method | rank | params | MACs | Σ-error | similarity | latency ms (dense → chain) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in report["layers"]:
        if row["status"] == "factorized":
            lines.append(
                f"| {row['layer']} | factorized | {row['method']} | {tuple(row['rank'])} | "
                f"{_num(row['params_before'])} → {_num(row['params_after'])} | {_num(row['macs_before'])} → {_num(row['macs_after'])} | "
                f"{row['sigma_error']:.4f} | {row['similarity']:.4f} | {_ms(row.get('latency_before_s'))} → {_ms(row.get('latency_after_s'))} |"
            )
        else:
            lines.append(f"| {row['layer']} | dense | — | — | {_num(row['params_before'])} | {_num(row['macs_before'])} | — | — | {row['reason']} |")
    for row in report.get("skipped_layers", []):
        lines.append(f"| {row['layer']} | skipped | — | — | — | — | — | — | {row['reason']} |")
    if report.get("finetune"):
        ft = report["finetune"]
        lines += ["", "## Fine-tune", "",
                  f"{ft['epochs_run']} epoch(s), best at epoch {ft['best_epoch']}; validation accuracy "
                  f"{_pct(ft['val_accuracy_before'])} → {_pct(ft['val_accuracy_after'])}; {ft['seconds_per_epoch']:.2f} s per epoch."]
    if report.get("recovery"):
        lines += ["", "## Recovery budgets", "",
                  "Larger accuracy budgets before the fine-tune were tried first, largest first; a child was kept when "
                  "it passed the gate's accuracy criterion on validation after the fine-tune: drop within the base "
                  "budget, the paired bootstrap's confidence that it stays below budget + tolerance, and the predicted "
                  "probability that the gate's drop check passes on the held-out split, at the same confidence (the "
                  "last one tried is kept whatever its drop).", "",
                  "| budget before fine-tune (points) | params kept | MACs kept | validation drop after fine-tune "
                  "| P(drop < bound) | P(held-out drop ≤ budget) | kept |",
                  "|---:|---:|---:|---:|---:|---:|:---:|"]
        lines += [f"| {a['max_drop_before_finetune']:g} | {_pct(a['params_kept'])} | {_pct(a['macs_kept'])} | "
                  f"{a['val_drop_after_finetune']:.2f} points | {_confidence(a)} | "
                  f"{_prob(a.get('heldout_pass_probability'))} | {'**yes**' if a['kept'] else 'no'} |"
                  for a in report["recovery"]]
    lines += [f"\nRecovery budget {r['max_drop']:g} points was not tried: {r['reason']}." for r in
              report.get("recovery_skipped", [])]
    if report.get("phases_s"):
        lines += ["", "## Time per phase (s)", "", "| phase | seconds |", "|---|---:|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in report["phases_s"].items()]
    lines += ["", "Σ-error: relative pre-activation output error on the calibration data. Similarity: "
              "feature-map similarity to the parent after BatchNorm/activation (1 = identical).", ""]
    return "\n".join(lines)


def pareto_figure(report: dict) -> Figure:
    """Left: every explored candidate (params kept by the layer vs similarity), chosen ones
    circled. Right: the whole-model configurations evaluated by the knob search."""
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax_layers, ax_model = fig.subplots(1, 2)
    chosen = {r["layer"]: r for r in report["layers"] if r["status"] == "factorized"}
    markers = {"svd": "o", "tucker2": "s", "cp": "^", "spatial": "D", "tt": "v", "tucker": "P"}
    dense_params = {r["layer"]: r["params_before"] for r in report["layers"]}
    for layer, candidates in report.get("candidates", {}).items():
        xs = [c["params"] / dense_params[layer] for c in candidates if c["similarity"] is not None]
        ys = [c["similarity"] for c in candidates if c["similarity"] is not None]
        ms = [markers.get(c["method"], "o") for c in candidates if c["similarity"] is not None]
        color = None
        for x, y, m in zip(xs, ys, ms):
            (point,) = ax_layers.plot([x], [y], m, color=color, alpha=0.6, markersize=5,
                                      label=layer if color is None else None)
            color = point.get_color()
        if layer in chosen:
            row = chosen[layer]
            ax_layers.plot([row["params_after"] / dense_params[layer]], [row["similarity"]], "o", markersize=13,
                           markerfacecolor="none", markeredgecolor=color, markeredgewidth=2)
    ax_layers.set_xlabel("parameters kept by the layer")
    ax_layers.set_ylabel("feature-map similarity")
    ax_layers.set_title("explored candidates (circled: chosen)")
    if report.get("candidates"):
        ax_layers.legend(fontsize=7, loc="lower right")
    path = report.get("lambda_path", [])
    if path:
        ax_model.plot([p["params_kept"] for p in path], [p["est_drop"] for p in path], "o", color="grey",
                      label="evaluated configurations (estimated drop, before fine-tune)")
    child, parent = report.get("child"), report.get("parent")
    if child and parent:
        ax_model.plot([child["params"] / parent["params"]], [100 * (parent["val_accuracy"] - child["val_accuracy"])],
                      "*", markersize=16, color="crimson", label="chosen, after fine-tune")
    ax_model.set_xlabel("model parameters kept")
    ax_model.set_ylabel("accuracy drop (points)")
    ax_model.set_title("model: cost vs accuracy")
    ax_model.legend(fontsize=8)
    return fig
