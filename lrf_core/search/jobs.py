"""Per-layer fitting as picklable jobs, so a caller can spread the search over processes.

The candidate phase (METHODS.md §3.1–3.2) and the final full-sweep refit fit each layer
independently of the others: a fit needs only that layer's kernel, bias, geometry and Σ
statistics. A job holds exactly those NumPy arrays and settings (no Keras objects), and
:func:`run_job` is a module-level function, so the ``layer_map`` that runs the jobs can be
:func:`local_map` (the default: lazy, so progress is reported per layer), a process pool's
``map`` or a Dask client's (``tasks.distributed.layer_map_on``). Each job is deterministic
given its seed, so the decisions do not depend on where the jobs ran.

What needs the Keras model stays with the caller: the latency filter (a block timed on a
busy worker would say nothing about the serving machine) and feature-map similarity.

A ``layer_map(fn, jobs)`` must return ``fn``'s results **in the order of** ``jobs``.

BLAS threads: :func:`run_job` fits a layer whose input dimension ``D`` (Σ is ``D × D``) is
below :data:`SINGLE_THREAD_BELOW_DIM` with one BLAS thread, restored afterwards. On the 2-core
reference machine (OpenBLAS) threading the many small products and Cholesky solves of an ALS
sweep costs more than it gains: a Tucker-2 fit of a 3×3×64×64 kernel takes 0.28 s with one
thread and 0.67 s with two, and a whole ResNet-style search (16 layers, D ≤ 576) 21.5 s
against 56 s. At 3×3×512×512 (D = 4 608) two threads win, 15.4 s against 21.0 s.

Larger layers keep two threads for NumPy's products but run SciPy's own LAPACK (the
``scipy.libs`` OpenBLAS that wheel installs load next to NumPy's) with one: the ALS's small
Cholesky solves run between NumPy's large products, and two OpenBLAS thread pools on two cores
wait on each other's spinning threads. Measured: a 402² Cholesky right after a NumPy GEMM took
~100 ms instead of 2 ms in two of five calls, a 1 152² one 105 ms instead of 20 ms.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
from threadpoolctl import ThreadpoolController, threadpool_limits

from lrf_core.covariance import InputStatistics
from lrf_core.decompose.base import LayerGeometry
from lrf_core.decompose.registry import get_method
from lrf_core.factorize import FULL_SWEEPS, Objective, fit_layer
from lrf_core.search.candidates import Candidate, fit_candidates

__all__ = ["SINGLE_THREAD_BELOW_DIM", "LayerWeights", "GridJob", "BaselineJob", "RefitJob", "Job", "JobResult", "LayerMap", "run_job", "local_map"]

#: Layers with a smaller input dimension are fitted with one BLAS thread (see the module docstring).
SINGLE_THREAD_BELOW_DIM = 1024

#: ``(candidates, counts)``: the fitted candidates of one layer and the counts for the report.
JobResult = tuple[list[Candidate], dict]


@dataclass(frozen=True)
class LayerWeights:
    """One layer's weights and input statistics: kernel in Keras layout, bias ``(T,)`` or None."""

    layer: str
    kernel: np.ndarray
    bias: Optional[np.ndarray]
    geometry: LayerGeometry
    stats: Optional[InputStatistics]


@dataclass(frozen=True)
class GridJob:
    """Every allowed method × its rank grid, cost-filtered and fitted (:func:`fit_candidates`)."""

    weights: LayerWeights
    method_ids: tuple[str, ...]
    grid_points: int
    objective: Objective
    seed: int
    n_iter_max: int

    def run(self) -> JobResult:
        w = self.weights
        return fit_candidates(w.layer, w.kernel, w.bias, w.geometry, self.method_ids, stats=w.stats,
                              objective=self.objective, grid_points=self.grid_points, seed=self.seed,
                              n_iter_max=self.n_iter_max)


