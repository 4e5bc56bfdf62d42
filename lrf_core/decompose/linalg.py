"""Small linear-algebra building blocks shared by the methods.

Deterministic by construction: singular vectors get a fixed sign (the entry of
largest magnitude in each left singular vector is positive), so two runs give
identical factors.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular

from lrf_core.covariance import CovarianceFactor
from lrf_core.memo import digest, memoized

__all__ = ["truncated_svd", "leading_left_vectors", "lowrank_factors", "chain_kernel"]


def _column_signs(u: np.ndarray) -> np.ndarray:
    """``(r,)`` ±1: the sign that makes each column's entry of largest magnitude positive."""
    pivot = np.argmax(np.abs(u), axis=0)
    signs = np.sign(u[pivot, np.arange(u.shape[1])])
    signs[signs == 0] = 1.0
    return signs


def truncated_svd(matrix: np.ndarray, rank: int, *, shared: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sign-fixed rank-``r`` SVD: ``matrix ≈ U diag(s) Vt``.

    Returns ``U (M, r)``, ``s (r,)``, ``Vt (r, N)`` in float64. ``shared=True`` (for a matrix that
    does not depend on the rank) keeps the full SVD for every rank asked of the same matrix
    inside a :func:`lrf_core.memo.layer_memo` block; rank-dependent matrices (ALS iterates) would
    only fill the memo.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    compute = lambda: np.linalg.svd(matrix, full_matrices=False)  # noqa: E731
    full = memoized(("svd", digest(matrix)), compute) if shared else compute()
    u, s, vt = full[0][:, :rank], full[1][:rank].copy(), full[2][:rank]
    signs = _column_signs(u)
    return u * signs, s, vt * signs[:, None]


def leading_left_vectors(matrix: np.ndarray, rank: int) -> np.ndarray:
    """The ``rank`` leading left singular vectors ``(M, r)`` of ``matrix (M, N)``, sign-fixed as
    :func:`truncated_svd`'s.

    A wide or square matrix (``N ≥ M``) goes through the eigenvectors of the ``M × M`` Gram
    ``A Aᵀ`` instead of an SVD that also computes ``Vt`` **[our choice]**: HOOI needs only the
    left basis, and its projected unfoldings are that wide (``S × kh·kw·r_T``). On a
    3×3×512×512 ResNet-50 kernel the Tucker-2 grid (9 ranks, 5 sweeps) spent 56 of its 196 s
    in those SVDs; with the Gram path for ``N ≥ 2M`` it spent 18 s and took 175 s. Squaring
    the condition number costs accuracy only in directions whose singular values are below
    ~1e-8 of the largest, which carry no energy of the fit.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    m, n = matrix.shape
    if n < m:  # tall: the M × M Gram would be larger than the matrix; the thin SVD is cheaper
        return truncated_svd(matrix, rank)[0]
    _, vectors = np.linalg.eigh(matrix @ matrix.T)
    u = vectors[:, ::-1][:, :rank]  # eigh sorts ascending
    return u * _column_signs(u)


def lowrank_factors(
    w: np.ndarray, rank: int, sigma: CovarianceFactor | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Best rank-``r`` ``W ≈ B A`` in the Frobenius or the Σ-norm (METHODS.md §2, matrix case).

    Plain: truncated SVD, ``B = U_r √s``, ``A = √s V_rᵀ`` (balanced scales).
    Σ-norm: ``W̃ = [W L]_r L⁻¹`` (Eckart–Young in the whitened space, as SVD-LLM):
    ``B = U_r √s``, ``A = √s V_rᵀ L⁻¹``; this minimises ``‖(W − BA) L‖_F`` exactly.

    Parameters
    ----------
    w : ``(T, D)``; rank : ``1 <= r <= min(T, D)``

    Returns
    -------
    B : ``(T, r)``, A : ``(r, D)``
    """
    target = w if sigma is None else w @ sigma.root
    u, s, vt = truncated_svd(target, rank, shared=True)
    root_s = np.sqrt(s)
    b, a = u * root_s, root_s[:, None] * vt
    if sigma is not None:
        # A L = √s Vᵀ  ⇔  Lᵀ Aᵀ = (√s Vᵀ)ᵀ, a triangular solve instead of forming L⁻¹
        a = solve_triangular(sigma.root, a.T, trans="T", lower=True).T
    return b, a


def chain_kernel(weights: np.ndarray, kernel_size: tuple[int, int], in_channels: int) -> np.ndarray:
    """Matrix ``(out, kh·kw·in)`` → Keras Conv2D kernel ``(kh, kw, in, out)`` (layout order)."""
    from lrf_core.layout import matrix_to_kernel

    kh, kw = kernel_size
    return matrix_to_kernel(weights, (kh, kw, in_channels, weights.shape[0]))
