"""The closed set of factorization methods, looked up by (layer kind, method id)."""

from __future__ import annotations

from lrf_core.decompose.base import LayerKind, Method
from lrf_core.decompose.cp import CP
from lrf_core.decompose.spatial import SPATIAL
from lrf_core.decompose.svd import CONV_SVD, DENSE_SVD
from lrf_core.decompose.tt import TT
from lrf_core.decompose.tucker2 import TUCKER2
from lrf_core.decompose.tucker_dense import DENSE_TUCKER
from lrf_core.errors import UnknownMethodError

__all__ = ["METHODS", "get_method", "method_ids"]

#: Every registered method, conv first. Order is the display order of ``lrf inspect``.
METHODS: tuple[Method, ...] = (CONV_SVD, TUCKER2, CP, SPATIAL, DENSE_SVD, TT, DENSE_TUCKER)


def method_ids(kind: LayerKind) -> tuple[str, ...]:
    """Method ids registered for a layer kind, in display order."""
    return tuple(m.id for m in METHODS if m.kind == kind)


def get_method(kind: LayerKind, method_id: str) -> Method:
    """The method ``method_id`` for ``kind`` layers; the error lists the allowed ids."""
    for method in METHODS:
        if method.kind == kind and method.id == method_id:
            return method
    allowed = ", ".join(method_ids(kind))
    other = [m.kind for m in METHODS if m.id == method_id]
    hint = f" (`{method_id}` exists for {other[0]} layers only)" if other else ""
    raise UnknownMethodError(
        f"Unknown method `{method_id}` for a {kind} layer{hint}. Allowed: {allowed}."
    )
