"""The report's figures: Pareto fronts per model, latency speedup against MACs ratio, search time against depth."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from bench.report.fmt import latency_of


FAMILY_COLORS = {"lrflow": "#d62728", "budget": "#e377c2", "selection": "#ff7f0e", "uniform": "#1f77b4", "objective": "#2ca02c",
                 "baseline": "#9467bd", "error": "#7f7f7f"}


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
                ratio, speed = latency_of(row, "macs_ratio"), latency_of(row, key)
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
