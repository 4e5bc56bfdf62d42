"""What every factorization method provides, as plain data and functions (no Keras).

A method (METHODS.md §1) is a :class:`Method` record: a fit function, a
reconstruction, the chain of standard Keras layers that computes it (as
:class:`LayerSpec` data, instantiated by :mod:`lrf_core.rebuild`), and its cost.
The registry in :mod:`lrf_core.decompose.registry` is the closed set of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Optional, Protocol

import numpy as np

from lrf_core.covariance import CovarianceFactor
from lrf_core.errors import LRFError
from lrf_core.layout import conv_output_length

__all__ = [
    "LayerKind",
    "LayerGeometry",
    "Cost",
    "LayerSpec",
    "Factorization",
    "FitFunction",
    "Method",
    "check_rank_tuple",
]

LayerKind = Literal["conv2d", "dense"]
Rank = tuple[int, ...]


@dataclass(frozen=True)
class LayerGeometry:
    """Everything about a Conv2D/Dense layer that a factorization needs (channels last).

    Attributes
    ----------
    kind : ``"conv2d"`` or ``"dense"``
    kernel_shape : ``(kh, kw, S, T)`` or ``(m, n)``
    use_bias, activation : kept on the last layer of a factor chain
        (``activation`` is the layer config value, e.g. ``"relu"``)
    strides, padding, dilation : Conv2D only
    input_hw : Conv2D input spatial size ``(H, W)``, used for MACs per image
    positions : Dense only: vectors per example (product of non-batch leading dims, 1 for
        a ``(batch, m)`` input); Dense MACs per image are ``positions·m·n``
    input_ndim : rank of the layer input including batch (tensorized Dense methods need 2)
    """

    kind: LayerKind
    kernel_shape: tuple[int, ...]
    use_bias: bool = True
    activation: Any = "linear"
    strides: tuple[int, int] = (1, 1)
    padding: str = "valid"
    dilation: tuple[int, int] = (1, 1)
    input_hw: tuple[int, int] = (1, 1)
    positions: int = 1
    input_ndim: int = 2

    def __post_init__(self) -> None:
        expected = 4 if self.kind == "conv2d" else 2
        if self.kind not in ("conv2d", "dense"):
            raise LRFError(f"LayerGeometry.kind must be 'conv2d' or 'dense'. Received {self.kind!r}.")
        if len(self.kernel_shape) != expected or min(self.kernel_shape) < 1:
            raise LRFError(
                f"LayerGeometry: a {self.kind} kernel shape has {expected} positive dims. "
                f"Received {self.kernel_shape}."
            )
        if self.padding not in ("same", "valid"):
            raise LRFError(f"LayerGeometry.padding must be 'same' or 'valid'. Received {self.padding!r}.")

    # -- shapes -------------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        """S (Conv2D) or m (Dense)."""
        return self.kernel_shape[2] if self.kind == "conv2d" else self.kernel_shape[0]

    @property
    def out_channels(self) -> int:
        """T (Conv2D) or n (Dense)."""
        return self.kernel_shape[-1]

    @property
    def kernel_size(self) -> tuple[int, int]:
        return (self.kernel_shape[0], self.kernel_shape[1]) if self.kind == "conv2d" else (1, 1)

    @property
    def input_dim(self) -> int:
        """D = kh·kw·S (Conv2D) or m (Dense): the length of one input vector (patch)."""
        kh, kw = self.kernel_size
        return kh * kw * self.in_channels

    def output_hw_after(self, axes: tuple[bool, bool]) -> tuple[int, int]:
        """Spatial size after applying the kernel/stride/dilation along the chosen axes only.

        ``(True, True)`` is the layer's output size; ``(True, False)`` is what a ``(kh, 1)``
        convolution with strides ``(sh, 1)`` produces (the spatial/CP chains split axes).
        """
        out = []
        for axis, apply in enumerate(axes):
            n = self.input_hw[axis]
            if apply:
                n = conv_output_length(
                    n, self.kernel_size[axis], self.strides[axis], self.padding, self.dilation[axis]
                )
            out.append(n)
        return out[0], out[1]

    @property
    def output_hw(self) -> tuple[int, int]:
        return self.output_hw_after((True, True)) if self.kind == "conv2d" else (1, 1)

    @property
    def output_positions(self) -> int:
        """Output positions per image: ``H'·W'`` (Conv2D) or ``positions`` (Dense)."""
        if self.kind == "dense":
            return self.positions
        h, w = self.output_hw
        return h * w

    def dense_cost(self) -> "Cost":
        """Cost of the original (unfactorized) layer, bias included."""
        weights = int(np.prod(self.kernel_shape))
        bias = self.out_channels if self.use_bias else 0
        return Cost(params=weights + bias, macs=weights * self.output_positions)


@dataclass(frozen=True)
class Cost:
    """Parameters (bias included, as Keras counts) and multiply-accumulates per image."""

    params: int
    macs: int

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.params + other.params, self.macs + other.macs)

    @staticmethod
    def zero() -> "Cost":
        return Cost(0, 0)


@dataclass(frozen=True)
class LayerSpec:
    """One standard Keras layer of a factor chain, as data.

    ``class_name`` is a ``keras.layers`` class (``"Conv2D"``, ``"DepthwiseConv2D"``,
    ``"Dense"``, ``"EinsumDense"``, ``"Reshape"``); ``config`` its constructor keyword
    arguments without ``name``/``dtype`` (the rebuild adds those); ``weights`` the arrays
    for ``layer.set_weights`` in Keras order. ``macs`` is this layer's MACs per image.
    """

    class_name: str
    config: Mapping[str, Any]
    weights: tuple[np.ndarray, ...] = ()
    macs: int = 0

    @property
    def params(self) -> int:
        return int(sum(int(np.prod(w.shape)) for w in self.weights))


@dataclass(frozen=True)
class Factorization:
    """The fitted factors of one layer.

    Attributes
    ----------
    method : method id (``"svd"``, ``"tucker2"``, ...)
    kind : layer kind the factors are for
    rank : the rank tuple the factors have
    kernel_shape : shape of the original Keras kernel
    factors : method-specific arrays, documented by each method's fit function
    objective : ``"frobenius"`` or ``"sigma"``
    history : relative Σ-error after each ALS sweep (empty for closed forms and plain fits)
    """

    method: str
    kind: LayerKind
    rank: Rank
    kernel_shape: tuple[int, ...]
    factors: tuple[np.ndarray, ...]
    objective: Literal["frobenius", "sigma"] = "frobenius"
    history: tuple[float, ...] = field(default=())

    def __repr__(self) -> str:
        shapes = ", ".join(str(f.shape) for f in self.factors)
        return (
            f"Factorization(method={self.method!r}, rank={self.rank}, kernel_shape={self.kernel_shape}, "
            f"factors=[{shapes}], objective={self.objective!r}, sweeps={len(self.history)})"
        )


class FitFunction(Protocol):
    def __call__(
        self,
        kernel: np.ndarray,
        rank: Rank,
        *,
        sigma: Optional[CovarianceFactor] = None,
        seed: int = 0,
        n_iter_max: int = 100,
        tol: float = 1e-6,
    ) -> Factorization: ...


@dataclass(frozen=True)
class Method:
    """A registered factorization method (METHODS.md §1).

    Attributes
    ----------
    id, kind : method id and the layer kind it applies to (``svd`` exists for both kinds)
    summary : one line for ``lrf inspect`` and ``--help``
    rank_names : names of the rank entries, in order (``("r_S", "r_T")``); their count is
        the rank length for every layer, except when ``rank_length`` says otherwise
    fit : ``fit(kernel, rank, *, sigma=None, seed=0, n_iter_max=100, tol=1e-6)``
    reconstruct : ``reconstruct(factorization) -> kernel`` in Keras layout
    layers : ``layers(factorization, geometry, bias) -> list[LayerSpec]``; ``bias`` (shape
        ``(T,)`` or None) goes on the last layer with the activation
    cost : ``cost(geometry, rank) -> Cost`` (bias included)
    max_rank : ``max_rank(geometry) -> rank``: inclusive upper bounds, also what ``"full"`` means
    supports_sigma : whether ``fit`` honours ``sigma`` (others ignore it, by design)
    not_applicable : ``not_applicable(geometry) -> reason or None``
    """

    id: str
    kind: LayerKind
    summary: str
    rank_names: tuple[str, ...]
    fit: FitFunction
    reconstruct: Callable[[Factorization], np.ndarray]
    layers: Callable[[Factorization, LayerGeometry, Optional[np.ndarray]], list[LayerSpec]]
    cost: Callable[[LayerGeometry, Rank], Cost]
    max_rank: Callable[[LayerGeometry], Rank]
    supports_sigma: bool
    not_applicable: Callable[[LayerGeometry], Optional[str]] = lambda geometry: None

    def __repr__(self) -> str:
        return f"Method(id={self.id!r}, kind={self.kind!r}, ranks={self.rank_names})"


def check_rank_tuple(
    method_id: str, rank: Rank, limits: Rank, names: tuple[str, ...], *, layer: Optional[str] = None
) -> Rank:
    """Validate ``1 <= rank[i] <= limits[i]`` and return the rank as a tuple of ints.

    Used by the fit functions (programmer errors) and by the plan resolver (user errors),
    so both produce the same documented message.
    """
    from lrf_core.errors import InvalidRankError

    rank = tuple(int(r) for r in rank)
    expected = " and ".join(f"1 <= {n} <= {m}" for n, m in zip(names, limits))
    if len(rank) != len(limits) or any(not 1 <= r <= m for r, m in zip(rank, limits)):
        where = f" for layer `{layer}`" if layer else ""
        raise InvalidRankError(
            f"Invalid rank{where} (method `{method_id}`): expected {expected}. Received: {rank}."
        )
    return rank
