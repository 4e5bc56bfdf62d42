"""One layer's rank-independent linear algebra, computed once across its candidate fits.

The search fits every layer at a grid of ranks and methods (METHODS.md §3 step 1), and each
fit starts from the same rank-independent pieces: the Cholesky root of the layer's Σ (with its
damping escalation), ``L Lᵀ``, the Σ fit's fixed data (``W Σ``, the mode-reordered Σ and its
Kronecker preconditioner, :class:`lrf_core.decompose.als_sigma.SigmaTarget`), and full SVDs
of the same matrices (``W L`` for SVD, the unfoldings that initialise Tucker-2 and CP).
Recomputing them per rank was a large share of the search on large layers: profiled on
ResNet-50's ``conv5_block1_2_conv`` (D = 4 608, 4 grid points, 5 sweeps, all methods),
Cholesky and ``L Lᵀ`` alone were ~103 of 556 s; with the memo the layer's candidates took
474 s of CPU instead of 751 s (seeded weights, same candidates), and the bench's ResNet-50
search finished in 1294 s where it had been stopped at 1200 s with 51 of 54 layers fitted.
On small layers (D ≈ 1 000) the gain is nil: their Cholesky is cheap.

:func:`layer_memo` opens a scope (one layer's fits, :func:`lrf_core.search.candidates.fit_candidates`);
inside it, :func:`memoized` computes each keyed value once. Outside a scope nothing is kept,
so a single fit behaves exactly as before and memory is bounded by one layer's pieces. Keys are
content digests of the input arrays, so a hit returns what the computation would have
returned: results are bit-identical with and without the memo.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Hashable, Iterator, Optional, TypeVar

import numpy as np

__all__ = ["layer_memo", "memoized", "memoized_for", "digest"]

T = TypeVar("T")

_SCOPE: ContextVar[Optional[dict]] = ContextVar("lrf_layer_memo", default=None)


@contextmanager
def layer_memo() -> Iterator[None]:
    """Share rank-independent results among the fits run inside this block (nested blocks share the outer one)."""
    if _SCOPE.get() is not None:
        yield
        return
    token = _SCOPE.set({})
    try:
        yield
    finally:
        _SCOPE.reset(token)


def digest(array: np.ndarray) -> tuple:
    """A content key of an array: shape, dtype and a 128-bit BLAKE2 hash of its bytes."""
    a = np.ascontiguousarray(array)
    return a.shape, a.dtype.str, hashlib.blake2b(a.data, digest_size=16).digest()


def memoized(key: Hashable, compute: Callable[[], T]) -> T:
    """``compute()``, once per ``key`` inside a :func:`layer_memo` block (every call outside one).

    The cached value is shared: callers must not modify it in place.
    """
    memo = _SCOPE.get()
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def memoized_for(obj: object, key: Hashable, compute: Callable[[], T]) -> T:
    """:func:`memoized` under ``(key, id(obj))``, for a value derived from a large ``obj`` that hashing
    would cost what the memo saves (a D×D Σ). The entry holds ``obj`` itself, so its id cannot be
    reused by another object while the memo lives."""
    return memoized((key, id(obj)), lambda: (obj, compute()))[1]