@dataclass(frozen=True)
class BaselineJob:
    """One candidate at a baseline rule's rank: ``"vbmf"`` (Tucker-2) or ``"energy:F"`` (METHODS.md §5)."""

    weights: LayerWeights
    method_id: str
    rule: str
    objective: Objective
    seed: int

    def run(self) -> JobResult:
        from lrf_core.rank_baselines import ENERGY_METHODS, energy_ranks_for, vbmf_ranks_tucker2

        w = self.weights
        method = get_method(w.geometry.kind, self.method_id)
        if self.rule == "vbmf":
            if self.method_id != "tucker2":
                return [], {"generated": 0, "skipped": f"vbmf ranks are defined for tucker2 only (got {self.method_id})"}
            rank = vbmf_ranks_tucker2(w.kernel)
        else:
            if self.method_id not in ENERGY_METHODS.get(w.geometry.kind, ()):
                return [], {"generated": 0, "skipped": f"energy ranks not defined for {self.method_id}"}
            rank = energy_ranks_for(w.kernel, self.method_id, float(self.rule.split(":", 1)[1]))
        rank = tuple(min(r, m) for r, m in zip(rank, method.max_rank(w.geometry)))
        cost, dense = method.cost(w.geometry, rank), w.geometry.dense_cost()
        if cost.params >= dense.params or cost.macs >= dense.macs:
            return [], {"generated": 1, "dropped_cost": 1}
        return [_fit(w, self.method_id, rank, self.objective, self.seed)], {"generated": 1, "fitted": 1}


@dataclass(frozen=True)
class RefitJob:
    """One method/rank fitted again with ``n_iter_max`` sweeps (the chosen candidate's final fit)."""

    weights: LayerWeights
    method_id: str
    rank: tuple[int, ...]
    objective: Objective
    seed: int
    n_iter_max: int = FULL_SWEEPS

    def run(self) -> JobResult:
        started = time.perf_counter()
        candidate = _fit(self.weights, self.method_id, self.rank, self.objective, self.seed, self.n_iter_max)
        return [candidate], {"fitted": 1, "fit_s": round(time.perf_counter() - started, 3),
                             "sweeps": len(candidate.fitted.factorization.history)}


def _fit(w: LayerWeights, method_id: str, rank: tuple[int, ...], objective: Objective, seed: int,
         n_iter_max: int = FULL_SWEEPS) -> Candidate:
    method = get_method(w.geometry.kind, method_id)
    return Candidate(fit_layer(w.layer, w.kernel, w.bias, w.geometry, method, rank, stats=w.stats,
                               objective=objective, seed=seed, n_iter_max=n_iter_max))


Job = Union[GridJob, BaselineJob, RefitJob]
LayerMap = Callable[[Callable[[Job], JobResult], Sequence[Job]], Iterable[JobResult]]


def run_job(job: Job) -> JobResult:
    """Run one job (module-level, so process pools and Dask can pickle it by reference).

    Small layers run with one BLAS thread (:data:`SINGLE_THREAD_BELOW_DIM`), larger ones with SciPy's
    vendored BLAS at one thread (module docstring); the settings are restored when the job ends.
    """
    small = job.weights.geometry.input_dim < SINGLE_THREAD_BELOW_DIM
    with threadpool_limits(limits=1, user_api="blas") if small else _scipy_blas_single_thread():
        return job.run()


def _scipy_blas_single_thread():
    """SciPy's vendored OpenBLAS limited to one thread (module docstring); a no-op when SciPy shares NumPy's BLAS."""
    controller = ThreadpoolController()
    vendored = [lib.filepath for lib in controller.lib_controllers if f"{os.sep}scipy.libs{os.sep}" in lib.filepath]
    return controller.select(filepath=vendored).limit(limits=1) if vendored else nullcontext()


def local_map(fn: Callable[[Job], JobResult], jobs: Sequence[Job]) -> Iterable[JobResult]:
    """Run the jobs one after another in this process, lazily (the caller reports progress per layer)."""
    return map(fn, jobs)
