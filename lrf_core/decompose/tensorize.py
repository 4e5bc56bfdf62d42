"""Tensorized Dense weights: mode choice, reshapes and ``EinsumDense`` chains.

Shared by the tensor-train (:mod:`lrf_core.decompose.tt`) and the Dense Tucker
(:mod:`lrf_core.decompose.tucker_dense`) methods (METHODS.md §1).

Index convention. A Dense kernel ``(m, n)`` (``W = kernelᵀ``, :mod:`lrf_core.layout`)
is tensorized with input modes ``m = m_1·…·m_d`` and output modes ``n = n_1·…·n_e``
in row-major order, ``i = (…(i_1·m_2 + i_2)·m_3 + …)``, which is exactly what
``keras.layers.Reshape`` does to a ``(batch, m)`` input. So
``kernel.reshape(m_1, …, m_d, n_1, …, n_e)`` is the tensor, and a chain
``Reshape((m_1, …, m_d))`` → einsums → ``Reshape((n,))`` computes ``x @ kernel``.

A chain is planned from shapes alone (:func:`plan_einsum_chain`), so the cost of a
rank is known without fitting; the layers (:func:`einsum_chain_layers`) fill the
same plan with the fitted arrays. MACs of one einsum step are the product of the
sizes of all distinct indices it touches (output size × contracted size), per
input vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Optional, Sequence

import numpy as np

from lrf_core.decompose.base import Cost, LayerGeometry, LayerSpec
from lrf_core.decompose.linalg import truncated_svd
from lrf_core.errors import LRFError

__all__ = [
    "balanced_factors",
    "dense_modes",
    "tensorization_problem",
    "kernel_to_tensor",
    "tensor_to_kernel",
    "leading_left_vectors",
    "EinsumStep",
    "plan_einsum_chain",
    "chain_cost",
    "einsum_chain_layers",
]

#: Letter of the batch axis in every chain equation (never used for a mode or a rank).
BATCH = "z"


@lru_cache(maxsize=None)
def balanced_factors(x: int, k: int) -> tuple[int, ...]:
    """The most balanced factorization of ``x`` into ``k`` factors (1s allowed), ascending.

    Among all multisets of ``k`` positive integers whose product is ``x``, take the one
    whose factors sorted in decreasing order are lexicographically smallest (smallest
    largest factor, then smallest second largest, ...). Deterministic; a prime ``x``
    gives ``(1, …, 1, x)``.

    Examples: ``balanced_factors(48, 3) == (3, 4, 4)``, ``(60, 3) → (3, 4, 5)``,
    ``(1024, 3) → (8, 8, 16)``, ``(48, 2) → (6, 8)``, ``(7, 3) → (1, 1, 7)``.
    """
    if x < 1 or k < 1:
        raise LRFError(f"balanced_factors needs x >= 1 and k >= 1. Received x={x}, k={k}.")

    def root(value: int, parts: int) -> int:
        # largest r with r**parts <= value (exact integer root, no float rounding)
        r = int(round(value ** (1.0 / parts)))
        while r**parts > value:
            r -= 1
        while (r + 1) ** parts <= value:
            r += 1
        return r

    def search(rest: int, parts: int, low: int) -> Optional[tuple[int, ...]]:
        # best non-decreasing tuple of factors >= low with product ``rest``, compared by
        # its decreasing order; its smallest factor is at most the parts-th root of rest
        if parts == 1:
            return (rest,) if rest >= low else None
        best = None
        for f in range(low, root(rest, parts) + 1):
            if rest % f:
                continue
            tail = search(rest // f, parts - 1, f)
            if tail is not None and (best is None or ((f,) + tail)[::-1] < best[::-1]):
                best = (f,) + tail
        return best

    result = search(x, k, 1)
    assert result is not None  # f = 1 always extends
    return result


def dense_modes(m: int, n: int, d: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Input and output modes of a Dense ``(m, n)`` kernel with ``d`` modes each.

    Input modes are :func:`balanced_factors` of ``m`` in ascending order, output modes
    those of ``n`` in descending order, so the products ``m_k·n_k`` (the TT core sizes)
    are as even as the factors allow.
    """
    return balanced_factors(m, d), balanced_factors(n, d)[::-1]


