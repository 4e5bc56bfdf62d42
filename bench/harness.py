"""Side-by-side compression benchmark of the zoo (issue 5): one run per model, one gate for all.

For every zoo model, under the same gate (test top-1 drop ≤ ``GATE_POINTS`` after the
variant's last step), the harness runs:

* ``lrflow``: the default (mixed methods, Σ-aware fit, CKA similarity, accuracy budget
  1.0 point on the estimation set, one-shot fine-tune), ``layerwise`` selection;
* ``lrflow_sequential``: the same with ``selection="sequential"``;
* ``lrflow_recovery``: the default with ``recovery_budgets`` (:data:`RECOVERY_BUDGETS`): the choices at
  those budgets are fine-tuned first, largest first, and the first within the budget on validation
  after its fine-tune is kept (its fine-tune time includes every attempt);
* ``lrflow_pipeline``: the search settings ``params.yaml`` runs: recovery budgets ``auto`` (resolved
  at the 1-point budget) and the latency guard on, at the bench's epochs, grid and methods;
* ``lrflow_guarded`` / ``lrflow_model_guard``: the default with the latency guard on; the second
  without the per-block rule (``block_latency_rule=False``), so only the whole child is judged;
* ``lrflow_budget<N>``: the default with an accuracy budget of ``N`` points **before** the fine-tune
  (:data:`PRE_FT_BUDGETS`); the gate after it stays at ``GATE_POINTS``. How much compression the
  one-shot fine-tune buys back, i.e. what ``search.max_drop`` above ``gate.max_drop`` is worth;
* ``uniform_conv_<m>``: one Conv2D method everywhere (``svd``, ``tucker2``, ``cp``, ``spatial``), Dense by
  ``svd``; ``uniform_dense_<m>``: one Dense method (``tt``, ``tucker``), Conv2D by ``svd``;
* ``sigma@M`` / ``frobenius@M``: a cost-target search (MACs kept ≤ M, Σ objective), then the
  **same plan** (methods and ranks) fitted with each objective, **no fine-tune**;
* ``energy95_svd``: SVD ranks keeping 95 % of the singular-value energy, then fine-tune;
* ``vbmf_tucker2``: Tucker-2 ranks from VBMF (Kim et al. 2016), then fine-tune;
* ``dprp``: dynamic parameter rank pruning (training-time, :mod:`lrf_core.dprp`);
* controls: ``parent_extra_epochs`` (the parent fine-tuned with the same config as the
  children: an under-trained parent would make fine-tuning look like a gain) and, for
  latency, ``control`` (the parent rebuilt through the same code path with nothing factorized).

For each: params and MACs kept, test accuracy without and with fine-tune, search wall time
and its phases, search time ÷ one fine-tune epoch, peak RSS during the variant, and
measured latency (:mod:`bench.timing`, a separate process with fixed threads: TF
``tf.function`` and TFLite, batch 1 and 64, all models of one parent interleaved).

Writes ``RESULTS/zoo.json`` and ``RESULTS/compare_<model>.json``; ``bench.run`` adds the
scale experiments and the report. Usage: ``python -m bench.harness [--quick] [--models ...]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from bench.common import (
    FASHION_URI, RESULTS_DIR, ROOT, ZOO_DIR, OtherLoad, PeakRSS, configure_tensorflow, load_splits, log, machine_info,
    max_rss_bytes, write_result,
)
from lrf_core.search.budgets import resolve_recovery_budgets

__all__ = ["Mode", "MODES", "ROW_FIELDS", "LATENCY_FIELDS", "ALL_VARIANTS", "PRE_FT_BUDGETS", "budget_variant",
           "budget_of", "run_model", "run_zoo", "cost_by_type"]

#: The gate of every variant: test top-1 drop in points after the variant's last step.
GATE_POINTS = 1.0

#: Every row of ``compare_<model>.json`` has exactly these keys (None where not applicable).
ROW_FIELDS = (
    "variant", "family", "description", "status", "error", "finetuned", "methods", "objective", "selection",
    "params", "macs", "params_kept", "macs_kept",
    "val_accuracy_no_ft", "test_accuracy_no_ft", "test_drop_no_ft",
    "val_accuracy", "test_accuracy", "test_drop", "gate_passed", "est_drop_ucb95",
    "search_wall_s", "search_phases_s", "finetune_s", "finetune_epochs", "finetune_best_epoch", "finetune_epoch_s",
    "search_over_epoch",
    "total_s", "peak_rss_mb", "peak_rss_delta_mb", "other_cpu_cores", "layers", "cost_by_type", "latency",
)

#: Latency fields of each row (filled from :mod:`bench.timing`).
LATENCY_FIELDS = (
    "tf_b1_s", "tf_b64_s", "tflite_b1_s", "tflite_b64_s", "macs_ratio",
    "speedup_tf_b1", "speedup_tf_b64", "speedup_tflite_b1", "speedup_tflite_b64",
    "speedup_vs_control_tf_b1", "speedup_vs_control_tf_b64",
    "speedup_over_macs_ratio_tf_b1", "speedup_over_macs_ratio_tf_b64",
    "speedup_over_macs_ratio_tflite_b1", "speedup_over_macs_ratio_tflite_b64",
)


@dataclass(frozen=True)
class ScaleSpec:
    """The ResNet-50 (224×224) search: small calibration set, cost target only, a time cap."""

    calibration: int = 32
    similarity_examples: int = 16
    grid_points: int = 4
    search_iterations: int = 5
    target_macs: float = 0.5
    # 3x the goal: past 10 min "not met" is certain, but the all_methods search ends at ~1300 s and a run
    # killed 20 s later (the old 1200 s cap + 120 s setup) would lose its refit breakdown
    cap_s: float = 1800.0
    rss_cap_gb: float = 14.0  # the child stops itself above this (shared 24 GB machine)
    configs: tuple[str, ...] = ("all_methods", "svd_only")


@dataclass(frozen=True)
class Mode:
    """Everything that differs between ``full``, ``quick`` and the ``smoke`` test."""

    name: str
    models: tuple[str, ...]
    variants: tuple[str, ...]
    data_uri: str = FASHION_URI
    train_examples: Optional[int] = None
    test_examples: Optional[int] = None
    calibration: int = 512
    similarity_examples: int = 256
    grid_points: int = 12
    search_iterations: int = 10
    conv_methods: Optional[tuple[str, ...]] = None  # None: every registered Conv2D method
    finetune_epochs: int = 3
    objective_macs: tuple[float, ...] = (0.3, 0.5, 0.7)
    dprp_epochs: int = 6
    threads: int = 1
    repeats: dict = field(default_factory=lambda: {"1": 300, "64": 60})
    tflite: str = "all"  # all | lrflow (parent, control, lrflow) | none
    blocks: str = "all"  # which children get a per-layer block profile: all | lrflow | none
    depth_blocks: tuple[int, ...] = (1, 2, 3, 5, 8)
    depth_grid_points: int = 6
    depth_conv_methods: Optional[tuple[str, ...]] = ("svd", "tucker2")  # None: as conv_methods
    depth_train_epochs: int = 2  # brief training: ALS on random weights converges unrealistically slowly
    scale: Optional[ScaleSpec] = ScaleSpec()
    skip: tuple[str, ...] = ()  # "model:variant" pairs left out

    @property
    def results_dir(self) -> Path:
        return RESULTS_DIR if self.name == "full" else RESULTS_DIR / self.name


#: Accuracy budgets before the fine-tune (points) of the ``lrflow_budget<N>`` variants; the default's is GATE_POINTS.
PRE_FT_BUDGETS = (2.0, 4.0)
#: The recovery budgets of ``lrflow_recovery`` and ``lrflow_pipeline`` (points before the fine-tune, largest
#: first): what ``recovery_budgets: auto``, the pipeline's default, resolves to at the 1-point budget.
RECOVERY_BUDGETS = resolve_recovery_budgets("auto", max_drop=GATE_POINTS, cost_targets=False, rank_rule=False,
                                            selection="layerwise")


_BUDGET_PREFIX = "lrflow_budget"


def budget_variant(points: float) -> str:
    """``lrflow_budget2`` for 2.0 points."""
    return f"{_BUDGET_PREFIX}{points:g}"


def budget_of(variant: str) -> Optional[float]:
    """The pre-fine-tune budget a ``lrflow_budget<N>`` variant name carries, else None."""
    return float(variant[len(_BUDGET_PREFIX):]) if variant.startswith(_BUDGET_PREFIX) else None


#: In run order: the headline comparisons first, so a long run killed midway has them.
ALL_VARIANTS = (
    "lrflow", "objective", "lrflow_target", "lrflow_guarded", *map(budget_variant, PRE_FT_BUDGETS), "lrflow_recovery",
    "lrflow_pipeline", "lrflow_model_guard",
    "energy95_svd", "vbmf_tucker2", "dprp", "lrflow_sequential",
    "uniform_conv_svd", "uniform_conv_tucker2", "uniform_conv_spatial", "uniform_conv_cp",
    "uniform_dense_tt", "uniform_dense_tucker",
)

MODES = {
    "full": Mode("full", models=("fashion_vgg", "fashion_resnet", "fashion_mobilenetv2"), variants=ALL_VARIANTS),
    # ≤ 15 minutes on 2 shared cores: small subsets, under-trained parents, coarse grids, Conv2D methods
    # svd and tucker2 only (the ALS-Σ fits of cp and spatial dominate the search, see REPORT.md), fewer
    # variants (the baselines on the VGG only), fewer repetitions, depth sweep svd-only, ResNet-50 svd-only capped.
    "quick": Mode(
        "quick", models=("fashion_vgg", "fashion_resnet", "fashion_mobilenetv2"),
        variants=("lrflow", "objective", "energy95_svd", "vbmf_tucker2", "dprp"),
        skip=tuple(f"{m}:{v}" for m in ("fashion_resnet", "fashion_mobilenetv2") for v in ("energy95_svd", "vbmf_tucker2",
                                                                                         "dprp")),
        train_examples=3000, test_examples=2000, calibration=128, similarity_examples=128, grid_points=5,
        search_iterations=3, conv_methods=("svd", "tucker2"), finetune_epochs=1, objective_macs=(0.5,),
        dprp_epochs=2, repeats={"1": 50, "64": 8}, tflite="lrflow", blocks="lrflow", depth_blocks=(1, 2),
        depth_grid_points=3, depth_conv_methods=("svd",), depth_train_epochs=1,
        scale=ScaleSpec(calibration=8, similarity_examples=4, grid_points=2, search_iterations=2, cap_s=180.0,
                        configs=("svd_only",)),
    ),
    # the test: a tiny CNN on sklearn digits, every code path, seconds
    "smoke": Mode(
        "smoke", models=("tiny_cnn",), variants=("lrflow", "objective", "lrflow_guarded", "energy95_svd", "dprp"),
        data_uri="sklearn:digits", train_examples=700, calibration=64, similarity_examples=64, grid_points=3,
        search_iterations=2, conv_methods=("svd", "tucker2"), finetune_epochs=1, objective_macs=(0.5,), dprp_epochs=2,
        repeats={"1": 5, "64": 3}, tflite="lrflow", blocks="lrflow", depth_blocks=(1,), depth_grid_points=2,
        depth_conv_methods=("svd",), depth_train_epochs=1, scale=None,
    ),
}


# -- variants -------------------------------------------------------------------------------


def _methods(mode: Mode, conv=None, dense=None) -> dict:
    from lrf_core.decompose.registry import method_ids

    return {"conv2d": tuple(conv or mode.conv_methods or method_ids("conv2d")),
            "dense": tuple(dense or method_ids("dense"))}


def _base_config(mode: Mode, **changes):
    from lrf_core.finetune import FinetuneConfig
    from lrf_core.search.compress import CompressConfig

    base = dict(max_drop=GATE_POINTS, grid_points=mode.grid_points, search_iterations=mode.search_iterations,
                similarity_examples=mode.similarity_examples, finetune=FinetuneConfig(epochs=mode.finetune_epochs),
                methods=_methods(mode))
    base.update(changes)
    return CompressConfig(**base)


def _compress_variants(mode: Mode) -> dict:
    """name → (family, description, CompressConfig) of every search-and-fine-tune variant."""
    from lrf_core.search.allocate import CostTargets

    variants = {
        "lrflow": ("lrflow", "default: mixed methods, Σ fit, CKA, layerwise, one-shot fine-tune", _base_config(mode)),
        "lrflow_target": ("lrflow", "default with the goal as cost targets (params ≤ 10 %, MACs ≤ 30 %) instead of "
                                    "the accuracy budget, fine-tune", _base_config(mode, max_drop=None,
                                                                                  targets=CostTargets(params=0.1, macs=0.3))),
        "lrflow_guarded": ("lrflow", "default with the latency guard on (as the pipeline's params.yaml has it): "
                                     "layers whose chains make the child slower go back to dense before the fine-tune",
                           _base_config(mode, latency_guard=True)),
        **{budget_variant(b): ("budget", f"default with a {b:g}-point accuracy budget before the fine-tune (the gate "
                                         f"after it stays at {GATE_POINTS:g} point)", _base_config(mode, max_drop=b))
           for b in PRE_FT_BUDGETS},
        "lrflow_recovery": ("lrflow", f"default with recovery budgets {', '.join(f'{b:g}' for b in RECOVERY_BUDGETS)} "
                                      "before the fine-tune: each choice fine-tuned in turn, the first within 1 point on "
                                      "validation after it kept", _base_config(mode, recovery_budgets=RECOVERY_BUDGETS)),
        "lrflow_pipeline": ("lrflow", "params.yaml's search settings: recovery budgets auto "
                                      f"({', '.join(f'{b:g}' for b in RECOVERY_BUDGETS)}) and the latency guard on",
                            _base_config(mode, recovery_budgets=RECOVERY_BUDGETS, latency_guard=True)),
        "lrflow_model_guard": ("lrflow", "default with the latency guard judging only the whole child: blocks timed "
                                         "slower than their dense layer stay candidates",
                               _base_config(mode, latency_guard=True, block_latency_rule=False)),
        "lrflow_sequential": ("selection", "default with sequential selection",
                              _base_config(mode, selection="sequential")),
        "energy95_svd": ("baseline", "SVD ranks at 95 % singular-value energy, fine-tune",
                         _base_config(mode, max_drop=None, ranks="energy:0.95",
                                      methods={"conv2d": ("svd",), "dense": ("svd",)})),
        "vbmf_tucker2": ("baseline", "Tucker-2 ranks by VBMF on the Conv2D layers, fine-tune",
                         _base_config(mode, max_drop=None, ranks="vbmf", methods={"conv2d": ("tucker2",)})),
    }
    for m in ("svd", "tucker2", "cp", "spatial"):
        variants[f"uniform_conv_{m}"] = ("uniform", f"Conv2D: {m} only, Dense: svd",
                                         _base_config(mode, methods={"conv2d": (m,), "dense": ("svd",)}))
    for m in ("tt", "tucker"):
        variants[f"uniform_dense_{m}"] = ("uniform", f"Dense: {m} only, Conv2D: svd",
                                          _base_config(mode, methods={"conv2d": ("svd",), "dense": (m,)}))
    return variants



@contextmanager
def _probed():
    """Peak RSS and other processes' CPU use during a variant: ``probe()`` after the block gives the row fields."""
    with PeakRSS() as memory, OtherLoad() as load:
        yield lambda: {**memory.as_dict(), "other_cpu_cores": load.cores}


