"""Factorization methods (METHODS.md §1–2): one module per method, plus the registry."""

from lrf_core.decompose.base import Cost, Factorization, LayerGeometry, LayerSpec, Method
from lrf_core.decompose.registry import METHODS, get_method, method_ids

__all__ = ["Cost", "Factorization", "LayerGeometry", "LayerSpec", "Method", "METHODS", "get_method", "method_ids"]