def tensorization_problem(geometry: LayerGeometry, method_id: str) -> Optional[str]:
    """Why a tensorized Dense method does not apply to ``geometry``, or None.

    The chain reshapes a ``(batch, m)`` input, so the input must be 2-D; and ``m`` and
    ``n`` must each split into at least two factors > 1 (``m, n >= 4`` and not prime),
    otherwise the tensorization is a plain matrix and the method is SVD in disguise.
    """
    if geometry.kind != "dense":
        return f"`{method_id}` applies to Dense layers only (received a {geometry.kind} layer)"
    if geometry.input_ndim != 2:
        return (
            f"`{method_id}` reshapes a (batch, m) input; this Dense layer gets a "
            f"{geometry.input_ndim}-D input"
        )
    m, n = geometry.kernel_shape
    for name, size in (("m", m), ("n", n)):
        if size < 4 or max(balanced_factors(size, 2)) == size:
            return (
                f"`{method_id}` needs m and n that split into two factors > 1; "
                f"{name} = {size} does not (kernel {geometry.kernel_shape})"
            )
    return None


def kernel_to_tensor(kernel: np.ndarray, in_modes: Sequence[int], out_modes: Sequence[int]) -> np.ndarray:
    """Dense kernel ``(m, n)`` → tensor ``(m_1, …, m_d, n_1, …, n_e)`` (row-major)."""
    kernel = np.asarray(kernel)
    expected = (math.prod(in_modes), math.prod(out_modes))
    if kernel.shape != expected:
        raise LRFError(
            f"Expected a Dense kernel of shape {expected} for modes {tuple(in_modes)} x "
            f"{tuple(out_modes)}. Received {kernel.shape}."
        )
    return kernel.reshape(*in_modes, *out_modes)


