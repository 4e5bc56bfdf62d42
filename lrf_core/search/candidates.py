"""Candidates per layer: method × rank grid, cost filter, Σ proxy, Pareto filter, similarity.

METHODS.md §3.1–3.3 and §3.7:

1. every allowed method × a geometric rank grid (``grid_points`` per method; tied ranks
   scaled with the layer's limits, plus untied Tucker-2 ranks), except methods the svd
   candidates dominate on the layer (:func:`dominated_by_svd`: on a 1×1 kernel under the Σ
   objective);
2. a candidate whose params or MACs are not below the dense layer's is dropped before fitting;
3. every other candidate is fitted and scored by the Σ proxy (the relative pre-activation
   output error from the input statistics, no forward pass); with a latency function, one
   slower than the dense layer is dropped (its block is timed once per shape, cached);
4. only Pareto-optimal candidates in (params, MACs, proxy error) survive; they are then
   scored by the similarity of the feature map the next layer sees.

Steps 1–3 without the latency rule are :func:`fit_candidates` (NumPy only: a job that may run in
another process, :mod:`lrf_core.search.jobs`); the latency rule and step 4's Pareto filter are
:func:`front_of`, and the similarity :func:`score_similarity`, both next to the Keras model.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import keras
import numpy as np

from lrf_core.covariance import InputStatistics
from lrf_core.decompose.base import Cost, LayerGeometry, LayerSpec, Method
from lrf_core.decompose.registry import get_method
from lrf_core.factorize import FittedLayer, Objective, fit_layer
from lrf_core.memo import layer_memo
from lrf_core.similarity import SimilarityMetric, similarity_to

__all__ = ["Candidate", "rank_grid", "dominated_by_svd", "fit_candidates", "drop_slower_than_dense", "front_of",
           "pareto_front", "feature_map_tail", "score_similarity"]

logger = logging.getLogger(__name__)

LatencyFn = Callable[[Sequence, tuple], float]

#: Layers that only transform the feature map elementwise or per channel: the "next layer
#: sees" the map after them (METHODS.md §3.3).
TAIL_LAYERS = ("BatchNormalization", "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Dropout", "Softmax")


@dataclass(frozen=True)
class Candidate:
    """A fitted factorization of one layer with its cost and scores."""

    fitted: FittedLayer
    latency_s: Optional[float] = None
    similarity: Optional[float] = None

    @property
    def layer(self) -> str:
        return self.fitted.layer

    @property
    def method(self) -> str:
        return self.fitted.method

    @property
    def rank(self) -> tuple[int, ...]:
        return self.fitted.rank

    @property
    def cost(self) -> Cost:
        return self.fitted.cost_after

    @property
    def proxy_error(self) -> float:
        return float(self.fitted.sigma_error if self.fitted.sigma_error is not None else self.fitted.frobenius_error)

    @property
    def error(self) -> float:
        """What the allocation minimises: ``1 − similarity`` when scored, else the proxy error."""
        return 1.0 - self.similarity if self.similarity is not None else self.proxy_error

    def with_scores(self, **changes) -> "Candidate":
        values = dict(latency_s=self.latency_s, similarity=self.similarity)
        values.update(changes)
        return Candidate(self.fitted, **values)

    def as_dict(self) -> dict:
        return {
            "method": self.method,
            "rank": list(self.rank),
            "params": self.cost.params,
            "macs": self.cost.macs,
            "proxy_error": self.proxy_error,
            "similarity": self.similarity,
            "latency_s": self.latency_s,
        }


def rank_grid(method: Method, geometry: LayerGeometry, points: int = 16) -> list[tuple[int, ...]]:
    """Geometric rank grid below full rank: ``ceil(f·limit_i)`` for ``points`` fractions f.

    Fractions run geometrically from ``1/max(limits)`` to 1, so small ranks are sampled
    densely. Tucker-2 also gets untied pairs ``(r, r/2)`` and ``(r/2, r)`` (METHODS.md §3.1).
    """
    limits = method.max_rank(geometry)
    top = max(limits)
    fractions = np.geomspace(1.0 / top, 1.0, num=max(points, 2))
    grid = {tuple(max(1, min(m, math.ceil(f * m))) for m in limits) for f in fractions}
    if method.id == "tucker2":
        for r_s, r_t in list(grid):
            grid.add((r_s, max(1, r_t // 2)))
            grid.add((max(1, r_s // 2), r_t))
    return sorted(grid, key=lambda r: (math.prod(r), r))


def pareto_front(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Candidates not dominated in (params, MACs, proxy error): lower is better in each."""

    def key(c: Candidate):
        return (c.cost.params, c.cost.macs, c.proxy_error)

    front = []
    for c in candidates:
        kc = key(c)
        dominated = any(
            all(a <= b for a, b in zip(key(o), kc)) and any(a < b for a, b in zip(key(o), kc))
            for o in candidates
            if o is not c
        )
        if not dominated:
            front.append(c)
    # identical keys: keep the first (deterministic order)
    unique, seen = [], set()
    for c in front:
        if key(c) not in seen:
            seen.add(key(c))
            unique.append(c)
    return unique


