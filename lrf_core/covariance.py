"""Input statistics of a layer and the Σ-norm they define (METHODS.md §2).

``Σ_u = E[x xᵀ]`` (uncentered) makes ``‖(W − W̃) L‖_F²`` the expected squared
pre-activation output error; the centered ``Σ = Σ_u − μμᵀ`` measures the error
around the mean output (the mean is restored by a bias shift). Statistics are
accumulated in float64 over batches, so memory is ``D²`` per layer whatever the
number of patches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from lrf_core.errors import DataError, NumericalError
from lrf_core.memo import digest, memoized

__all__ = [
    "InputStatistics",
    "StatisticsAccumulator",
    "CovarianceFactor",
    "covariance_factor",
    "relative_sigma_error",
    "relative_frobenius_error",
]

logger = logging.getLogger(__name__)

#: Damping tried in turn when Cholesky fails, relative to the mean diagonal (METHODS.md §2).
DAMPING_SCHEDULE = (0.0, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3)
#: A pivot below this (relative to the mean diagonal) counts as a failed Cholesky: round-off
#: lets a singular Σ "succeed" with pivots near 1e-16, whose L⁻¹ would blow up the fits.
MIN_RELATIVE_PIVOT = 1e-12


@dataclass(frozen=True)
class InputStatistics:
    """First and second moments of a layer's input vectors (im2col patches for Conv2D).

    Attributes
    ----------
    second_moment : ndarray ``(D, D)``, float64, ``E[x xᵀ]``
    mean : ndarray ``(D,)``, float64, ``E[x]``
    count : number of vectors (patches) accumulated
    """

    second_moment: np.ndarray
    mean: np.ndarray
    count: int

    def __post_init__(self) -> None:
        d = self.mean.shape[0]
        if self.second_moment.shape != (d, d):
            raise DataError(
                f"InputStatistics: second_moment must be ({d}, {d}) to match mean {self.mean.shape}. "
                f"Received {self.second_moment.shape}."
            )
        if self.count <= 0:
            raise DataError("InputStatistics: count must be positive; no calibration data was seen.")

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def covariance(self) -> np.ndarray:
        """Centered covariance ``E[x xᵀ] − μ μᵀ``, shape ``(D, D)``."""
        return self.second_moment - np.outer(self.mean, self.mean)

    def sigma(self, *, centered: bool) -> np.ndarray:
        """The Σ to fit with: centered covariance or uncentered second moment."""
        return self.covariance if centered else self.second_moment

    def __repr__(self) -> str:
        return f"InputStatistics(dim={self.dim}, count={self.count})"


@dataclass
class StatisticsAccumulator:
    """Streams batches of input vectors into :class:`InputStatistics` (float64)."""

    dim: int
    _sum_outer: np.ndarray = field(init=False, repr=False)
    _sum: np.ndarray = field(init=False, repr=False)
    _count: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._sum_outer = np.zeros((self.dim, self.dim), dtype=np.float64)
        self._sum = np.zeros(self.dim, dtype=np.float64)

    def update(self, vectors: np.ndarray) -> None:
        """Add vectors of shape ``(..., D)``; any leading shape is flattened."""
        x = np.asarray(vectors, dtype=np.float64).reshape(-1, self.dim)
        self._sum_outer += x.T @ x
        self._sum += x.sum(axis=0)
        self._count += x.shape[0]

    def result(self) -> InputStatistics:
        if self._count == 0:
            raise DataError("No calibration vectors were accumulated: the calibration set is empty.")
        second = self._sum_outer / self._count
        second = 0.5 * (second + second.T)  # exact symmetry despite round-off
        return InputStatistics(second_moment=second, mean=self._sum / self._count, count=self._count)


@dataclass(frozen=True)
class CovarianceFactor:
    """Σ with its Cholesky root: ``matrix + damping·mean(diag)·I = root @ rootᵀ``.

    Attributes
    ----------
    matrix : ndarray ``(D, D)`` the Σ as given (damping not added)
    root : ndarray ``(D, D)`` lower-triangular ``L``
    damping : relative damping ε that made Cholesky succeed (0 when none was needed)
    """

    matrix: np.ndarray
    root: np.ndarray
    damping: float

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[0])

    @cached_property
    def damped(self) -> np.ndarray:
        """``L Lᵀ``: the Σ actually used by the fits (Σ plus damping); computed once (``O(D³)``)."""
        return self.root @ self.root.T

    def __repr__(self) -> str:
        return f"CovarianceFactor(dim={self.dim}, damping={self.damping:g})"


def covariance_factor(sigma: np.ndarray) -> CovarianceFactor:
    """Cholesky root of Σ with escalating damping (METHODS.md §2).

    Tries ``Σ + ε·mean(diag Σ)·I`` for ε in 0, 1e-9, 1e-8, …, 1e-3 and keeps the first
    that factorizes with every pivot² ≥ 1e-12·mean(diag Σ) (numerically non-singular). Raises :class:`NumericalError` when none does (Σ not symmetric
    positive semi-definite, or non-finite).
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.ndim != 2 or sigma.shape[0] != sigma.shape[1]:
        raise DataError(f"Σ must be a square matrix. Received shape {sigma.shape}.")
    if not np.all(np.isfinite(sigma)):
        raise DataError("Σ contains NaN or inf: the calibration data has non-finite values.")
    # the search factors one layer's Σ once for all its candidate fits (lrf_core.memo)
    return memoized(("covariance_factor", digest(sigma)), lambda: _damped_cholesky(sigma))


def _damped_cholesky(sigma: np.ndarray) -> CovarianceFactor:
    scale = float(np.mean(np.diag(sigma)))
    if scale <= 0:
        # an all-zero input (dead layer): any W̃ gives zero Σ-error; fall back to identity scale
        scale = 1.0
    eye = np.eye(sigma.shape[0])
    for eps in DAMPING_SCHEDULE:
        try:
            root = np.linalg.cholesky(sigma + eps * scale * eye)
        except np.linalg.LinAlgError:
            continue
        if np.min(np.diag(root)) ** 2 < MIN_RELATIVE_PIVOT * scale:
            continue
        if eps:
            logger.debug("Cholesky of Σ (dim %d) needed damping ε=%g", sigma.shape[0], eps)
        return CovarianceFactor(matrix=sigma, root=root, damping=eps)
    raise NumericalError(
        f"Cholesky of Σ (dim {sigma.shape[0]}) failed even with damping {DAMPING_SCHEDULE[-1]:g}·mean(diag): "
        "Σ is not positive semi-definite. Recompute the statistics from finite calibration data."
    )


def relative_sigma_error(w: np.ndarray, w_approx: np.ndarray, sigma: CovarianceFactor) -> float:
    """``‖(W − W̃) L‖_F / ‖W L‖_F`` (METHODS.md §2); W, W̃ of shape ``(T, D)``."""
    denom = np.linalg.norm(w @ sigma.root)
    if denom == 0:
        return 0.0 if np.allclose(w, w_approx) else float("inf")
    return float(np.linalg.norm((w - w_approx) @ sigma.root) / denom)


def relative_frobenius_error(w: np.ndarray, w_approx: np.ndarray) -> float:
    """``‖W − W̃‖_F / ‖W‖_F``."""
    denom = np.linalg.norm(w)
    if denom == 0:
        return 0.0 if np.allclose(w, w_approx) else float("inf")
    return float(np.linalg.norm(w - w_approx) / denom)