def tensor_to_kernel(tensor: np.ndarray, kernel_shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`kernel_to_tensor`."""
    tensor = np.asarray(tensor)
    if tensor.size != math.prod(kernel_shape):
        raise LRFError(f"A tensor of shape {tensor.shape} cannot be a Dense kernel {tuple(kernel_shape)}.")
    return tensor.reshape(kernel_shape)


def leading_left_vectors(matrix: np.ndarray, rank: int) -> np.ndarray:
    """Sign-fixed, orthonormal leading ``rank`` left singular vectors of ``matrix (M, N)``.

    A wide or square matrix (``M <= N``, every unfolding of a tensorized weight that
    needs it) goes through its Gram matrix: the eigenvectors of ``A Aᵀ`` (``M × M``,
    one matrix product and a small symmetric eigensolver) instead of LAPACK's SVD of the
    wide matrix, which is several times slower and, under CPU contention, up to 100x
    slower. The basis is orthonormal to machine precision whatever the conditioning, so a
    full-rank fit stays exact; only the choice of the subspace at a truncation carries
    the ``eps·σ_1²/gap`` sensitivity of the Gram route, far below weight precision.
    A tall matrix uses :func:`~lrf_core.decompose.linalg.truncated_svd`.

    Signs as in :mod:`lrf_core.decompose.linalg`: the largest-magnitude entry of each
    column is positive. When fewer than ``rank`` vectors exist (``N < rank`` for a
    tall matrix, or ``M < rank``) the missing columns are zero: the fitted factors keep
    the requested shape and the extra rank carries nothing.
    """
    a = np.asarray(matrix, dtype=np.float64)
    rows, cols = a.shape
    if rows <= cols:
        _, vectors = np.linalg.eigh(a @ a.T)
        u = vectors[:, ::-1][:, :rank]  # eigh sorts ascending
        pivot = np.argmax(np.abs(u), axis=0)
        signs = np.sign(u[pivot, np.arange(u.shape[1])])
        signs[signs == 0] = 1.0
        u = u * signs
    else:
        u, _, _ = truncated_svd(a, rank)
    if u.shape[1] < rank:
        u = np.concatenate([u, np.zeros((rows, rank - u.shape[1]))], axis=1)
    return u


@dataclass(frozen=True)
class EinsumStep:
    """One ``EinsumDense`` layer of a chain, from shapes only.

    ``equation`` is in ``EinsumDense`` form with the batch letter ``z``;
    ``kernel_letters`` the order of the kernel axes; ``output_shape`` excludes the batch;
    ``macs`` are per input vector.
    """

    equation: str
    kernel_letters: str
    kernel_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    macs: int


def plan_einsum_chain(
    sizes: Mapping[str, int], in_letters: str, out_letters: str, kernels: Sequence[str]
) -> list[EinsumStep]:
    """Plan the einsums that contract an input tensor with ``kernels`` one at a time.

    Every letter of a kernel that is already in the running tensor is summed over; the
    others are new axes, appended. The last step outputs exactly ``out_letters``.

    Parameters
    ----------
    sizes : size of every letter (modes and ranks)
    in_letters : axes of the reshaped input (``"abc"`` for ``(m_1, m_2, m_3)``)
    out_letters : axes of the final output, in row-major order of ``n``
    kernels : the axes of each kernel, in storage order, in contraction order

    Returns
    -------
    One :class:`EinsumStep` per kernel; MACs of a step = Π sizes over the union of the
    running tensor's and the kernel's letters.
    """
    steps = []
    state = in_letters
    for i, letters in enumerate(kernels):
        rest = [c for c in state if c not in letters]
        new = [c for c in letters if c not in state]
        out = "".join(rest + new)
        if i == len(kernels) - 1:
            if sorted(out) != sorted(out_letters):
                raise LRFError(f"Einsum chain ends with axes {out!r}; expected {out_letters!r}.")
            out = out_letters
        union = set(state) | set(letters)
        steps.append(
            EinsumStep(
                equation=f"{BATCH}{state},{letters}->{BATCH}{out}",
                kernel_letters=letters,
                kernel_shape=tuple(sizes[c] for c in letters),
                output_shape=tuple(sizes[c] for c in out),
                macs=math.prod(sizes[c] for c in union),
            )
        )
        state = out
    return steps


def chain_cost(steps: Sequence[EinsumStep], geometry: LayerGeometry) -> Cost:
    """Params (kernels + bias) and MACs per example (× ``geometry.positions``) of a chain."""
    params = sum(math.prod(s.kernel_shape) for s in steps)
    params += geometry.out_channels if geometry.use_bias else 0
    macs = sum(s.macs for s in steps) * geometry.output_positions
    return Cost(params=int(params), macs=int(macs))


def einsum_chain_layers(
    steps: Sequence[EinsumStep],
    kernels: Sequence[np.ndarray],
    in_modes: Sequence[int],
    geometry: LayerGeometry,
    bias: Optional[np.ndarray],
) -> list[LayerSpec]:
    """``Reshape(in_modes)`` → one ``EinsumDense`` per step → ``Reshape((n,))``.

    The last ``EinsumDense`` carries the bias (``bias_axes`` = all output axes, the bias
    reshaped to the output modes) and the activation; earlier ones have neither.
    """
    if len(kernels) != len(steps):
        raise LRFError(f"Einsum chain of {len(steps)} steps got {len(kernels)} kernels.")
    n = geometry.out_channels
    specs = [LayerSpec("Reshape", dict(target_shape=tuple(int(v) for v in in_modes)))]
    positions = geometry.output_positions
    for i, (step, kernel) in enumerate(zip(steps, kernels)):
        kernel = np.asarray(kernel).reshape(step.kernel_shape)
        config = dict(equation=step.equation, output_shape=step.output_shape)
        weights: tuple[np.ndarray, ...] = (kernel,)
        if i == len(steps) - 1:
            config["activation"] = geometry.activation
            if geometry.use_bias:
                if bias is None:
                    raise LRFError(f"The layer uses a bias of shape ({n},) but none was given.")
                config["bias_axes"] = step.equation.split("->")[1][1:]
                weights += (np.asarray(bias).reshape(step.output_shape),)
        specs.append(LayerSpec("EinsumDense", config, weights, macs=step.macs * positions))
    specs.append(LayerSpec("Reshape", dict(target_shape=(n,))))
    return specs
