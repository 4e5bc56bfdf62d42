"""Tucker factorization of a tensorized Dense weight [our choice] (METHODS.md §1, row ``tucker``).

The papers give no Dense Tucker; this construction is **our choice**. The Dense kernel
``(m, n)`` is tensorized with two input modes ``m = m_1 m_2`` and two output modes
``n = n_1 n_2`` (:func:`lrf_core.decompose.tensorize.dense_modes`, the most balanced
factorizations) and approximated by a 4-way Tucker decomposition::

    kernel[(i_1, i_2), (j_1, j_2)]
        ≈ Σ_{p,q,r,s} G[p, q, r, s] · U_in1[i_1, p] · U_in2[i_2, q] · U_out1[j_1, r] · U_out2[j_2, s]

with ranks ``(r_in1, r_in2, r_out1, r_out2)`` ≤ ``(m_1, m_2, n_1, n_2)``.
Params ``m_1 r_in1 + m_2 r_in2 + r_in1 r_in2 r_out1 r_out2 + n_1 r_out1 + n_2 r_out2``
(+ n bias).

Fitting: HOSVD initialisation, then HOOI sweeps (De Lathauwer et al. 2000), plain
Frobenius (Σ is not used, [our choice], METHODS.md §2). Exact at full rank. The factors
have orthonormal columns; the core carries the scale.

Keras: ``Reshape((m_1, m_2))`` → ``EinsumDense`` by each input factor → ``EinsumDense``
by the core → ``EinsumDense`` by each output factor → ``Reshape((n,))``, bias and
activation on the last ``EinsumDense``. MACs per input vector, with the input
factors applied in the order 1, 2 and the output factors in the order 1, 2::

    m_1 m_2·r_in1 + m_2·r_in1·r_in2 + r_in1 r_in2 r_out1 r_out2 + n_1·r_out1·r_out2 + n_1 n_2·r_out2

Within each factor pair the order with fewer MACs is used (swap the indices 1 ↔ 2 of
that pair in the formula); times ``geometry.positions``, which is 1 for the 2-D inputs
this method applies to.
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

__all__ = ["DENSE_TUCKER", "fit_dense_tucker", "reconstruct_dense_tucker", "tucker_modes"]

RANK_NAMES = ("r_in1", "r_in2", "r_out1", "r_out2")


def tucker_modes(kernel_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """``(m_1, m_2, n_1, n_2)`` for a Dense kernel ``(m, n)``: also the full Tucker rank."""
    m, n = kernel_shape
    in_modes, out_modes = dense_modes(m, n, 2)
    return in_modes + out_modes  # type: ignore[return-value]


def _max_rank(geometry: LayerGeometry) -> tuple[int, int, int, int]:
    return tucker_modes(geometry.kernel_shape)


def _unfold(tensor: np.ndarray, mode: int) -> np.ndarray:
    return np.moveaxis(tensor, mode, 0).reshape(tensor.shape[mode], -1)


def _mode_dot(tensor: np.ndarray, factor: np.ndarray, mode: int) -> np.ndarray:
    """``tensor ×_mode factorᵀ``: axis ``mode`` (size ``I``) becomes the ``r`` of ``factor (I, r)``."""
    if mode == 0:  # one matrix product on the contiguous array, no transposed copy
        rest = tensor.shape[1:]
        return (factor.T @ tensor.reshape(tensor.shape[0], -1)).reshape(factor.shape[1], *rest)
    return np.moveaxis(np.tensordot(tensor, factor, axes=([mode], [0])), -1, mode)


def _project(tensor: np.ndarray, factors: list[np.ndarray]) -> np.ndarray:
    """``tensor ×_k U_kᵀ`` for every mode ``k``: the Tucker core of orthonormal factors."""
    for mode, u in enumerate(factors):
        tensor = _mode_dot(tensor, u, mode)
    return tensor


def _hooi_sweep(tensor: np.ndarray, factors: list[np.ndarray], ranks: tuple[int, ...]) -> np.ndarray:
    """One HOOI sweep (modes in order, each with the latest others); returns the core.

    Two passes over the full tensor: the input-mode updates share ``T ×_3 U_out1ᵀ ×_4 U_out2ᵀ``,
    the output-mode updates share ``T ×_1 U_in1ᵀ ×_2 U_in2ᵀ``.
    """
    outer = _mode_dot(_mode_dot(tensor, factors[3], 3), factors[2], 2)  # (m_1, m_2, r_out1, r_out2)
    factors[0] = leading_left_vectors(_unfold(_mode_dot(outer, factors[1], 1), 0), ranks[0])
    factors[1] = leading_left_vectors(_unfold(_mode_dot(outer, factors[0], 0), 1), ranks[1])
    inner = _mode_dot(_mode_dot(tensor, factors[0], 0), factors[1], 1)  # (r_in1, r_in2, n_1, n_2)
    factors[2] = leading_left_vectors(_unfold(_mode_dot(inner, factors[3], 3), 2), ranks[2])
    factors[3] = leading_left_vectors(_unfold(_mode_dot(inner, factors[2], 2), 3), ranks[3])
    return _mode_dot(_mode_dot(inner, factors[2], 2), factors[3], 3)


def fit_dense_tucker(
    kernel: np.ndarray,
    rank: tuple[int, ...],
    *,
    sigma: Optional[CovarianceFactor] = None,
    seed: int = 0,
    n_iter_max: int = 100,
    tol: float = 1e-6,
) -> Factorization:
    """4-way Tucker (HOSVD + HOOI) of the tensorized Dense kernel.

    Parameters
    ----------
    kernel : ``(m, n)`` Dense kernel
    rank : ``(r_in1, r_in2, r_out1, r_out2)`` with ``1 <= r <= (m_1, m_2, n_1, n_2)``
    sigma : ignored (plain Frobenius fit; ``supports_sigma`` is False)
    seed : unused (HOSVD initialisation is deterministic; SVDs are sign-fixed)
    n_iter_max : maximum number of HOOI sweeps (0: plain HOSVD)
    tol : stop when the relative error changes by less than ``tol`` in a sweep

    Returns
    -------
    Factorization with factors ``(core (r_in1, r_in2, r_out1, r_out2), U_in1 (m_1, r_in1),
    U_in2 (m_2, r_in2), U_out1 (n_1, r_out1), U_out2 (n_2, r_out2))``.

    Notes
    -----
    Written with NumPy rather than ``tensorly.decomposition.tucker`` so the singular
    vectors are sign-fixed (identical factors on every run), come from small Gram
    matrices (:func:`~lrf_core.decompose.tensorize.leading_left_vectors`; each HOOI sweep
    makes two passes over the weight) and no global TensorLy backend is touched.
    A rank above what the other ranks allow (``r_in1 > r_in2 r_out1 r_out2``) gets zero
    columns: the factors keep the requested shape.
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 2:
        raise LRFError(
            f"`tucker` (Dense) factorizes a Dense kernel (m, n). Received an array of shape {kernel.shape}."
        )
    modes = tucker_modes(kernel.shape)
    ranks = check_rank_tuple("tucker", rank, modes, RANK_NAMES)
    tensor = kernel_to_tensor(kernel.astype(np.float64), modes[:2], modes[2:])
    norm = float(np.linalg.norm(tensor))

    factors = [leading_left_vectors(_unfold(tensor, k), r) for k, r in enumerate(ranks)]
    core = None
    if ranks != modes and norm > 0:  # HOOI; at full rank HOSVD is already exact
        previous = np.inf
        for _ in range(n_iter_max):
            core = _hooi_sweep(tensor, factors, ranks)
            # orthonormal (or zero) factor columns: ‖T − T̃‖² = ‖T‖² − ‖G‖²
            error = np.sqrt(max(norm**2 - float(np.sum(core**2)), 0.0)) / norm
            if abs(previous - error) < tol:
                break
            previous = error
    if core is None:
        core = _project(tensor, factors)
    return Factorization(
        method="tucker",
        kind="dense",
        rank=ranks,
        kernel_shape=tuple(kernel.shape),
        factors=(core, *factors),
        objective="frobenius",
    )