#: Conv2D methods that reduce to a chain of 1×1 maps on a 1×1 kernel (see :func:`dominated_by_svd`).
POINTWISE_REDUCIBLE = ("tucker2", "cp", "spatial")


def dominated_by_svd(method_ids: Sequence[str], geometry: LayerGeometry, objective: Objective) -> tuple[str, ...]:
    """The allowed methods whose every candidate an svd candidate beats or ties, so fitting them is waste.

    On a 1×1 Conv2D kernel, Tucker-2 ``(r_S, r_T)``, CP ``R`` and spatial ``r`` all give a
    ``W̃`` of rank at most ``r = min(r_S, r_T)`` / ``R`` / ``r``, at no fewer params or MACs
    than svd at rank ``r`` (``r·(S + T)``; Tucker-2's first 1×1 runs at the input resolution,
    CP adds two depthwise layers). Under the Σ objective the svd fit is the exact Σ optimum over
    rank-``r`` matrices ([W L]_r L⁻¹, METHODS.md §2) and the proxy error is that objective, so
    no such candidate is better in any of (params, MACs, proxy error). Under the Frobenius
    objective the proxy is not the fitted norm, so nothing is dropped. Only when svd is allowed.

    Measured on ResNet-50 (bench/, issue 5): the 1×1 layers' Tucker-2 grids were 100 of the
    search's 227 s of Tucker-2 fitting, for candidates the Pareto filter then removed.
    """
    if objective != "sigma" or "svd" not in method_ids or geometry.kind != "conv2d" or geometry.kernel_size != (1, 1):
        return ()
    return tuple(m for m in method_ids if m in POINTWISE_REDUCIBLE)


def fit_candidates(
    layer: str,
    kernel: np.ndarray,
    bias: Optional[np.ndarray],
    geometry: LayerGeometry,
    method_ids: Sequence[str],
    *,
    stats: Optional[InputStatistics],
    objective: Objective = "sigma",
    grid_points: int = 16,
    seed: int = 0,
    n_iter_max: int = 100,
) -> tuple[list[Candidate], dict]:
    """Steps 1–3 without latency: every saving method × rank of one layer, fitted and proxy-scored.

    NumPy only (no Keras), so it can run in another process (:mod:`lrf_core.search.jobs`).
    Returns ``(candidates, counts)``; counts has the number generated, dropped for cost and fitted,
    ``fit_s``: seconds spent fitting each method's grid (method id → s), and ``dominated``: the
    methods not fitted because svd dominates them here (:func:`dominated_by_svd`).
    """
    dominated = dominated_by_svd(method_ids, geometry, objective)
    counts = {"generated": 0, "dropped_cost": 0, "dropped_latency": 0, "fitted": 0, "fit_s": {},
              "dominated": list(dominated)}
    dense = geometry.dense_cost()
    fitted_all: list[Candidate] = []
    with layer_memo():  # Σ's root, L Lᵀ, the Σ target and start SVDs: once for the whole grid
        for method_id in method_ids:
            method = get_method(geometry.kind, method_id)
            if method.not_applicable(geometry) or method_id in dominated:
                continue
            started = time.perf_counter()  # per method: where a large model's search time goes (bench scale)
            for rank in rank_grid(method, geometry, grid_points):
                counts["generated"] += 1
                cost = method.cost(geometry, rank)
                if cost.params >= dense.params or cost.macs >= dense.macs:
                    counts["dropped_cost"] += 1
                    continue
                fitted = fit_layer(layer, kernel, bias, geometry, method, rank, stats=stats, objective=objective,
                                   seed=seed, n_iter_max=n_iter_max)
                counts["fitted"] += 1
                fitted_all.append(Candidate(fitted))
            counts["fit_s"][method_id] = round(time.perf_counter() - started, 3)
    return fitted_all, counts