def _empty_row(variant: str, family: str, description: str) -> dict:
    row = dict.fromkeys(ROW_FIELDS)
    row.update(variant=variant, family=family, description=description, status="ok")
    return row


def cost_by_type(model) -> dict:
    """Params and MACs per layer type of a model (what is left where): factor chains, Conv k×k, …"""
    from lrf_core.graph import describe_model

    out: dict = {}
    for r in describe_model(model).layers:
        if not r.params and not r.macs:
            continue
        if "_lrf_" in r.name:
            key = "factor chains"
        elif r.class_name == "Conv2D" and r.kernel_shape:
            key = f"Conv2D {r.kernel_shape[0]}x{r.kernel_shape[1]}"
        else:
            key = r.class_name
        slot = out.setdefault(key, {"params": 0, "macs": 0})
        slot["params"] += int(r.params)
        slot["macs"] += int(r.macs)
    return out


def _accuracies(model, splits) -> tuple[float, float]:
    from lrf_core.zoo import accuracy

    return accuracy(model, splits.val), accuracy(model, splits.test)


def _fill_cost(row: dict, child, parent_cost) -> None:
    from lrf_core.graph import model_cost

    cost = model_cost(child)
    row.update(params=cost.params, macs=cost.macs, params_kept=cost.params / parent_cost.params,
               macs_kept=cost.macs / parent_cost.macs, cost_by_type=cost_by_type(child))


