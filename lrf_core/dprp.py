"""Dynamic parameter rank pruning (DPRP): low-rank training that shrinks the model (METHODS.md §5).

Sharma et al. (2024/2025) train each Conv2D/Dense as ``W = U diag(s) Vᵀ`` and prune
singular triplets during training. Their exact regularisers and schedule are not
published; what follows is **[our choice]**, after Yang et al. 2020 (SVD training):

* **Parameterisation.** A selected layer with matrix ``W ∈ R^{T×D}`` (METHODS.md
  conventions, ``D = kh·kw·S`` or ``m``) becomes ``U (T×r)``, ``s (r,)``, ``V (D×r)``,
  initialised from the sign-fixed SVD of the trained ``W`` at full rank
  ``r = min(T, D)``, so the initial model computes exactly the parent's function.
  Conv2D: ``Conv2D(r, (kh, kw))`` with kernel ``V`` (strides/padding/dilation kept) →
  scale by ``s`` → 1×1 projection by ``U`` → bias, activation (:class:`SVDConv2D`).
  Dense: ``x V`` → ``· s`` → ``· Uᵀ`` → bias, activation (:class:`SVDDense`).
* **Loss.** ``task + λ_o Σ_l (‖UᵀU − I‖²_F + ‖VᵀV − I‖²_F)/r_l² + λ_s Σ_l R(s_l)`` with
  ``R = ‖s‖₁`` (``"l1"``) or the Hoyer measure ``‖s‖₁/‖s‖₂`` (``"hoyer"``), added by
  each layer through ``add_loss``.
* **Pruning.** After every ``prune_every``-th epoch except the last (so the final
  ranks are always fine-tuned for at least one epoch), each layer keeps the smallest
  set of singular triplets (largest ``|s|`` first) holding ``energy`` of ``Σ s²``, at
  least ``min_rank``, and the model is *physically* rebuilt with the sliced ``U, s, V``.
  The optimizer is re-created at each prune: **Adam's moment estimates are reset**.
* **Export.** ``s`` is folded into ``U`` and each layer becomes the standard ``svd``
  chain of METHODS.md §1 (``Conv2D(r, (kh, kw), use_bias=False) → Conv2D(T, 1)`` or
  ``Dense(r, use_bias=False) → Dense(n)``). A layer whose chain is not smaller than the
  dense layer (``r(D + T) ≥ D·T``) is restored as the original layer class with the
  trained weights folded back, ``W = U diag(s) Vᵀ``, so the export is never larger than
  the parent. Every other layer (BatchNorm, the classifier, ...) keeps its fine-tuned
  weights. The exported model contains standard Keras layers only.

Parameter counts in the history are those of the model that *would be exported* at
that point (each layer as the cheaper of chain and dense layer); ``train_params`` is
the parameterised model's own count (it holds ``s`` and full-rank factors, so it can
exceed the parent's at the start).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Optional

import keras
import numpy as np

from lrf_core.data import Dataset
from lrf_core.decompose.base import Factorization, LayerGeometry
from lrf_core.decompose.linalg import truncated_svd
from lrf_core.decompose.svd import CONV_SVD, DENSE_SVD
from lrf_core.errors import LRFError
from lrf_core.graph import describe_model, kernel_and_bias
from lrf_core.keras_chain import instantiate_chain, set_chain_weights
from lrf_core.layout import kernel_to_matrix, matrix_to_kernel
from lrf_core.rebuild import clone_replacing
from lrf_core.zoo import accuracy

__all__ = [
    "DPRPConfig",
    "DPRPConfigError",
    "DPRPEpoch",
    "DPRPResult",
    "SVDConv2D",
    "SVDDense",
    "energy_rank",
    "orthogonality_penalty",
    "sparsity_penalty",
    "parameterise",
    "train_dprp",
]

logger = logging.getLogger(__name__)

Regularizer = Literal["hoyer", "l1"]
_REGULARIZERS = ("hoyer", "l1")
LRSchedule = Literal["cosine", "constant"]
_SCHEDULES = ("cosine", "constant")


class DPRPConfigError(LRFError, ValueError):
    """A DPRP configuration value that is out of range, or names an unusable layer."""


# ----------------------------------------------------------------------------------------
# Configuration and results
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DPRPConfig:
    """Settings of :func:`train_dprp` (METHODS.md §5; values are **[our choice]**).

    Attributes
    ----------
    epochs : int ≥ 1
        Training epochs in total.
    learning_rate : float > 0
        Adam learning rate (a fresh Adam after every prune).
    batch_size : int ≥ 1
    lambda_orth : float ≥ 0
        ``λ_o``, weight of ``(‖UᵀU − I‖²_F + ‖VᵀV − I‖²_F)/r²`` per layer.
    lambda_sparse : float ≥ 0
        ``λ_s``, weight of ``R(s)`` per layer.
    regularizer : ``"hoyer"`` (``‖s‖₁/‖s‖₂``) or ``"l1"`` (``‖s‖₁``)
    energy : float in (0, 1]
        Keep the smallest set of singular values holding this fraction of ``Σ s²``.
        Applied at every prune, so the kept energy compounds (about ``energy^k`` of the
        initial spectrum after ``k`` prunes). 0.95 is tuned on the digits CNN: 6 epochs
        give −29 % params at parent accuracy; 0.98 gives only −4 % there, because a
        layer stays dense until its rank falls below break-even ``DT/(D+T)``.
    prune_every : int ≥ 1
        Prune after every ``prune_every``-th epoch (never after the last one).
    min_rank : int ≥ 1
        No layer is pruned below this rank.
    layers : tuple of layer names, or None
        Layers to parameterise; None means every eligible Conv2D/Dense except the last
        eligible one in graph order (the classifier).
    lr_schedule : ``"cosine"`` or ``"constant"``
        Learning rate of epoch ``e`` (1-based) of ``E``: ``lr · ½(1 + cos(π(e − 1)/E))``
        (cosine) or ``lr``. The decay lets the last, pruning-free epoch settle the final
        ranks **[our choice]**.
    seed : int
        Seeds Keras (shuffling, dropout); the SVD initialisation is deterministic.
    """

    epochs: int = 6
    learning_rate: float = 1e-3
    batch_size: int = 64
    lambda_orth: float = 1e-2
    lambda_sparse: float = 1e-3
    regularizer: Regularizer = "hoyer"
    energy: float = 0.95
    prune_every: int = 1
    min_rank: int = 1
    layers: Optional[tuple[str, ...]] = None
    lr_schedule: LRSchedule = "cosine"
    seed: int = 0

    def __post_init__(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise DPRPConfigError(f"DPRPConfig.{name} must be an integer >= 1. Received {value!r}.")

        for name in ("epochs", "batch_size", "prune_every", "min_rank"):
            positive_int(name)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise DPRPConfigError(f"DPRPConfig.seed must be an integer. Received {self.seed!r}.")
        if not _is_real(self.learning_rate) or not self.learning_rate > 0:
            raise DPRPConfigError(f"DPRPConfig.learning_rate must be > 0. Received {self.learning_rate!r}.")
        for name in ("lambda_orth", "lambda_sparse"):
            value = getattr(self, name)
            if not _is_real(value) or not value >= 0:
                raise DPRPConfigError(f"DPRPConfig.{name} must be a finite number >= 0. Received {value!r}.")
        if not _is_real(self.energy) or not 0 < self.energy <= 1:
            raise DPRPConfigError(
                f"DPRPConfig.energy must be in (0, 1] (fraction of Σs² to keep). Received {self.energy!r}."
            )
        if self.regularizer not in _REGULARIZERS:
            raise DPRPConfigError(
                f"DPRPConfig.regularizer must be one of {', '.join(map(repr, _REGULARIZERS))}. "
                f"Received {self.regularizer!r}."
            )
        if self.lr_schedule not in _SCHEDULES:
            raise DPRPConfigError(
                f"DPRPConfig.lr_schedule must be one of {', '.join(map(repr, _SCHEDULES))}. "
                f"Received {self.lr_schedule!r}."
            )
        if self.layers is not None:
            if isinstance(self.layers, str) or not all(isinstance(n, str) for n in self.layers):
                raise DPRPConfigError(
                    f"DPRPConfig.layers must be a tuple of layer names or None. Received {self.layers!r}."
                )
            object.__setattr__(self, "layers", tuple(self.layers))
            if not self.layers:
                raise DPRPConfigError("DPRPConfig.layers is empty: name at least one layer, or pass None.")

    def learning_rate_at(self, epoch: int) -> float:
        """Learning rate of 1-based ``epoch`` under ``lr_schedule``."""
        if self.lr_schedule == "constant":
            return float(self.learning_rate)
        return float(self.learning_rate) * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / self.epochs))


def _is_real(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating)) \
        and math.isfinite(float(value))


@dataclass(frozen=True)
class DPRPEpoch:
    """State after one epoch (training, then the prune step if one was scheduled).

    ``params`` is the parameter count the export would have now; ``train_params`` the
    parameterised model's; ``ranks`` maps each parameterised layer to its rank.
    """

    epoch: int
    params: int
    train_params: int
    ranks: Mapping[str, int]
    train_loss: float
    val_accuracy: float
    pruned: bool


@dataclass(frozen=True)
class DPRPResult:
    """Outcome of :func:`train_dprp`.

    Attributes
    ----------
    model : the exported model (standard Keras layers only, ``svd`` chains)
    svd_model : the trained parameterised model (:class:`SVDConv2D`/:class:`SVDDense`)
        that ``model`` reproduces
    history : one :class:`DPRPEpoch` per epoch
    params_before, params_after : ``parent.count_params()`` and ``model.count_params()``
    val_accuracy_parent, val_accuracy : top-1 accuracy on the validation set
    ranks : final rank per parameterised layer
    restored_dense : layers exported as dense (their chain would not have been smaller)
    skipped : ``(layer, reason)`` for requested-by-default layers that were not parameterised
    """

    model: keras.Model = field(repr=False)
    svd_model: keras.Model = field(repr=False)
    history: tuple[DPRPEpoch, ...]
    params_before: int
    params_after: int
    val_accuracy_parent: float
    val_accuracy: float
    ranks: Mapping[str, int]
    restored_dense: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]

    @property
    def compression(self) -> float:
        """``params_after / params_before``."""
        return self.params_after / self.params_before


# ----------------------------------------------------------------------------------------
# Regularisers (Keras ops: work on NumPy arrays and on variables inside the graph)
# ----------------------------------------------------------------------------------------
def orthogonality_penalty(u, v):
    """``(‖UᵀU − I‖²_F + ‖VᵀV − I‖²_F) / r²`` for ``U (T, r)``, ``V (D, r)`` (METHODS.md §5)."""
    ops = keras.ops
    r = ops.shape(u)[1]
    eye = ops.eye(r, dtype=u.dtype if hasattr(u, "dtype") else "float32")
    gu = ops.matmul(ops.transpose(u), u) - eye
    gv = ops.matmul(ops.transpose(v), v) - eye
    return (ops.sum(gu * gu) + ops.sum(gv * gv)) / float(r * r)


def sparsity_penalty(s, kind: Regularizer = "hoyer"):
    """``R(s)``: ``‖s‖₁`` (``"l1"``) or the Hoyer measure ``‖s‖₁/‖s‖₂`` (``"hoyer"``)."""
    if kind not in _REGULARIZERS:
        raise DPRPConfigError(
            f"Unknown regularizer {kind!r}: expected one of {', '.join(map(repr, _REGULARIZERS))}."
        )
    ops = keras.ops
    l1 = ops.sum(ops.abs(s))
    if kind == "l1":
        return l1
    return l1 / (ops.sqrt(ops.sum(s * s)) + keras.config.epsilon())


def energy_rank(s: np.ndarray, energy: float, *, min_rank: int = 1) -> int:
    """Smallest ``k`` such that the ``k`` largest ``s²`` hold at least ``energy`` of ``Σ s²``.

    Clipped to ``[min(min_rank, len(s)), len(s)]``.
    """
    sq = np.sort(np.abs(np.asarray(s, dtype=np.float64)))[::-1] ** 2
    total = sq.sum()
    if total <= 0:
        k = 1
    else:
        # a tiny tolerance so that energy=1 keeps exactly the nonzero triplets
        k = int(np.searchsorted(np.cumsum(sq) / total, energy - 1e-12) + 1)
    return int(min(max(k, min(min_rank, sq.size)), sq.size))


# ----------------------------------------------------------------------------------------
# Training-time layers
# ----------------------------------------------------------------------------------------
class _SVDBase(keras.layers.Layer):
    """Shared weights and losses of :class:`SVDConv2D` and :class:`SVDDense`.

    Weights: ``v`` (first kernel, ``V``), ``s (r,)``, ``u`` = ``Uᵀ (r, T)``, ``bias (T,)``.
    """

    def __init__(self, units: int, rank: int, *, activation=None, use_bias: bool = True,
                 lambda_orth: float = 0.0, lambda_sparse: float = 0.0, regularizer: str = "hoyer", **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.rank = int(rank)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.lambda_orth = float(lambda_orth)
        self.lambda_sparse = float(lambda_sparse)
        self.regularizer = regularizer

    def _build_factors(self, v_shape: tuple[int, ...]) -> None:
        self.v = self.add_weight(name="v", shape=v_shape, initializer="glorot_uniform")
        self.s = self.add_weight(name="s", shape=(self.rank,), initializer="ones")
        self.u = self.add_weight(name="u", shape=(self.rank, self.units), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros") if self.use_bias else None

    def v_matrix(self):
        """``V (D, r)``; row order is irrelevant for ``VᵀV``."""
        return keras.ops.reshape(self.v, (-1, self.rank))

    def _finish(self, h):
        y = keras.ops.matmul(h * self.s, self.u)
        if self.bias is not None:
            y = y + self.bias
        if self.lambda_orth:
            self.add_loss(self.lambda_orth * orthogonality_penalty(keras.ops.transpose(self.u), self.v_matrix()))
        if self.lambda_sparse:
            self.add_loss(self.lambda_sparse * sparsity_penalty(self.s, self.regularizer))
        return self.activation(y)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            units=self.units, rank=self.rank, activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias, lambda_orth=self.lambda_orth, lambda_sparse=self.lambda_sparse,
            regularizer=self.regularizer,
        )
        return config


@keras.saving.register_keras_serializable(package="lrflow")
class SVDConv2D(_SVDBase):
    """``Conv2D`` as ``U diag(s) Vᵀ``: conv with ``V (kh, kw, S, r)`` → ``· s`` → ``· Uᵀ`` → bias.

    Params ``r(D + T + 1) + T``, ``D = kh·kw·S`` (METHODS.md §5). Channels last only.
    """

    def __init__(self, units: int, rank: int, kernel_size, *, strides=(1, 1), padding: str = "valid",
                 dilation_rate=(1, 1), **kwargs):
        super().__init__(units, rank, **kwargs)
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.strides = tuple(int(k) for k in strides)
        self.padding = padding
        self.dilation_rate = tuple(int(k) for k in dilation_rate)

    def build(self, input_shape) -> None:
        self._build_factors(self.kernel_size + (int(input_shape[-1]), self.rank))

    def call(self, inputs):
        h = keras.ops.conv(inputs, self.v, strides=self.strides, padding=self.padding,
                           data_format="channels_last", dilation_rate=self.dilation_rate)
        return self._finish(h)

    def compute_output_shape(self, input_shape):
        from lrf_core.layout import conv_output_length

        dims = [None if n is None else conv_output_length(n, k, st, self.padding, d)
                for n, k, st, d in zip(input_shape[1:3], self.kernel_size, self.strides, self.dilation_rate)]
        return (input_shape[0], *dims, self.units)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(kernel_size=self.kernel_size, strides=self.strides, padding=self.padding,
                      dilation_rate=self.dilation_rate)
        return config


@keras.saving.register_keras_serializable(package="lrflow")
class SVDDense(_SVDBase):
    """``Dense`` as ``U diag(s) Vᵀ``: ``x V`` (``V (m, r)``) → ``· s`` → ``· Uᵀ`` → bias.

    Params ``r(m + n + 1) + n`` (METHODS.md §5).
    """

    def build(self, input_shape) -> None:
        self._build_factors((int(input_shape[-1]), self.rank))

    def call(self, inputs):
        return self._finish(keras.ops.matmul(inputs, self.v))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)


# ----------------------------------------------------------------------------------------
# Factors as NumPy data
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Factors:
    """``W = U diag(s) Vᵀ`` of one layer: ``U (T, r)``, ``s (r,)``, ``V (D, r)``, bias ``(T,)``/None."""

    geometry: LayerGeometry
    u: np.ndarray
    s: np.ndarray
    v: np.ndarray
    bias: Optional[np.ndarray]

    @property
    def rank(self) -> int:
        return int(self.s.size)

    def chain_params(self) -> int:
        g = self.geometry
        return self.rank * (g.input_dim + g.out_channels) + (g.out_channels if g.use_bias else 0)

    def export_params(self) -> int:
        return min(self.chain_params(), self.geometry.dense_cost().params)

    def keeps_chain(self) -> bool:
        return self.chain_params() < self.geometry.dense_cost().params

    def matrix(self) -> np.ndarray:
        return (self.u * self.s) @ self.v.T

    def sliced(self, energy: float, min_rank: int) -> "_Factors":
        k = energy_rank(self.s, energy, min_rank=min_rank)
        keep = np.sort(np.argsort(-np.abs(self.s), kind="stable")[:k])
        return _Factors(self.geometry, self.u[:, keep], self.s[keep], self.v[:, keep], self.bias)


def _initial_factors(layer: keras.layers.Layer, geometry: LayerGeometry) -> _Factors:
    kernel, bias = kernel_and_bias(layer)
    w = kernel_to_matrix(kernel)
    u, s, vt = truncated_svd(w, min(w.shape))
    return _Factors(geometry, u, s, vt.T, bias)


def _read_factors(layer: _SVDBase, geometry: LayerGeometry) -> _Factors:
    v = np.asarray(layer.v.numpy(), dtype=np.float64)
    if geometry.kind == "conv2d":  # V kernel (kh, kw, S, r) is the layout of Vᵀ (r, D)
        v_mat = kernel_to_matrix(v).T
    else:
        v_mat = v
    bias = np.asarray(layer.bias.numpy(), dtype=np.float64) if layer.bias is not None else None
    return _Factors(geometry, np.asarray(layer.u.numpy(), np.float64).T, np.asarray(layer.s.numpy(), np.float64),
                    v_mat, bias)


def _layer_weights(f: _Factors) -> list[np.ndarray]:
    g = f.geometry
    v = matrix_to_kernel(f.v.T, g.kernel_shape[:3] + (f.rank,)) if g.kind == "conv2d" else f.v
    weights = [v, f.s, f.u.T]
    return weights + ([f.bias] if f.bias is not None else [])


def _make_svd_layer(layer: keras.layers.Layer, f: _Factors, config: DPRPConfig) -> _SVDBase:
    g = f.geometry
    common = dict(units=g.out_channels, rank=f.rank, activation=g.activation, use_bias=g.use_bias,
                  lambda_orth=config.lambda_orth, lambda_sparse=config.lambda_sparse,
                  regularizer=config.regularizer, name=layer.name, dtype=layer.dtype_policy.name)
    if g.kind == "conv2d":
        return SVDConv2D(kernel_size=g.kernel_size, strides=g.strides, padding=g.padding,
                         dilation_rate=g.dilation, **common)
    return SVDDense(**common)


# ----------------------------------------------------------------------------------------
# Model surgery
# ----------------------------------------------------------------------------------------
def _build_parameterised(parent: keras.Model, factors: Mapping[str, _Factors], weights_from: keras.Model,
                         config: DPRPConfig) -> keras.Model:
    replace = {n: (lambda layer, f=f: [_make_svd_layer(layer, f, config)]) for n, f in factors.items()}
    model, made = clone_replacing(parent, replace, weights_from=weights_from, name=f"{parent.name}_dprp")
    for n, (layer,) in made.items():
        layer.set_weights([w.astype(layer.dtype) for w in _layer_weights(factors[n])])
    return model


def _export(parent: keras.Model, factors: Mapping[str, _Factors], trained: keras.Model) -> keras.Model:
    """Standard-layer model: ``svd`` chains, or the dense layer where the chain is not smaller."""
    chains = {}
    for n, f in factors.items():
        if not f.keeps_chain():
            continue
        a = f.v.T  # (r, D), first layer
        b = f.u * f.s  # (T, r), s folded into U
        kind = f.geometry.kind
        fact = Factorization("svd", kind, (f.rank,), f.geometry.kernel_shape, (a, b))
        chains[n] = (CONV_SVD if kind == "conv2d" else DENSE_SVD).layers(fact, f.geometry, f.bias)
    replace = {n: (lambda layer, specs=specs: instantiate_chain(specs, layer.name, dtype=layer.dtype_policy.name))
               for n, specs in chains.items()}
    # Layers restored as dense take their (parent-shaped) weights from the parent first,
    # then the folded trained matrix.
    dense_sources = _WeightsByName(trained, fallback=parent, names=set(factors) - set(chains))
    model, made = clone_replacing(parent, replace, weights_from=dense_sources, name=f"{parent.name}_dprp")
    for n, chain in made.items():
        set_chain_weights(chains[n], chain)
    for n in set(factors) - set(chains):
        f = factors[n]
        layer = model.get_layer(n)
        kernel = matrix_to_kernel(f.matrix(), f.geometry.kernel_shape)
        layer.set_weights([w.astype(layer.dtype) for w in [kernel] + ([f.bias] if f.bias is not None else [])])
    return model


class _WeightsByName:
    """``get_layer(name)`` from ``primary``, or from ``fallback`` for the listed names."""

    def __init__(self, primary: keras.Model, *, fallback: keras.Model, names: set[str]):
        self.primary, self.fallback, self.names = primary, fallback, names

    def get_layer(self, name: str) -> keras.layers.Layer:
        return (self.fallback if name in self.names else self.primary).get_layer(name)


# ----------------------------------------------------------------------------------------
# Layer selection
# ----------------------------------------------------------------------------------------
def _select_layers(parent: keras.Model, config: DPRPConfig) -> tuple[dict[str, LayerGeometry], list[tuple[str, str]]]:
    summary = describe_model(parent)
    eligible = [r for r in summary.layers if r.geometry is not None and "svd" in r.methods]
    skipped: list[tuple[str, str]] = []
    if config.layers is None:
        chosen = eligible[:-1]
        if eligible:
            logger.info("DPRP: the classifier layer `%s` is left dense", eligible[-1].name)
        skipped.extend((r.name, r.skip_reason) for r in summary.layers
                       if r.class_name in ("Conv2D", "Dense") and r.skip_reason)
    else:
        chosen = []
        for n in config.layers:
            if n not in summary.names:
                raise DPRPConfigError(
                    f"DPRPConfig.layers names `{n}`, but model `{parent.name}` has no such layer. "
                    f"Eligible layers: {', '.join(r.name for r in eligible) or 'none'}."
                )
            record = summary.record(n)
            if record not in eligible:
                reason = record.skip_reason or "not a Conv2D/Dense layer"
                raise DPRPConfigError(f"DPRPConfig.layers names `{n}`, which cannot be parameterised: {reason}.")
            chosen.append(record)
    selected: dict[str, LayerGeometry] = {}
    for r in chosen:
        g = r.geometry
        if config.min_rank * (g.input_dim + g.out_channels) >= g.input_dim * g.out_channels:
            skipped.append((r.name, f"SVD cannot save parameters at rank >= min_rank={config.min_rank} "
                                    f"(D={g.input_dim}, T={g.out_channels})"))
            continue
        selected[r.name] = g
    if not selected:
        raise DPRPConfigError(
            f"DPRP has no layer to parameterise in model `{parent.name}` "
            f"(DPRPConfig.layers={config.layers!r}; skipped: {skipped or 'none'})."
        )
    return selected, skipped


def parameterise(parent: keras.Model, config: DPRPConfig = DPRPConfig()) -> keras.Model:
    """The full-rank ``U diag(s) Vᵀ`` model of ``parent`` (same function; parent untouched).

    The layers are chosen as in :func:`train_dprp`; the result holds :class:`SVDConv2D` /
    :class:`SVDDense` layers named like the layers they replace.
    """
    selected, _ = _select_layers(parent, config)
    factors = {n: _initial_factors(parent.get_layer(n), g) for n, g in selected.items()}
    return _build_parameterised(parent, factors, parent, config)


# ----------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------
def _from_logits(model: keras.Model) -> bool:
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", "") != "softmax"


def _compile(model: keras.Model, config: DPRPConfig, from_logits: bool) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
    )


def _other_params(model: keras.Model, names) -> int:
    return int(sum(layer.count_params() for layer in model.layers if layer.name not in names))


def train_dprp(
    parent: keras.Model,
    train: Dataset,
    val: Dataset,
    config: DPRPConfig = DPRPConfig(),
    *,
    on_epoch: Optional[Callable[[DPRPEpoch], None]] = None,
) -> DPRPResult:
    """Train ``parent`` with dynamic parameter rank pruning and export a standard model (METHODS.md §5).

    Parameters
    ----------
    parent : a trained Sequential/functional classifier (logits, or softmax output); not modified
    train, val : datasets (integer labels); ``val`` gives the per-epoch accuracy
    config : :class:`DPRPConfig`
    on_epoch : called with each :class:`DPRPEpoch` as soon as it is recorded

    Returns
    -------
    DPRPResult
        ``params_after <= params_before`` always (layers that do not shrink below their
        dense cost are exported dense).

    Raises
    ------
    DPRPConfigError
        Unknown or ineligible layer names, or no layer to parameterise.
    """
    if not isinstance(config, DPRPConfig):
        raise DPRPConfigError(f"config must be a DPRPConfig. Received {type(config).__name__}.")
    selected, skipped = _select_layers(parent, config)
    for n, reason in skipped:
        logger.info("DPRP skips `%s`: %s", n, reason)
    keras.utils.set_random_seed(config.seed)
    from_logits = _from_logits(parent)
    factors = {n: _initial_factors(parent.get_layer(n), g) for n, g in selected.items()}
    model = _build_parameterised(parent, factors, parent, config)
    _compile(model, config, from_logits)
    params_before = int(parent.count_params())
    parent_acc = accuracy(parent, val)
    other = _other_params(parent, selected)
    logger.info("DPRP on %s: %d params, %d layers parameterised, val accuracy %.4f",
                parent.name, params_before, len(selected), parent_acc)

    history: list[DPRPEpoch] = []
    for epoch in range(1, config.epochs + 1):
        model.optimizer.learning_rate = config.learning_rate_at(epoch)
        fit = model.fit(train.x, train.y, epochs=1, batch_size=config.batch_size, shuffle=True, verbose=0)
        loss = float(fit.history["loss"][-1])
        factors = {n: _read_factors(model.get_layer(n), g) for n, g in selected.items()}
        pruned = False
        if epoch % config.prune_every == 0 and epoch < config.epochs:
            sliced = {n: f.sliced(config.energy, config.min_rank) for n, f in factors.items()}
            if any(sliced[n].rank < factors[n].rank for n in factors):
                factors = sliced
                model = _build_parameterised(parent, factors, model, config)
                _compile(model, config, from_logits)  # fresh optimizer: Adam state is reset
                pruned = True
        record = DPRPEpoch(
            epoch=epoch,
            params=other + sum(f.export_params() for f in factors.values()),
            train_params=int(model.count_params()),
            ranks={n: f.rank for n, f in factors.items()},
            train_loss=loss,
            val_accuracy=accuracy(model, val),
            pruned=pruned,
        )
        history.append(record)
        logger.info("DPRP epoch %d: loss %.4f, val accuracy %.4f, params %d, ranks %s",
                    epoch, loss, record.val_accuracy, record.params, dict(record.ranks))
        if on_epoch is not None:
            on_epoch(record)

    exported = _export(parent, factors, model)
    params_after = int(exported.count_params())
    return DPRPResult(
        model=exported,
        svd_model=model,
        history=tuple(history),
        params_before=params_before,
        params_after=params_after,
        val_accuracy_parent=parent_acc,
        val_accuracy=accuracy(exported, val),
        ranks={n: f.rank for n, f in factors.items()},
        restored_dense=tuple(n for n, f in factors.items() if not f.keeps_chain()),
        skipped=tuple(skipped),
    )
