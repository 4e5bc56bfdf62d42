"""Read a Keras model: one record per layer with its geometry, cost and eligibility.

This is the cost model (METHODS.md conventions): parameters as Keras counts them
(``layer.count_params()``, so totals agree with ``model.count_params()``) and
multiply-accumulates per image for the layers that do the arithmetic: Conv2D,
DepthwiseConv2D, Dense and EinsumDense (the factor chains use nothing else).
BatchNorm, pooling and activations are counted as 0 MACs: they are linear in the
activations, not in the weights, and identical before and after factorization.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

import keras
import numpy as np

from lrf_core.decompose.base import Cost, LayerGeometry
from lrf_core.decompose.registry import METHODS
from lrf_core.errors import RebuildError

__all__ = ["LayerRecord", "ModelSummary", "describe_model", "layer_geometry", "layer_macs", "model_cost"]


@dataclass(frozen=True)
class LayerRecord:
    """One layer of a model as ``lrf inspect`` shows it.

    ``geometry`` is set for factorization targets (Conv2D/Dense that can be factorized);
    ``methods`` lists the method ids that apply; otherwise ``skip_reason`` says why not
    (None for layers without weights worth mentioning, e.g. pooling).
    """

    name: str
    class_name: str
    kernel_shape: Optional[tuple[int, ...]]
    params: int
    macs: int
    geometry: Optional[LayerGeometry]
    methods: tuple[str, ...]
    skip_reason: Optional[str]

    @property
    def eligible(self) -> bool:
        return bool(self.methods)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "type": self.class_name,
            "kernel_shape": list(self.kernel_shape) if self.kernel_shape else None,
            "params": self.params,
            "macs": self.macs,
            "methods": list(self.methods),
            "skip_reason": self.skip_reason,
        }


@dataclass(frozen=True)
class ModelSummary:
    """All layers of a model in graph order, with totals."""

    name: str
    layers: tuple[LayerRecord, ...]

    @property
    def total(self) -> Cost:
        return Cost(sum(r.params for r in self.layers), sum(r.macs for r in self.layers))

    def record(self, name: str) -> LayerRecord:
        for r in self.layers:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.layers)

    def as_dict(self) -> dict:
        total = self.total
        return {
            "model": self.name,
            "layers": [r.as_dict() for r in self.layers],
            "total": {"params": total.params, "macs": total.macs},
            "eligible_layers": sum(r.eligible for r in self.layers),
        }


def _input_shape(layer: keras.layers.Layer) -> tuple:
    return tuple(layer.input.shape)


def _output_shape(layer: keras.layers.Layer) -> tuple:
    out = layer.output
    return tuple(out.shape)


def _prod(dims) -> int:
    return int(math.prod(int(d) for d in dims)) if all(d is not None for d in dims) else 0


def layer_macs(layer: keras.layers.Layer) -> int:
    """MACs per image of one layer (0 for layers without weight arithmetic or unknown sizes)."""
    if not getattr(layer, "_inbound_nodes", None) or len(layer._inbound_nodes) != 1:
        return 0
    name = type(layer).__name__
    if name in ("Conv2D", "DepthwiseConv2D"):
        kernel = layer.kernel.shape
        out = _output_shape(layer)
        return _prod(kernel) * _prod(out[1:3])
    if name == "Dense":
        return _prod(layer.kernel.shape) * _prod(_input_shape(layer)[1:-1] or (1,))
    if name == "EinsumDense":
        return _einsum_macs(layer)
    return 0


def _einsum_macs(layer: keras.layers.Layer) -> int:
    """Product of the sizes of every einsum index except the batch index."""
    lhs, out = layer.equation.split("->")
    in_spec, kernel_spec = lhs.split(",")
    sizes: dict[str, int] = {}
    for spec, shape in ((in_spec, _input_shape(layer)), (kernel_spec, tuple(layer.kernel.shape))):
        if "." in spec:
            return 0  # ellipsis equations are not produced by our chains
        for letter, dim in zip(spec, shape):
            if dim is not None:
                sizes[letter] = int(dim)
    batch = in_spec[0]
    return int(math.prod(v for k, v in sizes.items() if k != batch))


def layer_geometry(layer: keras.layers.Layer) -> LayerGeometry:
    """The :class:`LayerGeometry` of a built Conv2D or Dense layer."""
    config = layer.get_config()
    kernel_shape = tuple(int(d) for d in layer.kernel.shape)
    if type(layer).__name__ == "Conv2D":
        in_shape = _input_shape(layer)
        return LayerGeometry(
            kind="conv2d",
            kernel_shape=kernel_shape,
            use_bias=bool(config["use_bias"]),
            activation=config["activation"],
            strides=tuple(config["strides"]),
            padding=config["padding"],
            dilation=tuple(config["dilation_rate"]),
            input_hw=(int(in_shape[1] or 0), int(in_shape[2] or 0)),
        )
    in_shape = _input_shape(layer)
    return LayerGeometry(
        kind="dense",
        kernel_shape=kernel_shape,
        use_bias=bool(config["use_bias"]),
        activation=config["activation"],
        positions=_prod(in_shape[1:-1]) if len(in_shape) > 2 else 1,
        input_ndim=len(in_shape),
    )


def _conv_skip_reason(layer: keras.layers.Layer) -> Optional[str]:
    config = layer.get_config()
    if config.get("groups", 1) != 1:
        return f"grouped convolution (groups={config['groups']}) is never factorized"
    if config.get("data_format") == "channels_first":
        return "channels_first Conv2D is not supported (use channels_last)"
    shape = _input_shape(layer)
    if any(d is None for d in shape[1:3]):
        return "input spatial size is unknown (set a fixed input shape to compute MACs)"
    return None


_ALWAYS_SKIPPED = {
    "DepthwiseConv2D": "depthwise convolution is never factorized",
    "SeparableConv2D": "separable convolution is already factorized",
    "Conv2DTranspose": "transposed convolution is not supported",
    "Conv1D": "Conv1D is not supported (Conv2D and Dense only)",
    "Conv3D": "Conv3D is not supported (Conv2D and Dense only)",
}


def _record(layer: keras.layers.Layer) -> LayerRecord:
    name = type(layer).__name__
    params = int(layer.count_params()) if layer.built else 0
    kernel = getattr(layer, "kernel", None)
    kernel_shape = tuple(int(d) for d in kernel.shape) if kernel is not None and hasattr(kernel, "shape") else None
    calls = len(getattr(layer, "_inbound_nodes", []) or [])
    macs = layer_macs(layer)
    skip: Optional[str] = None
    geometry = None
    methods: tuple[str, ...] = ()
    if isinstance(layer, keras.Model):
        skip = "nested model: its layers are not factorized (flatten the model to include them)"
    elif name in _ALWAYS_SKIPPED:
        skip = _ALWAYS_SKIPPED[name]
    elif name in ("Conv2D", "Dense"):
        if calls != 1:
            skip = f"shared layer (called {calls} times): factorizing it would change every call site"
        elif name == "Conv2D":
            skip = _conv_skip_reason(layer)
        if skip is None:
            geometry = layer_geometry(layer)
            kind = geometry.kind
            methods = tuple(m.id for m in METHODS if m.kind == kind and m.not_applicable(geometry) is None)
            if not methods:
                skip = "no registered method applies to this layer"
    elif params:
        skip = "not a factorization target"
    return LayerRecord(layer.name, name, kernel_shape, params, macs, geometry, methods, skip)


def describe_model(model: keras.Model) -> ModelSummary:
    """Inspect every top-level layer of a built Sequential or functional model."""
    if not isinstance(model, keras.Model):
        raise RebuildError(f"Expected a keras.Model. Received {type(model).__name__}.")
    if not model.built or not _is_graph_model(model):
        raise RebuildError(
            f"Model `{model.name}` is a subclassed model without a layer graph; lrflow reads "
            "Sequential and functional models only. Rebuild it with the functional API."
        )
    return ModelSummary(model.name, tuple(_record(layer) for layer in model.layers))


def model_cost(model: keras.Model) -> Cost:
    """Total params (``model.count_params()``) and MACs per image of a model."""
    return Cost(int(model.count_params()), sum(layer_macs(layer) for layer in model.layers))


def _is_graph_model(model: keras.Model) -> bool:
    # Keras 3 has no public name for "a model with a layer graph"; Functional is the class
    # behind keras.Model(inputs, outputs), and Sequential subclasses it.
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def sanitize(name: str) -> str:
    """A layer name usable inside Keras names (for derived chain names)."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)


def kernel_and_bias(layer: keras.layers.Layer) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """The layer's kernel and bias as float64 NumPy arrays."""
    kernel = np.asarray(layer.kernel.numpy(), dtype=np.float64)
    bias = np.asarray(layer.bias.numpy(), dtype=np.float64) if getattr(layer, "bias", None) is not None else None
    return kernel, bias