def _layer_rows(report_layers) -> list:
    keys = ("layer", "type", "status", "method", "rank", "params_before", "params_after", "macs_before", "macs_after",
            "sigma_error", "similarity", "reason")
    return [{k: r.get(k) for k in keys} for r in report_layers]


def _search_seconds(phases: dict) -> float:
    return float(sum(v for k, v in phases.items() if k in ("calibration", "latency", "candidates", "allocation", "refit")))


def _source_name(filename: str) -> str:
    """A profiled function's file as the report names it: relative to the checkout it ran from, or to site-packages.

    The benchmark often runs from a worktree, not /work/main, so the checkout is found from this file.
    """
    root = f"{ROOT}/"
    return filename[len(root):] if filename.startswith(root) else filename.split("site-packages/")[-1]


def _profiled(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` under cProfile; returns its result and the top functions by self time."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    try:
        result = fn(*args, **kwargs)
    finally:
        profiler.disable()
    stats = pstats.Stats(profiler)
    rows = [{"function": f"{_source_name(filename)}:{line}({func})", "ncalls": nc, "tottime": tt, "cumtime": ct}
            for (filename, line, func), (cc, nc, tt, ct, _) in stats.stats.items()]
    top_self = sorted(rows, key=lambda r: -r["tottime"])[:15]
    top_lrf = sorted((r for r in rows if r["function"].startswith("lrf_core")), key=lambda r: -r["cumtime"])[:15]
    return result, {"seconds": time.perf_counter() - started, "top_tottime": top_self, "top_lrf_core_cumtime": top_lrf}


def accepted_bound(lambda_path: list, params_kept: float) -> Optional[float]:
    """The 95 % upper bound of the estimated drop the search accepted for a choice keeping ``params_kept``.

    Matched by cost, not by λ: the λ search evaluates an allocation once (memoized), at whichever
    λ first produced it, so the chosen λ need not appear in the path.
    """
    same = [p["est_drop_ucb95"] for p in lambda_path if abs(p["params_kept"] - params_kept) < 1e-9]
    return min(same) if same else None


def run_compress_variant(name, family, description, config, parent, data, splits, *, profile=False):
    """search → rebuild (accuracy without fine-tune) → finish (fine-tune, final accuracy).

    ``profile``: run the search under cProfile (a few % slower; the report names the hot spots).
    """
    from lrf_core.graph import model_cost
    from lrf_core.rebuild import rebuild_model
    from lrf_core.search.compress import TargetNotMetError, finish, search

    row = _empty_row(name, family, description)
    row.update(objective=config.objective, selection=config.selection, finetuned=config.finetune.epochs > 0)
    latency_fns = {}
    if config.latency_guard:  # the guard times blocks and whole models on this machine, as the pipeline does
        from lrf_core.latency import default_latency_functions

        latency_fns = dict(zip(("latency_fn", "model_latency_fn"), default_latency_functions(tuple(parent.inputs[0].shape[1:]))))
    started = time.perf_counter()
    profile_info = None
    with _probed() as probe:
        try:
            if profile:
                searched, profile_info = _profiled(search, parent, data, config, **latency_fns)
            else:
                searched = search(parent, data, config, **latency_fns)
        except TargetNotMetError as error:
            searched, missed = None, error
        row["search_wall_s"] = time.perf_counter() - started
        if searched is not None:
            row["search_phases_s"] = dict(searched.report["phases_s"])
            path = searched.report.get("lambda_path") or []
            result = finish(parent, searched, data, config, model_latency_fn=latency_fns.get("model_latency_fn"))
            # with recovery budgets the kept child may be a larger budget's choice: its own accuracy before fine-tune
            kept = next(c for c in (*searched.recovery, searched) if c.max_drop == result.report["config"]["max_drop"])
            child0 = rebuild_model(parent, kept.fitted)
            row["est_drop_ucb95"] = accepted_bound(path, model_cost(child0).params / model_cost(parent).params)
            row["val_accuracy_no_ft"], row["test_accuracy_no_ft"] = _accuracies(child0, splits)
            del child0
    row.update(probe())
    if searched is None:
        row.update(status="target_not_met", error=str(missed), layers=_layer_rows(missed.report["layers"]),
                   search_phases_s=missed.report["phases_s"])
        return row, None, None
    report = result.report
    ft = report["finetune"]
    row.update(
        val_accuracy=report["child"]["val_accuracy"], test_accuracy=report["child"]["test_accuracy"],
        finetune_s=report["phases_s"].get("finetune"), finetune_epochs=ft["epochs_run"], finetune_best_epoch=ft["best_epoch"],
        finetune_epoch_s=ft["seconds_per_epoch"] or None, layers=_layer_rows(report["layers"]),
        methods=sorted({r["method"] for r in report["layers"] if r["status"] == "factorized"}),
        total_s=time.perf_counter() - started,
    )
    return row, result.model, {"lambda_path": path, "selection_comparison": report.get("selection_comparison"),
                               "candidates": report.get("candidate_counts"), "profile": profile_info,
                               "latency_guard": searched.report.get("latency_guard"), "recovery": report.get("recovery")}


def run_objective_variants(mode, parent, data, splits, target_macs: float):
    """Cost-target search with Σ, then the same plan fitted with Σ and with Frobenius, no fine-tune."""
    from lrf_core.apply_plan import apply_plan
    from lrf_core.finetune import FinetuneConfig
    from lrf_core.rebuild import rebuild_model
    from lrf_core.search.allocate import CostTargets
    from lrf_core.search.compress import TargetNotMetError, search

    config = _base_config(mode, max_drop=None, targets=CostTargets(macs=target_macs),
                          finetune=FinetuneConfig(epochs=0))
    tag = f"{round(100 * target_macs)}"
    rows, children = [], {}
    started = time.perf_counter()
    with _probed() as probe:
        try:
            searched = search(parent, data, config)
            error = None
        except TargetNotMetError as exc:
            searched, error = None, exc
    search_wall = time.perf_counter() - started
    for objective in ("sigma", "frobenius"):
        name = f"{objective}@macs{tag}"
        row = _empty_row(name, "objective", f"plan of a Σ search for MACs ≤ {target_macs:.0%}, fitted with "
                                            f"{objective}, no fine-tune (equal ranks)")
        row.update(objective=objective, selection=config.selection, finetuned=False, search_wall_s=search_wall)
        row.update(probe())
        if searched is None:
            row.update(status="target_not_met", error=str(error), layers=_layer_rows(error.report["layers"]))
            rows.append(row)
            continue
        row["search_phases_s"] = dict(searched.report["phases_s"])
        t0 = time.perf_counter()
        if objective == "sigma":  # the search's own Σ fits (the chosen ones already refitted with full sweeps)
            child = rebuild_model(parent, searched.fitted)
            fitted = [f.as_dict() for f in searched.fitted.values()]
        else:  # the same methods and ranks, plain weight fitting
            plan = {k: {"method": v.method, "rank": list(v.rank)} for k, v in searched.allocation.factorized.items()}
            rebuilt = apply_plan(parent, plan, objective="frobenius", seed=config.seed)
            child, fitted = rebuilt.model, rebuilt.report["layers"]
        row["total_s"] = search_wall + time.perf_counter() - t0
        val, test = _accuracies(child, splits)
        row.update(val_accuracy_no_ft=val, test_accuracy_no_ft=test, val_accuracy=val, test_accuracy=test,
                   methods=sorted({f["method"] for f in fitted}), layers=[{**f, "status": "factorized"} for f in fitted])
        rows.append(row)
        children[name] = child
    return rows, children


def run_dprp(mode, parent, splits):
    from lrf_core.dprp import DPRPConfig, train_dprp

    row = _empty_row("dprp", "baseline", f"dynamic parameter rank pruning, {mode.dprp_epochs} epochs (training-time)")
    row.update(finetuned=True, methods=["svd"], objective="training", selection=None)
    started = time.perf_counter()
    with _probed() as probe:
        result = train_dprp(parent, splits.train, splits.val, DPRPConfig(epochs=mode.dprp_epochs))
    seconds = time.perf_counter() - started
    child = result.model
    val, test = _accuracies(child, splits)
    row.update(probe())
    row.update(val_accuracy=val, test_accuracy=test, search_wall_s=seconds, finetune_s=seconds,
               finetune_epochs=len(result.history), finetune_epoch_s=seconds / max(len(result.history), 1),
               total_s=seconds,
               layers=[{"layer": k, "status": "dense" if k in result.restored_dense else "factorized", "method": "svd",
                        "rank": [v]} for k, v in result.ranks.items()])
    return row, child


def _finish_row(row: dict, parent_acc: tuple[float, float], parent_cost, child, epoch_s: Optional[float]) -> None:
    if child is not None:
        _fill_cost(row, child, parent_cost)
    if row["test_accuracy_no_ft"] is not None:
        row["test_drop_no_ft"] = 100.0 * (parent_acc[1] - row["test_accuracy_no_ft"])
    if row["test_accuracy"] is not None:
        row["test_drop"] = 100.0 * (parent_acc[1] - row["test_accuracy"])
        row["gate_passed"] = row["test_drop"] <= GATE_POINTS + 1e-9
    elif row["status"] != "ok":
        row["gate_passed"] = False
    if row["search_wall_s"] is not None and epoch_s:  # one epoch of the same fine-tune on this model
        row["search_over_epoch"] = row["search_wall_s"] / epoch_s
    for key in ("search_wall_s", "total_s", "finetune_s", "finetune_epoch_s"):
        if row[key] is not None:
            row[key] = round(float(row[key]), 3)


# -- latency --------------------------------------------------------------------------------


def _block_specs(parent, child, row) -> list:
    """Per factorized layer: the dense layer's config and the chain's configs (for bench.timing)."""
    from lrf_core.graph import describe_model
    from lrf_core.search.candidates import layer_input_shape

    summary = describe_model(parent)
    names = {layer.name: layer for layer in child.layers}
    blocks = []
    for r in row["layers"] or []:
        if r.get("status") != "factorized":
            continue
        name = r["layer"]
        chain = []
        i = 0
        while f"{name}_lrf_{i}" in names:
            layer = names[f"{name}_lrf_{i}"]
            chain.append({"class_name": type(layer).__name__, "config": layer.get_config()})
            i += 1
        if not chain:
            continue
        layer = parent.get_layer(name)
        record = summary.record(name)
        kernel = record.kernel_shape
        kind = f"Conv2D {kernel[0]}x{kernel[1]}" if record.class_name == "Conv2D" else record.class_name
        blocks.append({"variant": row["variant"], "layer": name, "type": kind, "method": r.get("method"),
                       "rank": r.get("rank"), "macs_before": r.get("macs_before"), "macs_after": r.get("macs_after"),
                       "input_shape": list(layer_input_shape(record.geometry)),
                       "dense": [{"class_name": type(layer).__name__, "config": layer.get_config()}],
                       "chain": chain})
    return blocks


def measure_latency(mode: Mode, name: str, parent, children: dict, rows: list, workdir: Path) -> dict:
    """Time parent, control and the saved ``children`` (key → ``.keras`` path) in :mod:`bench.timing`."""
    from lrf_core.model_io import load_model, save_model_atomic
    from lrf_core.rebuild import rebuild_model

    workdir.mkdir(parents=True, exist_ok=True)
    entries = []
    for key, model in [("parent", parent), ("control", rebuild_model(parent, {}, name=f"{parent.name}_control"))]:
        save_model_atomic(model, _child_path(workdir, key))
        entries.append({"id": key, "path": str(_child_path(workdir, key))})
    entries += [{"id": key, "path": str(path)} for key, path in children.items()]
    tflite_ids = {"all": [e["id"] for e in entries], "lrflow": ["parent", "control", "lrflow"], "none": []}[mode.tflite]
    blocks = []
    for row in rows:
        if row["variant"] in children and (mode.blocks == "all" or row["variant"] == "lrflow") and mode.blocks != "none":
            blocks += _block_specs(parent, load_model(children[row["variant"]]), row)
    manifest = {"models": entries, "input_shape": list(parent.inputs[0].shape[1:]), "threads": mode.threads,
                "batches": [1, 64], "repeats": mode.repeats, "warmup": 5, "tflite_ids": tflite_ids,
                "blocks": blocks}
    manifest_path, out_path = workdir / "timing-manifest.json", workdir / "timing.json"
    manifest_path.write_text(json.dumps(manifest, default=str))
    log(f"{name}: timing {len(entries)} models (threads={mode.threads}, TFLite for {len(tflite_ids)}, "
        f"{len(blocks)} blocks)")
    done = subprocess.run([sys.executable, "-m", "bench.timing", str(manifest_path), str(out_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        log(f"{name}: timing failed:\n{tail}")
        return {"error": tail}
    return json.loads(out_path.read_text())


def _fill_latency(rows: list, timing: dict, parent_macs: int) -> None:
    tf_t, lite = timing.get("tf", {}), timing.get("tflite", {})

    def med(table, batch, key):
        entry = table.get(str(batch), {}).get(key)
        return entry["median_s"] if isinstance(entry, dict) and "median_s" in entry else None

    for row in rows:
        key = row["variant"]
        if med(tf_t, 1, key) is None:
            continue
        lat = dict.fromkeys(LATENCY_FIELDS)
        ratio = parent_macs / row["macs"] if row["macs"] else None
        lat["macs_ratio"] = ratio
        for runtime, table in (("tf", tf_t), ("tflite", lite)):
            for batch in (1, 64):
                t_child, t_parent = med(table, batch, key), med(table, batch, "parent")
                lat[f"{runtime}_b{batch}_s"] = t_child
                if t_child and t_parent:
                    lat[f"speedup_{runtime}_b{batch}"] = t_parent / t_child
                t_control = med(table, batch, "control")
                if runtime == "tf" and t_child and t_control:
                    lat[f"speedup_vs_control_tf_b{batch}"] = t_control / t_child
                    if ratio:
                        lat[f"speedup_over_macs_ratio_tf_b{batch}"] = (t_control / t_child) / ratio
                if runtime == "tflite" and t_child and t_parent and ratio:
                    lat[f"speedup_over_macs_ratio_tflite_b{batch}"] = (t_parent / t_child) / ratio
        row["latency"] = lat


# -- one model --------------------------------------------------------------------------------


def _variant_of(row: dict) -> str:
    """The variant of :data:`ALL_VARIANTS` that wrote ``row`` (``objective`` writes one row per objective × target)."""
    return "objective" if row["family"] == "objective" else row["variant"]


def _child_path(workdir: Path, key: str) -> Path:
    return workdir / f"{key.replace('@', '_at_')}.keras"


def _settings(mode: Mode) -> dict:
    """The mode's settings as JSON would store them (what a resumed run must match)."""
    return json.loads(json.dumps({k: v for k, v in asdict(mode).items() if k not in ("scale", "models")}))


def _comparable(settings: Optional[dict]) -> Optional[dict]:
    """Settings that decide a row's numbers: all but the variant list (a variant added later just runs)."""
    return None if settings is None else {k: v for k, v in settings.items() if k != "variants"}


def _resumable(path: Path, settings: dict, train_record: dict, workdir: Path) -> Optional[dict]:
    """The earlier ``compare_<model>.json`` if a run may continue it, else None (and says why).

    Continuable: same mode settings (the variant list aside), the same parent (its training request: architecture, data, seed, plan),
    and the children of its ``ok`` rows still saved under ``workdir`` (latency is re-measured for all).
    """
    if not path.exists():
        return None
    previous = json.loads(path.read_text())
    why = None
    if _comparable(previous.get("settings")) != _comparable(settings):
        why = "the mode's settings changed"
    elif any((previous.get("parent") or {}).get(k) != v for k, v in json.loads(json.dumps(train_record)).items()):
        why = "the parent is not the same (its training record differs: retrained or another request)"
    elif previous.get("parent_extra_epochs") is None:
        why = "it has no parent control"
    if why:
        log(f"{path.name}: not resumed: {why}; running every variant")
        return None
    previous["rows"] = [{**dict.fromkeys(ROW_FIELDS), **r} for r in previous["rows"]]  # fields added since: unknown
    missing = [r["variant"] for r in previous["rows"] if r["status"] == "ok" and not _child_path(workdir, r["variant"]).exists()]
    gone = {_variant_of(r) for r in previous["rows"] if r["variant"] in missing}  # objective: all its rows run again
    previous["rows"] = [r for r in previous["rows"] if r["status"] != "error" and _variant_of(r) not in gone]
    if missing:
        log(f"{path.name}: children of {', '.join(missing)} are gone; those variants run again")
    return previous


def run_model(mode: Mode, name: str, parent, train_record: dict, splits, *, out_dir: Path, workdir: Path,
              variants: Optional[tuple[str, ...]] = None, resume: bool = False, redo: tuple[str, ...] = ()) -> dict:
    """Every variant of ``mode`` (or ``variants``) on one parent; writes ``out_dir/compare_<name>.json`` and returns it.

    Each child is saved under ``workdir`` as soon as its variant ends, and the result file is rewritten
    after every variant, so a run killed midway keeps what it finished. ``resume``: continue an earlier
    run of the same parent and settings (:func:`_resumable`): its rows are kept and only the variants
    without a row (or whose row is an error), plus ``redo``, run. A full run is done in pieces this way;
    ``runs`` in the result names the commit and variants of each piece. Latency is always measured
    for every child in one timing run (interleaved, one process), so pieces stay comparable.
    """
    from lrf_core.data import stratified_sample
    from lrf_core.finetune import FinetuneConfig, finetune
    from lrf_core.graph import model_cost
    from lrf_core.model_io import save_model_atomic
    from lrf_core.rebuild import rebuild_model
    from lrf_core.search.compress import CompressData

    workdir.mkdir(parents=True, exist_ok=True)
    settings = _settings(mode)
    previous = _resumable(out_dir / f"compare_{name}.json", settings, train_record, workdir) if resume else None
    requested = [v for v in (variants or mode.variants) if f"{name}:{v}" not in mode.skip]
    unknown = sorted(set(requested) - set(ALL_VARIANTS))
    if unknown:
        raise KeyError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(ALL_VARIANTS)}")
    redo = set(redo) & set(requested)  # a row is only dropped when its variant runs again
    kept_rows = [r for r in (previous or {}).get("rows", []) if _variant_of(r) not in redo]
    done = {_variant_of(r) for r in kept_rows}
    to_run = [v for v in requested if v not in done]
    rows = [r for r in kept_rows if _variant_of(r) not in to_run]
    children = {r["variant"]: _child_path(workdir, r["variant"]) for r in rows if r["status"] == "ok"}
    extras = {k: v for k, v in (previous or {}).get("extras", {}).items() if k in done and k not in to_run}
    if previous:
        log(f"{name}: resuming: {len(rows)} rows kept ({', '.join(sorted(done - set(to_run))) or 'none'}); "
            f"running {', '.join(to_run) or 'none'}")
    runs = list((previous or {}).get("runs") or ([{"commit": previous["machine"].get("git_commit"),
                                                    "variants": [v for v in ALL_VARIANTS if v in
                                                                 {_variant_of(r) for r in previous["rows"]}]}]
                                                  if previous else []))
    piece = {"commit": machine_info()["git_commit"], "variants": []}  # the variants this piece finished
    runs.append(piece)
    earlier_s = float((previous or {}).get("seconds") or 0.0)
    earlier_rss = float((previous or {}).get("max_rss_mb") or 0.0)

    data = CompressData(stratified_sample(splits.train, mode.calibration, seed=0), splits.train, splits.val, splits.test)
    parent_cost = model_cost(parent)
    parent_acc = _accuracies(parent, splits)
    started = time.perf_counter()

    if previous:
        control = previous["parent_extra_epochs"]
        epoch_s = previous["finetune_epoch_s"]
    else:  # control: the parent given the same extra epochs as a child's fine-tune
        extra = rebuild_model(parent, {}, name=f"{parent.name}_extra")
        t0 = time.perf_counter()
        ft = finetune(extra, splits.train, splits.val, FinetuneConfig(epochs=mode.finetune_epochs))
        extra_val, extra_test = _accuracies(extra, splits)
        control = {"finetune": asdict(ft), "seconds": time.perf_counter() - t0, "val_accuracy": extra_val,
                   "test_accuracy": extra_test, "test_gain_points": 100.0 * (extra_test - parent_acc[1])}
        epoch_s = ft.seconds_per_epoch or None
        del extra
    log(f"{name}: parent test {parent_acc[1]:.4f}; + {mode.finetune_epochs} extra epochs → "
        f"{control['test_accuracy']:.4f} ({control['test_gain_points']:+.2f} points); one fine-tune epoch "
        f"{epoch_s or float('nan'):.1f} s")

    def snapshot(timing, *, partial):
        order = {v: i for i, v in enumerate(ALL_VARIANTS)}
        return {
            "experiment": "compare",
            "model": name,
            "mode": mode.name,
            "partial": partial,
            "machine": machine_info(mode.threads),
            "settings": settings,
            "gate_points": GATE_POINTS,
            "data": {"uri": splits.uri, "train": len(splits.train), "val": len(splits.val), "test": len(splits.test),
                     "calibration": mode.calibration},
            "parent": {**train_record, "params": parent_cost.params, "macs": parent_cost.macs,
                       "val_accuracy": parent_acc[0], "test_accuracy": parent_acc[1], "cost_by_type": cost_by_type(parent)},
            "parent_extra_epochs": control,
            "finetune_epoch_s": epoch_s,
            "rows": sorted(rows, key=lambda r: order.get(_variant_of(r), len(order))),
            "extras": extras,
            "timing": timing,
            "runs": runs,
            "seconds": earlier_s + time.perf_counter() - started,  # every piece's wall time (redone variants too)
            "max_rss_mb": round(max(earlier_rss, max_rss_bytes() / 2**20), 1),
        }

    compress_variants = _compress_variants(mode)
    for variant in to_run:
        gc.collect()
        t0 = time.perf_counter()
        try:
            if variant in compress_variants:
                family, description, config = compress_variants[variant]
                row, child, extra_info = run_compress_variant(variant, family, description, config, parent, data, splits,
                                                              profile=variant == "lrflow")
                new_rows, new_children = [row], ({variant: child} if child is not None else {})
                if extra_info:
                    extras[variant] = extra_info
            elif variant == "objective":
                new_rows, new_children = [], {}
                for target in mode.objective_macs:
                    r, c = run_objective_variants(mode, parent, data, splits, target)
                    new_rows += r
                    new_children.update(c)
            else:  # "dprp"
                row, child = run_dprp(mode, parent, splits)
                new_rows, new_children = [row], {"dprp": child}
        except Exception as error:  # one failing variant is a result, the others still run
            row = _empty_row(variant, "error", "")
            row.update(status="error", error=f"{type(error).__name__}: {error}"[:2000], total_s=time.perf_counter() - t0)
            log(f"{name}/{variant}: ERROR {row['error']}\n{traceback.format_exc()}")
            new_rows, new_children = [row], {}
        for row in new_rows:
            _finish_row(row, parent_acc, parent_cost, new_children.get(row["variant"]), epoch_s)
            log(f"{name}/{row['variant']}: {row['status']}, params kept {_pct(row['params_kept'])}, MACs kept "
                f"{_pct(row['macs_kept'])}, test drop no-FT {_pts(row['test_drop_no_ft'])} / final "
                f"{_pts(row['test_drop'])}, search {row['search_wall_s'] or 0:.0f} s, total {time.perf_counter() - t0:.0f} s")
        for key, child in new_children.items():  # saved now: a later piece of the run times it
            children[key] = _child_path(workdir, key)
            save_model_atomic(child, children[key])
        rows += new_rows
        if not any(r["status"] == "error" for r in new_rows):  # an error row runs again on the next --resume
            piece["variants"].append(variant)
        del new_children
        write_result(out_dir / f"compare_{name}.json", snapshot({}, partial=True))  # survives a kill

    timing = measure_latency(mode, name, parent, children, rows, workdir) if children else {}
    for row in rows:  # a kept row's latency came from an earlier timing run: only this run's counts
        row["latency"] = None
    _fill_latency(rows, timing, parent_cost.macs)
    result = snapshot(timing, partial=False)
    write_result(out_dir / f"compare_{name}.json", result)
    return result


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def _pts(value) -> str:
    return "—" if value is None else f"{value:+.2f}"


def run_zoo(mode: Mode, *, models: Optional[tuple[str, ...]] = None, variants=None, out_dir: Optional[Path] = None,
            zoo_dir: Path = ZOO_DIR, retrain: bool = False, resume: bool = False, redo: tuple[str, ...] = ()) -> list[dict]:
    """Train (or reuse) each parent of ``mode``, update ``zoo.json``, run :func:`run_model` on it."""
    from bench.zoo import load_or_train

    out_dir = Path(out_dir or mode.results_dir)
    models = models or mode.models
    splits = load_splits(mode.data_uri, train_examples=mode.train_examples, test_examples=mode.test_examples)
    log(f"data {splits.uri}: train {len(splits.train)}, val {len(splits.val)}, test {len(splits.test)}")
    records, results = {}, []
    previous = out_dir / "zoo.json"
    if previous.exists():  # a run over some of the models keeps the others' records
        stored = json.loads(previous.read_text())
        records = {k: v for k, v in stored.get("models", {}).items() if stored.get("mode") == mode.name}
    for name in models:  # train, then run, one parent at a time: the first results come early
        parent, records[name] = load_or_train(name, splits, mode=mode.name, directory=zoo_dir, force=retrain)
        write_result(out_dir / "zoo.json", {"experiment": "zoo", "mode": mode.name, "machine": machine_info(mode.threads),
                                            "models": records})
        results.append(run_model(mode, name, parent, records[name], splits, out_dir=out_dir,
                                 workdir=zoo_dir / "children" / mode.name / name, variants=variants,
                                 resume=resume and not retrain, redo=redo))
        del parent
        gc.collect()
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=list(MODES), default="full")
    parser.add_argument("--quick", action="store_true", help="same as --mode quick")
    parser.add_argument("--models", nargs="+")
    parser.add_argument("--variants", nargs="+", choices=list(ALL_VARIANTS))
    parser.add_argument("--out", type=Path, help="results directory (default: bench/results[/MODE])")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--resume", action="store_true", help="continue an earlier run of the same parents and settings")
    parser.add_argument("--redo", nargs="+", default=[], choices=list(ALL_VARIANTS), help="with --resume: run these again")
    args = parser.parse_args(argv)
    mode = MODES["quick" if args.quick else args.mode]
    configure_tensorflow()
    run_zoo(mode, models=tuple(args.models) if args.models else None,
            variants=tuple(args.variants) if args.variants else None, out_dir=args.out, retrain=args.retrain,
            resume=args.resume, redo=tuple(args.redo))


if __name__ == "__main__":
    main()