def drop_slower_than_dense(
    candidates: Sequence[Candidate],
    geometry: LayerGeometry,
    latency_fn: LatencyFn,
    dense_latency_s: Optional[float],
    counts: dict,
    dense_specs: Optional[Sequence[LayerSpec]] = None,
    enforce_block_rule: bool = True,
) -> tuple[list[Candidate], dict]:
    """Step 3's latency rule: time each candidate's block; drop those slower than the dense layer.

    ``enforce_block_rule=False`` times every block (the whole-model guard and latency targets use
    ``latency_s``) but drops none: the child is then judged only as a whole, where one
    block's extra call can be paid for by another's saving.

    When ``latency_fn`` can time blocks against the dense layer (``latency_fn.relative``, see
    :class:`lrf_core.latency.MeasuredLatency`) and ``dense_specs`` is given, the rule decides on
    those paired ratios and a kept block's ``latency_s`` is ``ratio × dense_latency_s``;
    otherwise on absolute block times.

    Returns the kept candidates (with ``latency_s``) and ``counts`` with ``dropped_latency`` updated.
    """
    shape = layer_input_shape(geometry)
    relative = getattr(latency_fn, "relative", None)
    if relative is not None and dense_specs is not None and dense_latency_s is not None:
        ratios = relative(dense_specs, [c.fitted.specs for c in candidates], shape)
        latencies = [r * dense_latency_s for r in ratios]
    else:
        latencies = [float(latency_fn(c.fitted.specs, shape)) for c in candidates]
    kept, dropped = [], 0
    for c, latency in zip(candidates, latencies):
        if enforce_block_rule and dense_latency_s is not None and latency > dense_latency_s:
            dropped += 1
            continue
        kept.append(c.with_scores(latency_s=latency))
    return kept, {**counts, "dropped_latency": counts.get("dropped_latency", 0) + dropped}


def front_of(
    candidates: Sequence[Candidate],
    counts: dict,
    geometry: LayerGeometry,
    latency_fn: Optional[LatencyFn],
    dense_latency_s: Optional[float],
    dense_specs: Optional[Sequence[LayerSpec]] = None,
    enforce_block_rule: bool = True,
) -> tuple[list[Candidate], dict]:
    """The latency rule (when ``latency_fn`` is given), then the Pareto filter; counts gain ``pareto``."""
    if latency_fn is not None:
        candidates, counts = drop_slower_than_dense(candidates, geometry, latency_fn, dense_latency_s, counts,
                                                    dense_specs, enforce_block_rule)
    front = pareto_front(candidates)
    return front, {**counts, "pareto": len(front)}


def layer_input_shape(geometry: LayerGeometry) -> tuple[int, ...]:
    """Input shape of the layer without batch (for latency measurement)."""
    if geometry.kind == "conv2d":
        return (*geometry.input_hw, geometry.in_channels)
    return (geometry.in_channels,)


def feature_map_tail(model: keras.Model, layer_name: str) -> list[keras.layers.Layer]:
    """The BatchNorm/activation layers that directly follow a layer (single consumer chain)."""
    tail = []
    current = model.get_layer(layer_name)
    while True:
        consumers = [node.operation for node in getattr(current, "_outbound_nodes", [])]
        consumers = [c for c in consumers if c in model.layers]
        if len(consumers) != 1 or type(consumers[0]).__name__ not in TAIL_LAYERS:
            return tail
        current = consumers[0]
        tail.append(current)


def _apply_tail(tail: Sequence[keras.layers.Layer], x):
    for layer in tail:
        x = layer(x, training=False) if type(layer).__name__ in ("BatchNormalization", "Dropout") else layer(x)
    return np.asarray(x)


def score_similarity(
    candidates: Sequence[Candidate],
    layer: keras.layers.Layer,
    tail: Sequence[keras.layers.Layer],
    layer_inputs: np.ndarray,
    reference_map: np.ndarray,
    metric: SimilarityMetric = "cka",
) -> list[Candidate]:
    """Similarity of each candidate's feature map to the parent's (eager calls, no graph edits).

    ``layer_inputs`` are the inputs the layer sees (the parent's for ``layerwise``, the
    compressed network's for ``sequential``); ``reference_map`` is the parent's feature map.
    A factor chain computes the same function as the original layer with the reconstructed
    kernel ``W̃`` and the shifted bias (the method contract tests check this to 1e-5), so
    one probe copy of the layer with swapped weights stands in for every chain: far faster
    than building each chain's Keras layers.
    """
    if not candidates:
        return []
    probe = type(layer).from_config(layer.get_config())
    probe(layer_inputs[:1])
    similarity = similarity_to(reference_map, metric)
    scored = []
    for c in candidates:
        kernel = get_method(c.fitted.geometry.kind, c.method).reconstruct(c.fitted.factorization)
        weights = [kernel] + ([c.fitted.bias] if c.fitted.bias is not None else [])
        probe.set_weights([np.asarray(w, dtype=probe.dtype) for w in weights])
        out = probe(layer_inputs)
        scored.append(c.with_scores(similarity=similarity(_apply_tail(tail, out))))
    return scored


def reference_feature_map(layer: keras.layers.Layer, tail, layer_inputs: np.ndarray) -> np.ndarray:
    """The parent's feature map after ``layer`` and its tail, on the given inputs."""
    return _apply_tail(tail, layer(layer_inputs))


__all__ += ["reference_feature_map", "layer_input_shape", "TAIL_LAYERS"]
