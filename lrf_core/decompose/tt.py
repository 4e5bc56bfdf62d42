"""Tensor-train (TT-matrix) factorization of a Dense layer (Novikov et al. 2015).

METHODS.md §1, row ``tt``. The Dense kernel ``(m, n)`` is tensorized with ``d = 3``
input modes ``m = m_1 m_2 m_3`` and output modes ``n = n_1 n_2 n_3``
(:func:`lrf_core.decompose.tensorize.dense_modes`: the most balanced factorizations,
1s allowed for integers that do not split), and written as a TT-matrix::

    kernel[(i_1, i_2, i_3), (j_1, j_2, j_3)]
        ≈ Σ_{a, b} G_1[0, i_1, j_1, a] · G_2[a, i_2, j_2, b] · G_3[b, i_3, j_3, 0]

with cores ``G_k`` of shape ``(r_{k−1}, m_k, n_k, r_k)``, ``r_0 = r_3 = 1`` and TT-ranks
``(r_1, r_2)``. Params ``Σ_k r_{k−1} m_k n_k r_k`` (+ n bias).

Fitting: TT-SVD (Oseledets 2011) of the tensor with interleaved modes
``(m_1 n_1, m_2 n_2, m_3 n_3)``, plain Frobenius (METHODS.md §2: Σ is not used for TT,
[our choice]). Exact at the full ranks ``r_k = min(Π_{j≤k} m_j n_j, Π_{j>k} m_j n_j)``.

Keras: ``Reshape((m_1, m_2, m_3))`` → one ``EinsumDense`` per core → ``Reshape((n,))``,
bias and activation on the last ``EinsumDense``. The cores are contracted left to right
or right to left, whichever has fewer MACs; per input vector these are::

    left to right:  m·n_1·r_1 + m_2 m_3·n_1·r_1·n_2·r_2 + m_3·n_1 n_2·r_2·n_3
    right to left:  m·n_3·r_2 + m_1 m_2·n_3·r_2·n_2·r_1 + m_1·n_2 n_3·r_1·n_1

(times ``geometry.positions``, which is 1 for the 2-D inputs this method applies to).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from lrf_core.covariance import CovarianceFactor
from lrf_core.decompose.base import Cost, Factorization, LayerGeometry, LayerSpec, Method, check_rank_tuple
from lrf_core.decompose.tensorize import (
    EinsumStep,
    chain_cost,
    dense_modes,
    einsum_chain_layers,
    kernel_to_tensor,
    leading_left_vectors,
    plan_einsum_chain,
    tensor_to_kernel,
    tensorization_problem,
)
from lrf_core.errors import LRFError

__all__ = ["TT", "fit_tt", "reconstruct_tt", "tt_modes", "tt_max_rank"]

#: Number of TT cores (input and output modes each); fixed, so the rank is always (r_1, r_2).
N_CORES = 3
RANK_NAMES = ("r_1", "r_2")


def tt_modes(kernel_shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``((m_1, m_2, m_3), (n_1, n_2, n_3))`` for a Dense kernel ``(m, n)``."""
    m, n = kernel_shape
    return dense_modes(m, n, N_CORES)


def _full_ranks(kernel_shape: tuple[int, ...]) -> tuple[int, int]:
    in_modes, out_modes = tt_modes(kernel_shape)
    sizes = [a * b for a, b in zip(in_modes, out_modes)]
    return tuple(  # type: ignore[return-value]
        min(int(np.prod(sizes[: k + 1])), int(np.prod(sizes[k + 1 :]))) for k in range(N_CORES - 1)
    )


def tt_max_rank(geometry: LayerGeometry) -> tuple[int, int]:
    """Full TT-ranks ``r_k = min(Π_{j≤k} m_j n_j, Π_{j>k} m_j n_j)``: the exact TT-matrix."""
    return _full_ranks(geometry.kernel_shape)


