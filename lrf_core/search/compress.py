"""`lrf compress`: choose method and rank per layer, rebuild, fine-tune once, verify, report.

METHODS.md §3–4. Phases (each timed in the report):

1. **calibration**: Σ statistics of every eligible layer on the calibration set;
2. **candidates**: per layer, method × rank grid, cost filter, Σ proxy, Pareto front
   (:mod:`lrf_core.search.candidates`), then feature-map similarity of the survivors;
3. **allocation**: Lagrangian knapsack with λ bisected to meet the cost targets
   (:mod:`lrf_core.search.allocate`); with ``max_drop`` alone, λ is bisected against the
   measured accuracy drop on the validation split (the network output, §3.5); in
   ``sequential`` mode λ is tuned again over passes that re-score each layer with the
   upstream choices in place (§3.6), and the sequential choice is kept only if it is not
   worse on the calibration objective (mean KL of the parent's vs the child's output
   distribution); with ``recovery_budgets`` λ is also bisected against each of those larger
   budgets (:mod:`lrf_core.search.budgets`), largest first, sharing every evaluation;
4. **rebuild** and one-shot **fine-tune** (:mod:`lrf_core.finetune`); recovery choices are
   fine-tuned first and the first within ``max_drop`` on validation after it is kept
   (:func:`finetune_first_within`);
5. **evaluation**: accuracy on validation and held-out data, measured latency, and every
   target checked on the final model. A missed target is reported with the best reachable
   point; the caller exits non-zero and writes no model.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Literal, Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from lrf_core import __version__
from lrf_core.calibration import collect_statistics
from lrf_core.covariance import InputStatistics
from lrf_core.data import Dataset
from lrf_core.decompose.registry import get_method, method_ids
from lrf_core.errors import LRFError, PlanError
from lrf_core.factorize import FULL_SWEEPS, Objective, fit_layer
from lrf_core.finetune import FinetuneConfig, FinetuneResult, finetune
from lrf_core.gate import GateConfig, heldout_pass_probability, judge_accuracy
from lrf_core.graph import ModelSummary, describe_model, kernel_and_bias, model_cost
from lrf_core.latency import ModelLatency, compare_models
from lrf_core.paired_ratio import RatioEstimate
from lrf_core.rebuild import rebuild_model
from lrf_core.search.allocate import (
    LAMBDA_RANGE, Allocation, Allocator, CostTargets, LayerBaseline, ModelTotals, allocate, allocation_totals,
    bisect_lambda, lambda_for_cost_targets, layerwise_allocator,
)
from lrf_core.search.budgets import check_recovery_budgets
from lrf_core.search.candidates import (
    Candidate, feature_map_tail, front_of, layer_input_shape, reference_feature_map, score_similarity,
)
from lrf_core.search.jobs import (
    BaselineJob, GridJob, Job, JobResult, LayerMap, LayerWeights, RefitJob, local_map, run_job,
)
from lrf_core.search.latency_rule import check_block_latency_rule
from lrf_core.search.model_guard import GUARD_LIMIT, guard_model_latency
from lrf_core.similarity import SIMILARITY_METRICS, SimilarityMetric

__all__ = [
    "CompressConfig", "CompressData", "CompressResult", "SearchResult", "TargetNotMetError", "compress", "search", "finish", "evaluate_final",
]

logger = logging.getLogger(__name__)

Selection = Literal["layerwise", "sequential"]
Progress = Callable[[str, int, int], None]


class TargetNotMetError(LRFError, RuntimeError):
    """A target cannot be met; ``report`` holds the best reachable point."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class CompressConfig:
    """Everything the search needs to know (validated here, at the edge of the core)."""

    methods: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: {"conv2d": method_ids("conv2d"), "dense": method_ids("dense")}
    )
    targets: CostTargets = CostTargets()
    max_drop: Optional[float] = None
    selection: Selection = "layerwise"
    refit: bool = False
    similarity: SimilarityMetric = "cka"
    objective: Objective = "sigma"
    grid_points: int = 12
    search_iterations: int = 10
    similarity_examples: int = 256
    ranks: Optional[str] = None
    skip_layers: tuple[str, ...] = ()
    finetune: FinetuneConfig = FinetuneConfig()
    latency_guard: bool = False
    # With the guard or a latency target: drop each block timed slower than its dense layer
    # (METHODS.md §3 item 7). False keeps them and leaves the whole-model guard as the only judge
    # (lrf_core.search.latency_rule).
    block_latency_rule: bool = True
    recovery_budgets: tuple[float, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        for kind, ids in self.methods.items():
            if kind not in ("conv2d", "dense"):
                raise PlanError(f"--methods: unknown layer type `{kind}`. Allowed: conv, dense.")
            for method_id in ids:
                get_method(kind, method_id)  # raises the listing error
        for name in self.targets.active:
            value = getattr(self.targets, name)
            if not 0 < value <= 1:
                raise PlanError(f"--target-{name} is the fraction kept, in (0, 1]. Received {value}.")
        if self.max_drop is not None and self.max_drop < 0:
            raise PlanError(f"--max-drop is in accuracy points, >= 0. Received {self.max_drop}.")
        if self.selection not in ("layerwise", "sequential"):
            raise PlanError(f"--selection must be layerwise or sequential. Received {self.selection!r}.")
        if self.similarity not in SIMILARITY_METRICS:
            raise PlanError(f"--similarity must be one of {', '.join(SIMILARITY_METRICS)}. Received {self.similarity!r}.")
        if self.ranks is not None and not (self.ranks == "vbmf" or self.ranks.startswith("energy:")):
            raise PlanError(f"--ranks must be energy:FRACTION (e.g. energy:0.95) or vbmf. Received {self.ranks!r}.")
        if self.ranks is not None and self.selection == "sequential":
            raise PlanError("--ranks fixes every layer's rank by a rule, so there is nothing for --selection "
                            "sequential to choose; drop one of the two.")
        if self.grid_points < 2:
            raise PlanError(f"grid_points must be >= 2. Received {self.grid_points}.")
        check_block_latency_rule(self.block_latency_rule, uses_latency=self.uses_latency)
        check_recovery_budgets(self.recovery_budgets, max_drop=self.max_drop, cost_targets=bool(self.targets.active),
                               rank_rule=self.ranks is not None, selection=self.selection)

    @property
    def uses_latency(self) -> bool:
        """Whether the search times blocks and children: the latency guard or a latency target."""
        return self.latency_guard or self.targets.latency is not None

    @property
    def has_target(self) -> bool:
        return bool(self.targets.active) or self.max_drop is not None or self.ranks is not None


@dataclass(frozen=True)
class CompressData:
    """Calibration (Σ, similarity, KL), fine-tune training, validation (early stopping and the
    drop estimate) and an optional held-out split (reported only, never used to choose)."""

    calibration: Dataset
    train: Dataset
    val: Dataset
    test: Optional[Dataset] = None


@dataclass(frozen=True)
class CompressResult:
    model: keras.Model
    report: dict
    met: bool


@dataclass(frozen=True)
class SearchResult:
    """What the search decided, before any model is rebuilt or trained.

    ``allocation`` holds the chosen fitted candidate per eligible layer (None = dense);
    ``report`` the search part of the report (layers, candidates, λ path, selection
    comparison, phase timings); ``totals`` the parent's totals the fractions refer to.
    """

    allocation: Allocation
    report: dict
    totals: ModelTotals
    #: With ``recovery_budgets``: the choices at those larger budgets, largest first, each a SearchResult
    #: of its own; :func:`finish` fine-tunes them in this order before this one.
    recovery: tuple["SearchResult", ...] = ()

    @property
    def max_drop(self) -> Optional[float]:
        """The accuracy budget (points, before the fine-tune) this choice was made under."""
        return self.report["config"]["max_drop"]

    @property
    def fitted(self) -> dict:
        return {k: v.fitted for k, v in self.allocation.factorized.items()}


class _Timer:
    def __init__(self):
        self.phases: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Phase:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.phases[name] = timer.phases.get(name, 0.0) + time.perf_counter() - self.start

        return _Phase()


def _predict(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The model's outputs on ``x`` ``(N, ...)`` → ``(N, classes)`` float64, by one compiled forward pass.

    Keras ``predict`` sets up a data pipeline and a predict function for every new model, and
    the λ search evaluates a new child each time: on the VGG-style child that setup was a fifth
    of an evaluation (A/B, same process, same outputs to the bit: 5.2 s → 4.0 s on 8 048 images).
    """
    dtype = model.inputs[0].dtype
    if len(x) == 0:
        return np.empty((0,) + tuple(model.outputs[0].shape[1:]), dtype=np.float64)
    forward = tf.function(lambda batch: model(batch, training=False),
                          input_signature=[tf.TensorSpec((None,) + tuple(x.shape[1:]), dtype)])
    x = np.asarray(x, dtype=dtype)
    return np.concatenate([np.asarray(forward(x[i:i + batch_size]), dtype=np.float64)
                           for i in range(0, len(x), batch_size)])


def _probabilities(outputs: np.ndarray) -> np.ndarray:
    if np.all(outputs >= 0) and np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-4):
        return outputs
    z = outputs - outputs.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def output_kl(parent_out: np.ndarray, child_out: np.ndarray) -> float:
    """Mean KL(parent ‖ child) of the output distributions (logits or probabilities)."""
    p, q = _probabilities(parent_out), _probabilities(child_out)
    return float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=-1)))


def _accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(outputs, axis=-1) == labels))


def _correct(model: keras.Model, split: Dataset) -> np.ndarray:
    """``(N,)`` booleans: the model's top-1 class is the label, per example of ``split``."""
    return np.argmax(_predict(model, split.x), axis=-1) == split.y


#: One-sided 95 % normal quantile for the paired drop bound.
Z_95 = 1.6449


def paired_drop(parent_out: np.ndarray, child_out: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Accuracy drop in points and its paired one-sided 95 % upper confidence bound.

    With ``b`` = examples the parent gets right and the child wrong and ``c`` the converse,
    the drop is ``(b − c)/n`` and its variance ``(b + c − (b − c)²/n)/n²`` (McNemar-style
    paired difference), so the bound is tight when parent and child rarely disagree.
    """
    parent_ok = np.argmax(parent_out, axis=-1) == labels
    child_ok = np.argmax(child_out, axis=-1) == labels
    n = len(labels)
    b = float(np.sum(parent_ok & ~child_ok))
    c = float(np.sum(child_ok & ~parent_ok))
    drop = (b - c) / n
    bound = drop + Z_95 * np.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    return 100.0 * drop, 100.0 * bound


#: Validation examples below which the estimation set is topped up with training examples.
ESTIMATION_MIN_EXAMPLES = 4096
#: At most this many training examples top up a small validation split.
ESTIMATION_TRAIN_EXAMPLES = 2048
#: Estimation examples after which the λ search may refuse an allocation early (see ``evaluate``):
#: a clearly too aggressive one is known from a quarter of the VGG's 8 048 examples.
EARLY_REJECT_EXAMPLES = 2048


def estimation_size(n_val: int, n_train: int) -> int:
    """Training examples added to a validation split of ``n_val`` (see :func:`_estimation_set`)."""
    return max(0, min(ESTIMATION_TRAIN_EXAMPLES, n_train, ESTIMATION_MIN_EXAMPLES - n_val))


def _estimation_set(data: CompressData, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The examples that estimate the accuracy drop: validation, topped up with training data when small.

    A few hundred validation images cannot resolve a one-point budget (one image is half a
    point on 189): measured on digits, a choice with zero disagreements on validation
    disagreed on 2 % of both the training and the held-out images. So a validation split of
    fewer than :data:`ESTIMATION_MIN_EXAMPLES` is topped up with a stratified sample of at most
    :data:`ESTIMATION_TRAIN_EXAMPLES` training images. A larger one is used alone: the parent
    fits its training images, and compression loses them first. On the Fashion-MNIST zoo
    (bench/, issue 5), Σ-fitted children at 50 % MACs dropped +0.73 / +2.39 points on 2 048
    training images against +0.12 / +1.08 on the 6 000 validation and +0.54 / +0.93 on the
    10 000 test images (VGG / ResNet-style), so a mixed set overstated the held-out drop and
    stopped the λ search early.
    """
    from lrf_core.data import stratified_sample

    top_up = estimation_size(len(data.val), len(data.train))
    if top_up:
        extra = stratified_sample(data.train, top_up, seed=seed)
        x, y = np.concatenate([data.val.x, extra.x]), np.concatenate([data.val.y, extra.y])
    else:
        x, y = data.val.x, data.val.y
    order = np.random.default_rng(seed).permutation(len(y))  # any prefix is a random subset (early refusal)
    return x[order], y[order]


def _eligible(summary: ModelSummary, config: CompressConfig) -> list[str]:
    unknown = set(config.skip_layers) - set(summary.names)
    if unknown:
        raise PlanError(f"--skip-layers names layers the model does not have: {sorted(unknown)}.")
    return [
        r.name for r in summary.layers
        if r.geometry is not None and r.name not in config.skip_layers and config.methods.get(r.geometry.kind)
    ]


def compress(
    parent: keras.Model,
    data: CompressData,
    config: CompressConfig = CompressConfig(),
    *,
    latency_fn: Optional[Callable] = None,
    model_latency_fn: Optional[Callable[[Sequence[keras.Model]], Sequence[float]]] = None,
    progress: Optional[Progress] = None,
    layer_map: LayerMap = local_map,
) -> CompressResult:
    """Compress ``parent`` to meet ``config``'s targets (see module docstring): search, then finish.

    ``latency_fn(specs, input_shape) -> seconds`` times a block (used with
    ``config.latency_guard`` or a latency target); ``model_latency_fn(models) -> seconds``
    times whole models interleaved. Both are injectable so tests can fake slow timings.
    Raises :class:`TargetNotMetError` (with the best reachable point) when a target is missed.
    """
    searched = search(parent, data, config, latency_fn=latency_fn, model_latency_fn=model_latency_fn, progress=progress,
                      layer_map=layer_map)
    return finish(parent, searched, data, config, model_latency_fn=model_latency_fn, progress=progress)


def search(
    parent: keras.Model,
    data: CompressData,
    config: CompressConfig = CompressConfig(),
    *,
    stats: Optional[Mapping[str, InputStatistics]] = None,
    latency_fn: Optional[Callable] = None,
    model_latency_fn: Optional[Callable[[Sequence[keras.Model]], Sequence[float]]] = None,
    progress: Optional[Progress] = None,
    layer_map: LayerMap = local_map,
) -> SearchResult:
    """Phases 1–3 and the final refit: choose and fit every layer's factorization.

    ``stats`` are precomputed Σ statistics per layer (the pipeline's calibrate step); when
    None they are collected from ``data.calibration``. ``layer_map`` runs the per-layer
    fitting jobs (:mod:`lrf_core.search.jobs`): in this process by default, or over
    processes or a Dask cluster; the decisions do not depend on it. Raises
    :class:`TargetNotMetError`.
    """
    progress = progress or (lambda phase, done, total: None)
    timer = _Timer()
    summary = describe_model(parent)
    layers = _eligible(summary, config)
    if not layers:
        raise PlanError("No layer of the model can be factorized with the allowed methods (see `lrf inspect`).")
    use_latency = config.uses_latency
    if use_latency and (latency_fn is None or model_latency_fn is None):
        raise LRFError("Latency targets and the latency guard need latency functions (the CLI provides them).")

    calib_x = data.calibration.x
    with timer("calibration"):
        if stats is None:
            stats = collect_statistics(parent, calib_x, layers, on_batch=lambda d, t: progress("calibration", d, t))
        missing = [n for n in layers if n not in stats]
        if missing:
            raise PlanError(f"The calibration statistics have no entry for layers {missing}: recompute them for this model.")
    sim_x = calib_x[: config.similarity_examples]
    parent_inputs = _layer_inputs(parent, layers, sim_x)
    parent_calib_out = _predict(parent, calib_x)
    est_x, est_y = _estimation_set(data, config.seed)
    parent_est_out = _predict(parent, est_x)

    totals_cost = model_cost(parent)
    parent_latency = None
    baselines: dict[str, LayerBaseline] = {}
    with timer("latency"):
        if use_latency:
            parent_latency = float(model_latency_fn([parent])[0])
        for name in layers:
            geometry = summary.record(name).geometry
            dense_latency = None
            if use_latency:
                dense_latency = float(latency_fn(_dense_specs(parent.get_layer(name)), layer_input_shape(geometry)))
            baselines[name] = LayerBaseline(geometry.dense_cost(), dense_latency)
    totals = ModelTotals(totals_cost.params, totals_cost.macs, parent_latency)

    fronts, counts = {}, {}
    with timer("candidates"):
        jobs = [_candidate_job(_layer_weights(parent, summary, name, stats[name]), config) for name in layers]
        for i, (name, fitted) in enumerate(zip(layers, layer_map(run_job, jobs))):
            fronts[name], counts[name] = _layer_front(
                parent, name, fitted, summary.record(name).geometry, config, latency_fn if use_latency else None,
                baselines[name], parent_inputs[name],
            )
            progress("candidates", i + 1, len(layers))

    lambda_path: list[dict] = []
    comparison: dict = {}
    # the same candidate objects → (point, budget it was refused at early, the allocation: keeps the ids in use)
    evaluated: dict[tuple, tuple[dict, Optional[float], Allocation]] = {}

    def evaluate(alloc: Allocation, reject_above: Optional[float] = None) -> dict:
        """The allocation's estimated drop (and calibration KL). With ``reject_above``, the first
        :data:`EARLY_REJECT_EXAMPLES` (a random subset) decide alone when even the lower 95 %
        bound of the drop is above it. Refusing early only ever refuses more (at most a 5 %
        chance for an allocation right at the budget, which costs compression, never accuracy).

        Memoized on the candidate objects (a refitted candidate is another model even at the same
        rank): a full evaluation serves every later call; an early refusal serves calls with a
        budget no larger than the one it was refused at (so recovery budgets run largest first)."""
        key = tuple(sorted((name, id(c)) for name, c in alloc.choice.items()))
        if key in evaluated:
            point, refused_at, _ = evaluated[key]
            if refused_at is None or (reject_above is not None and reject_above <= refused_at):
                return point
        point = _evaluate(alloc, reject_above)
        evaluated[key] = (point, reject_above if point["examples"] < len(est_y) else None, alloc)
        return point

    def _evaluate(alloc: Allocation, reject_above: Optional[float]) -> dict:
        child = rebuild_model(parent, {k: v.fitted for k, v in alloc.factorized.items()})
        cost, _ = allocation_totals(alloc, baselines, totals)
        point = {
            "lambda": alloc.lam,
            "params_kept": cost.params / totals.params,
            "macs_kept": cost.macs / totals.macs if totals.macs else 1.0,
        }
        head = EARLY_REJECT_EXAMPLES if reject_above is not None and len(est_y) >= 2 * EARLY_REJECT_EXAMPLES else 0
        out_head = _predict(child, est_x[:head]) if head else np.empty((0,) + parent_est_out.shape[1:])
        if head:
            drop, ucb = paired_drop(parent_est_out[:head], out_head, est_y[:head])
            if 2 * drop - ucb > reject_above:  # the lower bound (the bound is symmetric about the drop)
                point.update(est_drop=drop, est_drop_ucb95=ucb, calibration_kl=None, examples=head)
                lambda_path.append(point)
                return point
        out_est = np.concatenate([out_head, _predict(child, est_x[head:])])
        point.update(zip(("est_drop", "est_drop_ucb95"), paired_drop(parent_est_out, out_est, est_y)))
        point.update(calibration_kl=output_kl(parent_calib_out, _predict(child, calib_x)), examples=len(est_y))
        lambda_path.append(point)
        return point

    rung_configs = [replace(config, max_drop=b, recovery_budgets=()) for b in sorted(config.recovery_budgets, reverse=True)]
    with timer("allocation"):
        # recovery rungs first, largest budget first: the memo then serves each smaller budget (see evaluate)
        rungs = [(c, _choose(layerwise_allocator(fronts, baselines, totals, c.targets), baselines, totals, c, evaluate)[0])
                 for c in rung_configs]
        if config.ranks is not None:
            # baseline ranks: take every saving candidate as it is
            alloc, cost_ok = Allocation({k: (v[0] if v else None) for k, v in fronts.items()}, float("nan")), True
        else:
            alloc, cost_ok = _choose(layerwise_allocator(fronts, baselines, totals, config.targets), baselines, totals,
                                     config, evaluate)
        if config.selection == "sequential" and cost_ok:
            sequential_at = _SequentialAllocator(parent, summary, layers, fronts, baselines, totals, config, calib_x,
                                                 sim_x, parent_inputs)
            alloc, comparison = _sequential(sequential_at, baselines, totals, alloc, config, evaluate)
    refit_on_compressed = comparison.get("kept") == "sequential" and config.refit

    chosen_cost, _ = allocation_totals(alloc, baselines, totals)
    if not cost_ok:
        report = _report_skeleton(parent, summary, layers, alloc, fronts, counts, baselines, config, timer, lambda_path)
        best = f"params kept {chosen_cost.params / totals.params:.1%}, MACs kept {chosen_cost.macs / totals.macs:.1%}"
        raise TargetNotMetError(
            f"Cannot meet the target ({_targets_text(config)}): the most compressed choice of the allowed "
            f"candidates reaches {best}. Relax the target or allow more methods.", report,
        )

    refits: dict = {}  # one refit per chosen candidate across the recovery choices (_refit_chosen)
    refit_log: list[dict] = []

    def settle(alloc: Allocation, cfg: CompressConfig) -> tuple[Allocation, Optional[dict]]:
        """The latency guard (when on) and the full refit of one chosen allocation."""
        guard_info = None
        if cfg.latency_guard:
            with timer("latency"):
                guard = guard_model_latency(alloc, lambda a: _latency_ratio(parent, a, model_latency_fn), baselines,
                                            totals, cfg.targets)
            alloc, guard_info = guard.allocation, guard.as_dict()
            if guard.reverted and alloc.factorized and cfg.max_drop is not None:
                with timer("allocation"):  # the budget was checked on the allocation before the guard
                    guard_info["est_drop_ucb95_after"] = evaluate(alloc)["est_drop_ucb95"]
        with timer("refit"):
            if refit_on_compressed:
                alloc = sequential_at.refit_chosen(alloc)
            else:
                alloc = _refit_chosen(parent, summary, alloc, stats, cfg, parent_inputs, layer_map, refits, refit_log)
        return alloc, guard_info

    settled = [(cfg, *settle(a, cfg)) for cfg, a in rungs] + [(config, *settle(alloc, config))]

    def result(cfg: CompressConfig, alloc: Allocation, guard_info: Optional[dict]) -> SearchResult:
        report = _report_skeleton(parent, summary, layers, alloc, fronts, counts, baselines, cfg, timer, lambda_path,
                                  reverted=tuple(guard_info["reverted"]) if guard_info else ())
        if comparison:
            report["selection_comparison"] = comparison
        if guard_info:
            report["latency_guard"] = guard_info
        if refit_log:
            report["refits"] = list(refit_log)  # the search's refits, every choice's (each candidate once)
        return SearchResult(alloc, report, totals)

    *recovery, base = [result(*s) for s in settled]
    return with_recovery(base, recovery)


def with_recovery(base: SearchResult, recovery: Sequence[SearchResult]) -> SearchResult:
    """``base`` with the recovery choices that factorize something (skipped ones are reported).

    A larger budget whose child the latency guard sent all the way back to the parent is no
    choice: fine-tuned, the parent-shaped child is "within budget" and kept, and the gate then
    refuses it as not compressed (the demo did, on a child timed 1.02-1.04x at 8 points
    while the 1-point child was not slower).
    """
    skipped = [{"max_drop": r.max_drop, "reason": "nothing left factorized after the latency guard"}
               for r in recovery if not r.allocation.factorized]
    report = {**base.report, "recovery_skipped": skipped} if skipped else base.report
    return replace(base, report=report, recovery=tuple(r for r in recovery if r.allocation.factorized))


def _latency_ratio(parent: keras.Model, alloc: Allocation, model_latency_fn) -> RatioEstimate:
    """Measured latency of the child built from ``alloc`` ÷ the parent's (paired rounds, timed
    until the guard's decision is settled)."""
    child = rebuild_model(parent, {k: v.fitted for k, v in alloc.factorized.items()})
    _, (ratio,) = compare_models(model_latency_fn, parent, [child], limit=GUARD_LIMIT)
    return ratio


def finish(
    parent: keras.Model,
    searched: SearchResult,
    data: CompressData,
    config: CompressConfig,
    *,
    model_latency_fn: Optional[Callable[[Sequence[keras.Model]], Sequence[float]]] = None,
    progress: Optional[Progress] = None,
) -> CompressResult:
    """Phases 4–5: rebuild the searched choice, fine-tune once, evaluate every target.

    With recovery choices (``searched.recovery``, from ``config.recovery_budgets``) those are
    fine-tuned first, largest budget first (:func:`finetune_first_within`): the first that passes
    the gate's accuracy criterion at ``config.max_drop`` on validation is kept, the choice at
    ``max_drop`` itself is the last resort (the gate judges it). Validation split only: the
    held-out split stays the gate's. Report key ``recovery``: every attempt.
    """
    timer = _Timer()
    attempts = [*searched.recovery, searched]
    kept, child, ft, tried = finetune_first_within(
        lambda: parent, [(a.max_drop, lambda a=a: rebuild_model(parent, a.fitted)) for a in attempts], data, config,
        progress=progress, timer=timer)
    chosen = attempts[kept]
    report = dict(chosen.report)
    if tried:
        report["recovery"] = tried
    with timer("evaluation"):
        evaluate_final(report, parent, child, data, config, chosen.totals, ft, model_latency_fn)
    report["phases_s"] = {**report["phases_s"], **{k: round(v, 3) for k, v in timer.phases.items()}}
    met = all(t["met"] for t in report["targets"])
    return CompressResult(child, report, met)


Rung = tuple[Optional[float], Callable[[], keras.Model]]


def finetune_first_within(
    parent: Callable[[], keras.Model],
    rungs: Sequence[Rung],
    data: CompressData,
    config: CompressConfig,
    *,
    progress: Optional[Progress] = None,
    timer: Optional[Callable[[str], object]] = None,
    accept: Optional[GateConfig] = None,
) -> tuple[int, keras.Model, FinetuneResult, list[dict]]:
    """Fine-tune the rungs' children in order and keep the first the gate's criterion accepts on validation.

    ``rungs``: ``(budget before the fine-tune, child factory)``, largest budget first, the
    choice at ``config.max_drop`` last. A fine-tuned child is kept when it passes
    :func:`lrf_core.gate.judge_accuracy` under ``accept`` on the validation split: its drop is at
    most ``accept.max_drop`` **and** the paired bootstrap puts at least ``accept.confidence`` on
    drops below ``max_drop + tolerance`` **and** the gate's point check on the held-out split is
    predicted to pass with probability at least ``accept.confidence``
    (:func:`lrf_core.gate.heldout_pass_probability`, from the size of ``data.test``, or of the
    validation split when there is none). ``accept`` defaults to the gate's defaults at
    ``config.max_drop``; the pipeline passes its gate's thresholds at the smaller of the search's
    and the gate's max_drop. The point drop alone was not enough: a demo child 0.53 points down
    on validation was kept and the gate then found P(drop < 1.5) = 0.931 < 0.95 on held-out data.
    The held-out prediction was added when a fashion_vgg child 0.74 points down on validation
    was kept and then measured 1.14 on the test split. The last rung is kept whatever its drop
    (the gate judges it). With one rung nothing is
    measured. ``parent`` gives the parent model; it is called only when needed (several rungs,
    or distillation), so the usual single fine-tune does not load it. Returns ``(index kept,
    fine-tuned child, its result, attempts)``; an attempt records its budget, params and MACs
    kept, validation drop (after the fine-tune, and before it and after each of its epochs) and
    bootstrap confidence, and whether it was kept.
    """
    progress = progress or (lambda phase, done, total: None)
    timer = timer or (lambda name: contextlib.nullcontext())
    if accept is None and len(rungs) > 1:  # recovery budgets require config.max_drop
        accept = GateConfig(max_drop=config.max_drop, seed=config.seed)
    model = parent() if len(rungs) > 1 or config.finetune.distill else None
    parent_ok = _correct(model, data.val) if len(rungs) > 1 else None
    parent_cost = model_cost(model) if len(rungs) > 1 else None
    teacher = model if config.finetune.distill else None
    tried: list[dict] = []
    for i, (budget, make_child) in enumerate(rungs):
        with timer("rebuild"):
            child = make_child()
        with timer("finetune"):
            ft = finetune(child, data.train, data.val, config.finetune, teacher=teacher,
                          on_epoch=lambda e, n, acc: progress("finetune", e, n))
            progress("finetune", ft.epochs_run, ft.epochs_run)  # early stopping ends the bar
        if parent_ok is None:
            return i, child, ft, tried
        cost = model_cost(child)
        child_ok = _correct(child, data.val)
        judged = judge_accuracy(parent_ok, child_ok, accept)
        heldout = len(data.test) if data.test is not None else len(data.val)
        predicted = heldout_pass_probability(parent_ok, child_ok, accept.max_drop, heldout)
        kept = i == len(rungs) - 1 or (judged.passed and predicted >= accept.confidence)
        tried.append({"max_drop_before_finetune": budget, "params_kept": cost.params / parent_cost.params,
                      "macs_kept": cost.macs / max(parent_cost.macs, 1), "val_drop_after_finetune": judged.drop_points,
                      # entry 0 before the fine-tune, then one per epoch: how early a rung's fate shows
                      "val_drop_by_epoch": [100 * (float(parent_ok.mean()) - a) for a in ft.val_accuracy_history],
                      "val_confidence": judged.confidence, "val_bound": judged.bound,
                      "heldout_pass_probability": predicted, "heldout_examples": heldout,
                      "accept_max_drop": accept.max_drop, "accept_confidence": accept.confidence, "kept": kept})
        if kept:
            return i, child, ft, tried
    raise ValueError("finetune_first_within needs at least one rung")


# -- phases -------------------------------------------------------------------------------


def _dense_specs(layer: keras.layers.Layer):
    from lrf_core.decompose.base import LayerSpec

    config = {k: v for k, v in layer.get_config().items() if k not in ("name", "dtype", "trainable")}
    return [LayerSpec(type(layer).__name__, config)]


def _layer_inputs(model: keras.Model, layers: Sequence[str], x: np.ndarray) -> dict[str, np.ndarray]:
    probe = keras.Model(model.inputs, [model.get_layer(n).input for n in layers])
    outs = probe.predict(x, batch_size=256, verbose=0)
    outs = [outs] if len(layers) == 1 else outs
    return {n: np.asarray(o) for n, o in zip(layers, outs)}


def _layer_weights(parent, summary, name: str, stats: Optional[InputStatistics]) -> LayerWeights:
    kernel, bias = kernel_and_bias(parent.get_layer(name))
    return LayerWeights(name, kernel, bias, summary.record(name).geometry, stats)


def _candidate_job(weights: LayerWeights, config: CompressConfig) -> Job:
    """The fitting job of one layer: the method × rank grid, or the baseline rule's single rank."""
    allowed = tuple(config.methods[weights.geometry.kind])
    if config.ranks is not None:
        return BaselineJob(weights, allowed[0], config.ranks, config.objective, config.seed)
    return GridJob(weights, allowed, config.grid_points, config.objective, config.seed, config.search_iterations)


def _layer_front(parent, name, fitted: JobResult, geometry, config, latency_fn, baseline, layer_inputs):
    """A layer's fitted candidates → latency rule and Pareto front (grid search only) → similarity."""
    candidates, counts = fitted
    if config.ranks is None:
        candidates, counts = front_of(candidates, counts, geometry, latency_fn, baseline.latency_s,
                                      _dense_specs(parent.get_layer(name)), enforce_block_rule=config.block_latency_rule)
    layer = parent.get_layer(name)
    tail = feature_map_tail(parent, name)
    reference = reference_feature_map(layer, tail, layer_inputs)
    return score_similarity(candidates, layer, tail, layer_inputs, reference, config.similarity), counts


def _choose(allocate_at: Allocator, baselines, totals, config, evaluate, *, iterations: int = 40) -> tuple[Allocation, bool]:
    """Tune the global knob λ for ``allocate_at`` (layerwise or sequential, METHODS.md §3.5).

    Cost targets fix λ by bisection on the cost model; an accuracy budget alone fixes it by
    bisection on the estimated drop; with both, the cost λ is evaluated against the budget
    (the caller reports whether it holds).
    """
    if config.targets.active:
        alloc, ok = lambda_for_cost_targets(allocate_at, baselines, totals, config.targets, iterations=iterations)
        if ok and config.max_drop is not None:
            evaluate(alloc)
        return alloc, ok
    if config.max_drop is not None:
        return _lambda_for_drop(lambda lam: allocate_at(lam)[0], config, evaluate), True
    return allocate_at(0.0)[0], True


def _lambda_for_drop(allocation_at: Callable[[float], Allocation], config, evaluate) -> Allocation:
    """Largest λ (most compression) whose estimated drop is within budget with 95 % confidence.

    The criterion is the paired one-sided 95 % upper bound of the drop before fine-tune
    (:func:`paired_drop`) on the estimation set (:func:`_estimation_set`); the pre-fine-tune
    drop is conservative because the fine-tune never returns weights worse on validation
    than its start. Allocations far over the budget are refused on a random part of the
    estimation set (``evaluate(..., reject_above=)``); about half the bisection's points are.
    """
    cache: dict[tuple, float] = {}
    within: list[float] = [0.0]  # λ values seen within budget (λ = 0 keeps every layer dense)

    def too_much(lam: float) -> bool:
        alloc = allocation_at(lam)
        if alloc.factorized:
            key = alloc.key()
            if key not in cache:
                cache[key] = evaluate(alloc, reject_above=config.max_drop)["est_drop_ucb95"]
            if cache[key] > config.max_drop:
                return True
        within.append(lam)
        return False

    if bisect_lambda(too_much, iterations=12) is None:  # even the most compressed allocation fits
        return allocation_at(LAMBDA_RANGE[1])
    # the bisection already evaluated the last allocation within budget: reuse it
    return allocation_at(max(within))


class _SequentialAllocator:
    """The sequential pass of METHODS.md §3.6 as an allocator of λ.

    For a λ, layers are visited in topological order; each layer's front is re-scored on
    the inputs it sees with the upstream choices already in place (optionally refitted to
    those inputs), and the layer takes its argmin of ``error + λ·cost`` from that front.
    The re-scored front depends only on the upstream choices, so it is cached by them: a
    bisection over λ re-visits few distinct prefixes, and each costs one rebuild and one
    probe of the similarity batch.
    """

    def __init__(self, parent, summary, layers, fronts, baselines, totals, config, calib_x, sim_x, parent_inputs):
        self.parent, self.summary, self.layers, self.fronts = parent, summary, layers, fronts
        self.baselines, self.totals, self.config = baselines, totals, config
        self.calib_x, self.sim_x, self.parent_inputs = calib_x, sim_x, parent_inputs
        self._cache: dict[tuple, list[Candidate]] = {}

    def rescored(self, name: str, upstream: Mapping[str, Candidate]) -> list[Candidate]:
        key = (name, tuple(sorted((k, v.method, v.rank) for k, v in upstream.items())))
        if key not in self._cache:
            current = rebuild_model(self.parent, {k: v.fitted for k, v in upstream.items()}) if upstream else self.parent
            front = self.fronts[name]
            if self.config.refit and upstream:
                front = _refit_front(self.parent, current, self.summary, name, front, self.calib_x, self.config,
                                     n_iter_max=self.config.search_iterations)
            self._cache[key] = self._score(name, current, front)
        return self._cache[key]

    def _score(self, name: str, current: keras.Model, front: Sequence[Candidate]) -> list[Candidate]:
        inputs_hat = _layer_inputs(current, [name], self.sim_x)[name]
        layer = self.parent.get_layer(name)
        tail = feature_map_tail(self.parent, name)
        reference = reference_feature_map(layer, tail, self.parent_inputs[name])
        return score_similarity(front, layer, tail, inputs_hat, reference, self.config.similarity)

    def refit_chosen(self, alloc: Allocation) -> Allocation:
        """Full-sweep refit of the chosen iterative candidates, in order, on the compressed inputs.

        The bisection scored refits after ``search_iterations`` sweeps; the chosen ones get
        the full schedule, each on the network with its (already final) upstream choices,
        and a refit is kept only when it is at least as similar.
        """
        choice: dict[str, Optional[Candidate]] = {}
        for name in self.layers:
            chosen = alloc.choice[name]
            upstream = {k: v.fitted for k, v in choice.items() if v is not None}
            if chosen is not None and chosen.method != "svd" and upstream:  # svd refits are closed-form already
                current = rebuild_model(self.parent, upstream)
                (refit,) = _refit_front(self.parent, current, self.summary, name, [chosen], self.calib_x, self.config,
                                        n_iter_max=FULL_SWEEPS)
                (refit,) = self._score(name, current, [refit])
                chosen = refit if refit.similarity >= chosen.similarity else chosen
            choice[name] = chosen
        return Allocation(choice, alloc.lam)

    def __call__(self, lam: float) -> tuple[Allocation, dict[str, list[Candidate]]]:
        choice: dict[str, Optional[Candidate]] = {}
        path: dict[str, list[Candidate]] = {}
        for name in self.layers:
            path[name] = self.rescored(name, {k: v for k, v in choice.items() if v is not None})
            one = allocate({name: path[name]}, self.baselines, self.totals, self.config.targets, lam)
            choice[name] = one.choice[name]
        return Allocation(choice, lam), path


#: Bisection steps over sequential passes (each may rebuild); log-λ resolution 34.5 / 2¹⁶ nats.
SEQUENTIAL_ITERATIONS = 16


def _sequential(allocate_at: _SequentialAllocator, baselines, totals, layerwise, config, evaluate) -> tuple[Allocation, dict]:
    """Tune λ again over sequential passes and keep whichever selection fits the network better.

    Re-scored with upstream error included, candidates look different (worse, or with
    refit often better), so the layerwise λ would miss or under-use the cost targets: λ is
    bisected again with the sequential pass as the allocator. The sequential allocation is
    kept only if it meets every target and its calibration KL to the parent's outputs is
    not larger than the layerwise one's, so the result is never worse on that objective.
    With ``refit`` the candidates are refitted to the compressed network's inputs: the target
    is ``W* = W Σ_{x x̂} Σ_{x̂ x̂}⁻¹`` with Σ-norm ``Σ_{x̂ x̂}``, which minimises
    ``E‖W x − W̃ x̂‖²`` (reduced-rank regression, Zhang et al. 2016) **[our choice of refit]**.
    """
    sequential, ok = _choose(allocate_at, baselines, totals, config, evaluate, iterations=SEQUENTIAL_ITERATIONS)
    comparison: dict = {"kept": "layerwise", "sequential_lambda": sequential.lam, "layerwise_lambda": layerwise.lam,
                        "sequential_choice": _choice_text(sequential), "layerwise_choice": _choice_text(layerwise)}
    if not ok or not sequential.factorized:
        comparison["reason"] = "no sequential choice meets the cost targets"
        return layerwise, comparison
    seq_point, lw_point = evaluate(sequential), evaluate(layerwise)
    comparison.update(layerwise_calibration_kl=lw_point["calibration_kl"], sequential_calibration_kl=seq_point["calibration_kl"])
    if config.max_drop is not None and seq_point["est_drop_ucb95"] > config.max_drop:
        comparison["reason"] = "the sequential choice exceeds the accuracy budget"
        return layerwise, comparison
    if seq_point["calibration_kl"] <= lw_point["calibration_kl"]:
        comparison.update(kept="sequential", reason="lower or equal calibration KL")
        return sequential, comparison
    comparison["reason"] = "layerwise has the lower calibration KL"
    return layerwise, comparison


def _choice_text(alloc: Allocation) -> dict[str, str]:
    return {k: (f"{v.method}{list(v.rank)}" if v is not None else "dense") for k, v in alloc.choice.items()}


def _refit_front(parent, current, summary, name, front, calib_x, config, *, n_iter_max: int):
    """Refit ``front``'s method/rank pairs to the inputs ``current`` feeds layer ``name``.

    Target ``W* = W Σ_{x x̂} Σ_{x̂ x̂}⁻¹`` in the ``Σ_{x̂ x̂}`` norm (see :func:`_sequential`).
    """
    from lrf_core.calibration import layer_input_vectors
    from lrf_core.covariance import InputStatistics, covariance_factor
    from lrf_core.layout import kernel_to_matrix, matrix_to_kernel

    geometry = summary.record(name).geometry
    x = layer_input_vectors(_layer_inputs(parent, [name], calib_x)[name], geometry).astype(np.float64)
    x_hat = layer_input_vectors(_layer_inputs(current, [name], calib_x)[name], geometry).astype(np.float64)
    n = x.shape[0]
    sigma_hat = InputStatistics(x_hat.T @ x_hat / n, x_hat.mean(axis=0), n)
    cross = x.T @ x_hat / n
    kernel, bias = kernel_and_bias(parent.get_layer(name))
    root = covariance_factor(sigma_hat.second_moment)
    target = matrix_to_kernel(kernel_to_matrix(kernel) @ cross @ np.linalg.inv(root.damped), kernel.shape)
    refitted = []
    for c in front:
        method = get_method(geometry.kind, c.method)
        fitted = fit_layer(name, target, bias, geometry, method, c.rank, stats=sigma_hat,
                           objective=config.objective, seed=config.seed, n_iter_max=n_iter_max)
        refitted.append(Candidate(fitted, latency_s=c.latency_s))
    return refitted


def _refit_chosen(parent, summary, alloc: Allocation, stats, config, parent_inputs, layer_map: LayerMap,
                  done: Optional[dict] = None, log: Optional[list] = None) -> Allocation:
    """Refit the chosen candidates of iterative methods with the full sweep schedule.

    Candidates are scored after ``search_iterations`` ALS sweeps (cheap, enough to rank
    them); only the chosen ones get the full fit (as jobs, through ``layer_map``), whose
    similarity is measured again. A refit is kept only when it is at least as similar.
    ``done`` (candidate id → its outcome, filled here) spares refitting a candidate that an
    earlier choice of the same search (a recovery budget) already chose. ``log`` gets one
    record per refit: layer, method, rank, seconds, sweeps run, Σ-error and similarity before
    and after, kept (the report's ``refits``: what the refit phase costs and buys, per method).
    """
    done = {} if done is None else done
    choice = dict(alloc.choice)
    # svd is closed form (a refit is identical); a candidate refitted for another choice is reused
    chosen = {name: c for name, c in alloc.factorized.items() if c.method != "svd" and id(c) not in done}
    jobs = [RefitJob(_layer_weights(parent, summary, name, stats[name]), c.method, c.rank, config.objective, config.seed)
            for name, c in chosen.items()]
    for (name, previous), ([fitted], info) in zip(chosen.items(), layer_map(run_job, jobs)):
        layer = parent.get_layer(name)
        tail = feature_map_tail(parent, name)
        reference = reference_feature_map(layer, tail, parent_inputs[name])
        (refit,) = score_similarity([fitted.with_scores(latency_s=previous.latency_s)], layer, tail,
                                    parent_inputs[name], reference, config.similarity)
        kept = refit.similarity >= previous.similarity
        done[id(previous)] = (previous, refit if kept else previous)
        if log is not None:
            log.append({"layer": name, "method": refit.method, "rank": list(refit.rank), "seconds": info.get("fit_s"),
                        "sweeps": info.get("sweeps"), "proxy_error_before": previous.proxy_error,
                        "proxy_error_after": refit.proxy_error, "similarity_before": previous.similarity,
                        "similarity_after": refit.similarity, "kept": kept})
    for name, c in alloc.factorized.items():
        if id(c) in done:
            choice[name] = done[id(c)][1]
    return Allocation(choice, alloc.lam)


# -- report -------------------------------------------------------------------------------


def _targets_text(config: CompressConfig) -> str:
    parts = [f"{k} ≤ {getattr(config.targets, k):.0%}" for k in config.targets.active]
    if config.max_drop is not None:
        parts.append(f"accuracy drop ≤ {config.max_drop} points")
    return ", ".join(parts) or "none"


def _report_skeleton(parent, summary, layers, alloc, fronts, counts, baselines, config, timer, lambda_path, *,
                     reverted: Sequence[str] = ()) -> dict:
    rows = []
    for name in layers:
        record = summary.record(name)
        base = baselines[name]
        chosen = alloc.choice.get(name)
        row = {
            "layer": name, "type": record.class_name, "params_before": base.cost.params, "macs_before": base.cost.macs,
            "latency_before_s": base.latency_s,
        }
        if chosen is None:
            reason = (REVERTED_REASON if name in reverted else _dense_reason(fronts[name], counts[name]))
            row.update(status="dense", reason=reason,
                       params_after=base.cost.params, macs_after=base.cost.macs)
        else:
            row.update(
                status="factorized", method=chosen.method, rank=list(chosen.rank),
                params_after=chosen.cost.params, macs_after=chosen.cost.macs,
                sigma_error=chosen.fitted.sigma_error, similarity=chosen.similarity, latency_after_s=chosen.latency_s,
            )
        rows.append(row)
    skipped = [{"layer": r.name, "type": r.class_name, "reason": r.skip_reason}
               for r in summary.layers if r.skip_reason and r.name not in layers]
    config_dict = asdict(config)
    config_dict["methods"] = {k: list(v) for k, v in config.methods.items()}
    return {
        "lrflow_version": __version__,
        "model": parent.name,
        "config": config_dict,
        "layers": rows,
        "skipped_layers": skipped,
        "candidates": {name: [c.as_dict() for c in fronts[name]] for name in layers},
        "candidate_counts": counts,
        "lambda": alloc.lam,
        "lambda_path": lambda_path,
        "phases_s": {k: round(v, 3) for k, v in timer.phases.items()},
    }


REVERTED_REASON = "sent back to dense by the whole-model latency guard (the rebuilt child was slower than the parent)"


def _dense_reason(front, counts) -> str:
    if counts.get("skipped"):
        return counts["skipped"]
    if not front:
        if counts.get("dropped_latency"):
            return "every saving candidate was slower than the dense layer"
        return "no candidate saves parameters and MACs"
    return "keeping it dense was the better trade-off for the target"


def evaluate_final(report, parent, child, data, config, totals, ft: FinetuneResult, model_latency_fn):
    parent_cost, child_cost = model_cost(parent), model_cost(child)
    p_val, c_val = _predict(parent, data.val.x), _predict(child, data.val.x)
    report["parent"] = {"params": parent_cost.params, "macs": parent_cost.macs, "val_accuracy": _accuracy(p_val, data.val.y)}
    report["child"] = {"params": child_cost.params, "macs": child_cost.macs, "val_accuracy": _accuracy(c_val, data.val.y)}
    if data.test is not None:
        report["parent"]["test_accuracy"] = _accuracy(_predict(parent, data.test.x), data.test.y)
        report["child"]["test_accuracy"] = _accuracy(_predict(child, data.test.x), data.test.y)
    if model_latency_fn is not None:
        parent_s, (ratio,) = compare_models(model_latency_fn, parent, [child])
        report["parent"]["latency_s"], report["child"]["latency_s"] = parent_s, parent_s * ratio.median
        report["child"]["latency_ratio"] = ratio.as_dict()
        if isinstance(model_latency_fn, ModelLatency):  # a plain function says nothing of batch or threads
            timing = model_latency_fn.config
            report["child"]["latency_timing"] = {"batch": timing.batch, "threads": timing.threads}
    report["finetune"] = asdict(ft)
    drop = 100.0 * (report["parent"]["val_accuracy"] - report["child"]["val_accuracy"])
    targets = []
    for name in config.targets.active:
        goal = getattr(config.targets, name)
        if name == "latency":
            achieved = report["child"].get("latency_s", math.inf) / report["parent"].get("latency_s", math.inf)
        else:
            achieved = getattr(child_cost, name) / getattr(parent_cost, name)
        targets.append({"name": f"{name}_kept", "target": goal, "achieved": achieved, "met": achieved <= goal + 1e-12})
    if config.max_drop is not None:
        targets.append({"name": "val_accuracy_drop_points", "target": config.max_drop, "achieved": drop,
                        "met": drop <= config.max_drop + 1e-9})
    report["targets"] = targets
    report["totals_check"] = {
        "params_after_sum_of_layers": totals.params + sum(r["params_after"] - r["params_before"] for r in report["layers"]),
        "params_after_keras": int(child.count_params()),
    }
