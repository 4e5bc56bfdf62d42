"""Instantiate a factor chain (:class:`LayerSpec` data) as standard Keras layers."""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np

from lrf_core.decompose.base import LayerSpec
from lrf_core.errors import RebuildError

__all__ = ["instantiate_chain", "apply_chain", "set_chain_weights"]

#: Only standard layers, so a published model loads without lrflow installed (METHODS.md §1).
ALLOWED_LAYERS = ("Conv2D", "DepthwiseConv2D", "Dense", "EinsumDense", "Reshape")


def instantiate_chain(specs: Sequence[LayerSpec], base_name: str, dtype=None) -> list[keras.layers.Layer]:
    """Create the layers of a chain, named ``{base_name}_lrf_{i}`` (weights not set yet)."""
    layers = []
    for i, spec in enumerate(specs):
        if spec.class_name not in ALLOWED_LAYERS:
            raise RebuildError(
                f"Factor chain of `{base_name}` asks for layer class {spec.class_name!r}; "
                f"only standard layers are allowed: {', '.join(ALLOWED_LAYERS)}."
            )
        cls = getattr(keras.layers, spec.class_name)
        layers.append(cls(name=f"{base_name}_lrf_{i}", dtype=dtype, **dict(spec.config)))
    return layers


def apply_chain(specs: Sequence[LayerSpec], layers: Sequence[keras.layers.Layer], inputs):
    """Call the chain on a symbolic or eager tensor and load the weights (layers get built)."""
    x = inputs
    for layer in layers:
        x = layer(x)
    set_chain_weights(specs, layers)
    return x


def set_chain_weights(specs: Sequence[LayerSpec], layers: Sequence[keras.layers.Layer]) -> None:
    """Load each spec's weights into its (built) layer, checking shapes first."""
    for spec, layer in zip(specs, layers):
        if spec.weights:
            expected = [tuple(w.shape) for w in layer.get_weights()]
            given = [tuple(np.shape(w)) for w in spec.weights]
            if expected != given:
                raise RebuildError(
                    f"Layer `{layer.name}` ({spec.class_name}) expects weights {expected}; the factor "
                    f"chain provides {given}."
                )
            layer.set_weights([np.asarray(w, dtype=layer.dtype) for w in spec.weights])
