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

from typing import Callable, Literal

import numpy as np

from lrf_core.errors import LRFError

__all__ = ["SimilarityMetric", "SIMILARITY_METRICS", "feature_similarity", "linear_cka", "similarity_to"]

SimilarityMetric = Literal["cka", "cosine", "mse"]
SIMILARITY_METRICS: tuple[str, ...] = ("cka", "cosine", "mse")


def _flatten(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], -1)


class _CkaReference:
    """One side of linear CKA, prepared once: the centred ``(N, p)`` matrix and its Gram norms.

    The search scores every candidate of a layer against the same parent feature map, so the
    reference's centring and Gram matrix (``O(N² p)``, as much as the whole candidate side)
    are computed once per layer instead of once per candidate.
    """

    def __init__(self, x: np.ndarray):
        x = _flatten(x)
        self.x = x - x.mean(axis=0)
        self._gram: dict[bool, tuple[np.ndarray, float]] = {}

    def gram(self, feature_form: bool) -> tuple[np.ndarray, float]:
        if feature_form not in self._gram:
            g = self.x.T @ self.x if feature_form else self.x @ self.x.T
            self._gram[feature_form] = (g, float(np.linalg.norm(g)))
        return self._gram[feature_form]

    def score(self, y: np.ndarray) -> float:
        y = _flatten(y)
        x = self.x
        if x.shape[0] != y.shape[0]:
            raise LRFError(f"CKA needs the same number of examples. Received {x.shape[0]} and {y.shape[0]}.")
        y = y - y.mean(axis=0)
        feature_form = max(x.shape[1], y.shape[1]) < x.shape[0]
        _, norm_x = self.gram(feature_form)
        if feature_form:
            cross = np.linalg.norm(y.T @ x) ** 2
            norm_y = np.linalg.norm(y.T @ y)
        else:
            gram_y = y @ y.T
            cross = float(np.sum(self.gram(False)[0] * gram_y))
            norm_y = np.linalg.norm(gram_y)
        if norm_x == 0 or norm_y == 0:
            return 1.0 if norm_x == norm_y else 0.0
        return float(cross / (norm_x * norm_y))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two activation sets ``(N, ...)`` with the same N (Kornblith et al. 2019).

    Uses the feature-space form when features < N and the Gram (N×N) form otherwise, so the
    cost is ``O(N · min(N, p)²)``-ish rather than ``O(p²)``.
    """
    return _CkaReference(x).score(y)


def similarity_to(reference: np.ndarray, metric: SimilarityMetric = "cka") -> Callable[[np.ndarray], float]:
    """``candidate ↦ feature_similarity(reference, candidate, metric)``, with the reference's share
    of the work done once (many candidates are scored against one parent feature map)."""
    if metric == "cka":
        return _CkaReference(reference).score
    return lambda candidate: feature_similarity(reference, candidate, metric)


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