def fit_tt(
    kernel: np.ndarray,
    rank: tuple[int, ...],
    *,
    sigma: Optional[CovarianceFactor] = None,
    seed: int = 0,
    n_iter_max: int = 100,
    tol: float = 1e-6,
) -> Factorization:
    """TT-SVD of a Dense kernel with TT-ranks ``(r_1, r_2)``.

    Parameters
    ----------
    kernel : ``(m, n)`` Dense kernel
    rank : ``(r_1, r_2)`` with ``1 <= r_k <= min(Π_{j≤k} m_j n_j, Π_{j>k} m_j n_j)``
    sigma : ignored (plain Frobenius fit; ``supports_sigma`` is False)
    seed, n_iter_max, tol : unused (TT-SVD is a closed form); accepted for the common signature

    Returns
    -------
    Factorization with factors ``(G_1, G_2, G_3)``, ``G_k`` of shape
    ``(r_{k−1}, m_k, n_k, r_k)``, ``r_0 = r_3 = 1``. ``G_1`` has orthonormal columns
    (as a ``(m_1 n_1, r_1)`` matrix); the scale sits on ``G_3`` (or on ``G_2`` when the
    last unfolding is tall).

    Notes
    -----
    Written here rather than with ``tensorly.decomposition.tensor_train_matrix``: TensorLy
    silently lowers a rank that exceeds the unfolding size (the cores then no longer have
    the requested shape, so the cost of the rank would be wrong) and depends on the global
    TensorLy backend. Here such a rank is padded with zero slices (the rank is wasteful,
    never wrong), the singular vectors are sign-fixed so two runs give identical cores,
    and they come from the Gram matrix of each unfolding
    (:func:`~lrf_core.decompose.tensorize.leading_left_vectors`), much faster than a
    LAPACK SVD of the wide unfoldings of a large layer.
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 2:
        raise LRFError(f"`tt` factorizes a Dense kernel (m, n). Received an array of shape {kernel.shape}.")
    ranks = check_rank_tuple("tt", rank, _full_ranks(kernel.shape), RANK_NAMES)
    in_modes, out_modes = tt_modes(kernel.shape)
    d = N_CORES
    tensor = kernel_to_tensor(kernel.astype(np.float64), in_modes, out_modes)
    # (m_1, …, m_d, n_1, …, n_d) → (m_1, n_1, m_2, n_2, …): core k owns the pair (m_k, n_k)
    tensor = tensor.transpose([ax for k in range(d) for ax in (k, d + k)])
    full = (1,) + ranks + (1,)
    cores = []
    rest = tensor.reshape(1, -1)
    for k in range(d - 1):
        unfolding = rest.reshape(full[k] * in_modes[k] * out_modes[k], -1)
        if k == d - 2 and unfolding.shape[0] > unfolding.shape[1]:
            # last truncation of a tall unfolding: A ≈ (A V_r) V_rᵀ is the same best rank-r
            # approximation as U_r U_rᵀ A, with the orthonormal factor on the (small) right
            # side; no truncation follows, so the error bound is unchanged
            v = leading_left_vectors(unfolding.T, full[k + 1])
            left, rest = unfolding @ v, v.T
        else:
            left = leading_left_vectors(unfolding, full[k + 1])
            rest = left.T @ unfolding
        cores.append(left.reshape(full[k], in_modes[k], out_modes[k], full[k + 1]))
    cores.append(rest.reshape(full[d - 1], in_modes[d - 1], out_modes[d - 1], 1))
    return Factorization(
        method="tt",
        kind="dense",
        rank=ranks,
        kernel_shape=tuple(kernel.shape),
        factors=tuple(cores),
        objective="frobenius",
    )


def reconstruct_tt(fact: Factorization) -> np.ndarray:
    """Kernel ``(m, n)`` of a TT-matrix: contract the cores, de-interleave the modes."""
    g1, g2, g3 = fact.factors
    tensor = np.einsum("xadp,pbeq,qcfy->abcdef", g1, g2, g3, optimize=True)
    return tensor_to_kernel(tensor, fact.kernel_shape)


def _plan(kernel_shape: tuple[int, ...], rank: tuple[int, ...]) -> tuple[list[EinsumStep], bool]:
    """The cheaper contraction order and whether it runs left to right.

    Letters: input modes ``abc``, output modes ``def``, ranks ``p`` (r_1), ``q`` (r_2).
    """
    (m1, m2, m3), (n1, n2, n3) = tt_modes(kernel_shape)
    r1, r2 = rank
    sizes = dict(a=m1, b=m2, c=m3, d=n1, e=n2, f=n3, p=r1, q=r2)
    kernels = ["adp", "pbeq", "qcf"]
    forward = plan_einsum_chain(sizes, "abc", "def", kernels)
    backward = plan_einsum_chain(sizes, "abc", "def", kernels[::-1])
    if sum(s.macs for s in backward) < sum(s.macs for s in forward):
        return backward, False
    return forward, True


def _cost(geometry: LayerGeometry, rank: tuple[int, ...]) -> Cost:
    steps, _ = _plan(geometry.kernel_shape, tuple(rank))
    return chain_cost(steps, geometry)


def _layers(fact: Factorization, geometry: LayerGeometry, bias: Optional[np.ndarray]) -> list[LayerSpec]:
    steps, forward = _plan(fact.kernel_shape, fact.rank)
    g1, g2, g3 = fact.factors
    kernels = [g1[0], g2, g3[..., 0]]  # letters adp, pbeq, qcf (storage order)
    if not forward:
        kernels = kernels[::-1]
    in_modes, _ = tt_modes(fact.kernel_shape)
    return einsum_chain_layers(steps, kernels, in_modes, geometry, bias)


def _not_applicable(geometry: LayerGeometry) -> Optional[str]:
    return tensorization_problem(geometry, "tt")


TT = Method(
    id="tt",
    kind="dense",
    summary="tensor-train matrix, 3 cores: Reshape → 3×EinsumDense → Reshape",
    rank_names=RANK_NAMES,
    fit=fit_tt,
    reconstruct=reconstruct_tt,
    layers=_layers,
    cost=_cost,
    max_rank=tt_max_rank,
    supports_sigma=False,
    not_applicable=_not_applicable,
)
