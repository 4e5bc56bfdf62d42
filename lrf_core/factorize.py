"""Fit one layer: run a method, shift the bias, measure the errors and the cost.

Objective ``"sigma"`` fits with the *centered* covariance and restores the mean output
by the bias shift ``b̃ = b + (W − W̃) μ`` (METHODS.md §2) when the layer has a bias; a
layer without bias is fitted with the uncentered ``Σ_u`` instead (nothing to shift).
With a bias shift, the residual output error is ``E‖(W − W̃)(x − μ)‖²``, never more
than the uncentered optimum's ``E‖(W − W̃)x‖²``.

The reported ``sigma_error`` is the relative pre-activation output error on the
calibration data, ``√(E‖(W − W̃)x − δ‖² / E‖W x‖²)`` with ``δ`` the bias shift; with no
shift it is exactly METHODS.md's uncentered relative Σ-error ``‖(W − W̃)L_u‖/‖W L_u‖``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

from lrf_core.covariance import CovarianceFactor, InputStatistics, covariance_factor, relative_frobenius_error
from lrf_core.decompose.base import Cost, Factorization, LayerGeometry, LayerSpec, Method
from lrf_core.errors import DataError
from lrf_core.layout import kernel_to_matrix
from lrf_core.memo import digest, memoized_for

__all__ = ["Objective", "FittedLayer", "FULL_SWEEPS", "fit_layer", "output_error"]

logger = logging.getLogger(__name__)

Objective = Literal["sigma", "frobenius"]


@dataclass(frozen=True)
class FittedLayer:
    """A factorized layer, ready to rebuild: the chain, its cost and its errors."""

    layer: str
    geometry: LayerGeometry
    factorization: Factorization
    specs: tuple[LayerSpec, ...]
    bias: Optional[np.ndarray]
    cost_before: Cost
    cost_after: Cost
    frobenius_error: float
    sigma_error: Optional[float]

    @property
    def method(self) -> str:
        return self.factorization.method

    @property
    def rank(self) -> tuple[int, ...]:
        return self.factorization.rank

    def as_dict(self) -> dict:
        return {
            "layer": self.layer,
            "method": self.method,
            "rank": list(self.rank),
            "objective": self.factorization.objective,
            "params_before": self.cost_before.params,
            "params_after": self.cost_after.params,
            "macs_before": self.cost_before.macs,
            "macs_after": self.cost_after.macs,
            "frobenius_error": self.frobenius_error,
            "sigma_error": self.sigma_error,
            "chain": [spec.class_name for spec in self.specs],
        }


def output_error(w: np.ndarray, w_approx: np.ndarray, stats: InputStatistics, shift: Optional[np.ndarray]) -> float:
    """``√(E‖(W − W̃)x − δ‖² / E‖Wx‖²)`` from the moments (see module docstring)."""
    dw = w - w_approx
    sigma_u = stats.second_moment
    # two BLAS products; a three-operand einsum would loop naively over T·D² terms
    num = float(np.sum((dw @ sigma_u) * dw))
    if shift is not None:
        num += -2.0 * float(shift @ (dw @ stats.mean)) + float(shift @ shift)
    # the same for every candidate of the layer: once per layer inside a layer_memo block
    den = memoized_for(stats, ("output_energy", digest(w)), lambda: float(np.sum((w @ sigma_u) * w)))
    if den <= 0:
        return 0.0
    return float(np.sqrt(max(num, 0.0) / den))


def _sigma_factor(stats: InputStatistics, centered: bool) -> CovarianceFactor:
    """Σ's Cholesky factor, once per layer inside a ``layer_memo`` block (hashing the D×D Σ for every
    candidate cost 0.15 s each at D = 4 608)."""
    return memoized_for(stats, ("sigma_factor", centered), lambda: covariance_factor(stats.sigma(centered=centered)))


#: ALS sweep cap of a final fit (the search scores candidates with fewer, see CompressConfig).
FULL_SWEEPS = 100


def fit_layer(
    layer: str,
    kernel: np.ndarray,
    bias: Optional[np.ndarray],
    geometry: LayerGeometry,
    method: Method,
    rank: tuple[int, ...],
    *,
    stats: Optional[InputStatistics] = None,
    objective: Objective = "sigma",
    seed: int = 0,
    n_iter_max: int = FULL_SWEEPS,
) -> FittedLayer:
    """Factorize one layer and build its chain.

    Parameters
    ----------
    kernel, bias : the layer's weights (Keras layout), bias ``(T,)`` or None
    method, rank : a registered method and a validated rank tuple
    stats : input statistics of the layer (needed for ``objective="sigma"`` and for
        ``sigma_error``); with ``objective="frobenius"`` they only serve the report
    n_iter_max : ALS sweep cap for the iterative methods (the search scores with fewer)
    """
    if objective not in ("sigma", "frobenius"):
        raise DataError(f"Unknown objective {objective!r}: expected 'sigma' or 'frobenius'.")
    if objective == "sigma" and stats is None:
        raise DataError(
            f"Layer `{layer}`: the Σ objective needs calibration statistics. Pass calibration data "
            "(--data) or use --objective frobenius."
        )
    if stats is not None and stats.dim != geometry.input_dim:
        raise DataError(
            f"Layer `{layer}`: statistics have dimension {stats.dim}, the layer input has D={geometry.input_dim}."
        )
    use_sigma = objective == "sigma" and method.supports_sigma
    centered = use_sigma and bias is not None
    sigma = _sigma_factor(stats, centered) if use_sigma else None
    fact = method.fit(kernel, rank, sigma=sigma, seed=seed, n_iter_max=n_iter_max)
    w = kernel_to_matrix(kernel)
    w_approx = kernel_to_matrix(method.reconstruct(fact))
    shift = (w - w_approx) @ stats.mean if centered else None
    new_bias = bias + shift if shift is not None else bias
    specs = tuple(method.layers(fact, geometry, new_bias))
    return FittedLayer(
        layer=layer,
        geometry=geometry,
        factorization=fact,
        specs=specs,
        bias=new_bias,
        cost_before=geometry.dense_cost(),
        cost_after=method.cost(geometry, fact.rank),
        frobenius_error=relative_frobenius_error(w, w_approx),
        sigma_error=output_error(w, w_approx, stats, shift) if stats is not None else None,
    )