def reconstruct_dense_tucker(fact: Factorization) -> np.ndarray:
    """Kernel ``(m, n)``: ``G ×_1 U_in1 ×_2 U_in2 ×_3 U_out1 ×_4 U_out2``, reshaped."""
    core, u1, u2, v1, v2 = fact.factors
    tensor = np.einsum("pqrs,ap,bq,cr,ds->abcd", core, u1, u2, v1, v2, optimize=True)
    return tensor_to_kernel(tensor, fact.kernel_shape)


def _plan(kernel_shape: tuple[int, ...], rank: tuple[int, ...]) -> tuple[list[EinsumStep], tuple[int, ...]]:
    """The cheapest of the four chain orders and the factor indices in chain order.

    Letters: input modes ``ab``, output modes ``cd``, ranks ``pq`` (in), ``rs`` (out).
    Factor indices refer to ``Factorization.factors`` (0 is the core).
    """
    m1, m2, n1, n2 = tucker_modes(kernel_shape)
    r1, r2, r3, r4 = rank
    sizes = dict(a=m1, b=m2, c=n1, d=n2, p=r1, q=r2, r=r3, s=r4)
    letters = {0: "pqrs", 1: "ap", 2: "bq", 3: "cr", 4: "ds"}
    best: Optional[tuple[list[EinsumStep], tuple[int, ...]]] = None
    for first_in in ((1, 2), (2, 1)):
        for first_out in ((3, 4), (4, 3)):
            order = first_in + (0,) + first_out
            steps = plan_einsum_chain(sizes, "ab", "cd", [letters[i] for i in order])
            if best is None or sum(s.macs for s in steps) < sum(s.macs for s in best[0]):
                best = (steps, order)
    assert best is not None
    return best


def _cost(geometry: LayerGeometry, rank: tuple[int, ...]) -> Cost:
    steps, _ = _plan(geometry.kernel_shape, tuple(rank))
    return chain_cost(steps, geometry)


def _layers(fact: Factorization, geometry: LayerGeometry, bias: Optional[np.ndarray]) -> list[LayerSpec]:
    steps, order = _plan(fact.kernel_shape, fact.rank)
    kernels = [fact.factors[i] for i in order]
    return einsum_chain_layers(steps, kernels, tucker_modes(fact.kernel_shape)[:2], geometry, bias)


def _not_applicable(geometry: LayerGeometry) -> Optional[str]:
    return tensorization_problem(geometry, "tucker")


DENSE_TUCKER = Method(
    id="tucker",
    kind="dense",
    summary="Tucker of the (m1·m2)×(n1·n2) tensorized weight: Reshape → 5×EinsumDense → Reshape",
    rank_names=RANK_NAMES,
    fit=fit_dense_tucker,
    reconstruct=reconstruct_dense_tucker,
    layers=_layers,
    cost=_cost,
    max_rank=_max_rank,
    supports_sigma=False,
    not_applicable=_not_applicable,
)
