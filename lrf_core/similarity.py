"""Feature-map similarity between the parent's and a candidate's activations (METHODS.md §3.3).

The similarity is measured on the feature map the next layer sees (after BatchNorm and
activation). Higher is more similar for every metric:

* ``cka`` (default **[our choice]**; the paper names no metric): linear CKA (Kornblith et
  al. 2019), ``‖Yᵀ X‖_F² / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F)`` on column-centred ``(N, features)``
  matrices; 1 for identical maps, invariant to orthogonal transforms and isotropic scaling.
* ``cosine``: mean over examples of the cosine of the flattened maps.
* ``mse``: ``1 − ‖X − Y‖² / ‖X‖²`` (1 for identical maps, can be negative).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from lrf_core.errors import LRFError

__all__ = ["SimilarityMetric", "SIMILARITY_METRICS", "feature_similarity", "linear_cka"]

SimilarityMetric = Literal["cka", "cosine", "mse"]
SIMILARITY_METRICS: tuple[str, ...] = ("cka", "cosine", "mse")


def _flatten(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], -1)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two activation sets ``(N, ...)`` with the same N (Kornblith et al. 2019).

    Uses the feature-space form when features < N and the Gram (N×N) form otherwise, so the
    cost is ``O(N · min(N, p)²)``-ish rather than ``O(p²)``.
    """
    x, y = _flatten(x), _flatten(y)
    if x.shape[0] != y.shape[0]:
        raise LRFError(f"CKA needs the same number of examples. Received {x.shape[0]} and {y.shape[0]}.")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    if max(x.shape[1], y.shape[1]) < x.shape[0]:
        cross = np.linalg.norm(y.T @ x) ** 2
        norm_x, norm_y = np.linalg.norm(x.T @ x), np.linalg.norm(y.T @ y)
    else:
        gram_x, gram_y = x @ x.T, y @ y.T
        cross = float(np.sum(gram_x * gram_y))
        norm_x, norm_y = np.linalg.norm(gram_x), np.linalg.norm(gram_y)
    if norm_x == 0 or norm_y == 0:
        return 1.0 if norm_x == norm_y else 0.0
    return float(cross / (norm_x * norm_y))


def feature_similarity(reference: np.ndarray, candidate: np.ndarray, metric: SimilarityMetric = "cka") -> float:
    """Similarity of ``candidate`` to ``reference`` activations (both ``(N, ...)``); see module doc."""
    if metric == "cka":
        return linear_cka(reference, candidate)
    x, y = _flatten(reference), _flatten(candidate)
    if x.shape != y.shape:
        raise LRFError(f"Feature maps differ in shape: {x.shape} vs {y.shape}.")
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
        dots = np.sum(x * y, axis=1)
        cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), np.where(np.all(x == y, axis=1), 1.0, 0.0))
        return float(np.mean(cos))
    if metric == "mse":
        denom = float(np.sum(x * x))
        return 1.0 - (float(np.sum((x - y) ** 2)) / denom if denom > 0 else 0.0)
    raise LRFError(f"Unknown similarity metric {metric!r}. Allowed: {', '.join(SIMILARITY_METRICS)}.")
