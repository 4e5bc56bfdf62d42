"""Rebuild a Keras model with factorized layers (METHODS.md §4, STYLE.md "Rebuilding models").

Uses ``keras.models.clone_model`` with a ``call_function`` that replaces each planned
layer's call by its factor chain; every other layer is re-created from its config with
its weights copied, so the child never shares a layer (or a variable) with the parent
and the functional graph (residual ``Add``, ``Concatenate``, BatchNorm, several
inputs/outputs) is kept as it is. Chain layers are standard Keras layers named
``{layer}_lrf_{i}``.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping, Optional

import keras

from lrf_core.errors import RebuildError
from lrf_core.decision import ChosenLayer
from lrf_core.factorize import FittedLayer
from lrf_core.graph import describe_model
from lrf_core.keras_chain import instantiate_chain, set_chain_weights

__all__ = ["rebuild_model", "clone_replacing"]

logger = logging.getLogger(__name__)


def _as_functional(model: keras.Model) -> keras.Model:
    """A Sequential as a functional model over the same layers (clone_model's call_function
    is for functional models only); functional models are returned as they are."""
    if isinstance(model, keras.Sequential):
        return keras.Model(model.inputs, model.outputs, name=model.name)
    return model


def clone_replacing(
    parent: keras.Model,
    replace: Mapping[str, Callable[[keras.layers.Layer], list[keras.layers.Layer]]],
    *,
    weights_from: Optional[keras.Model] = None,
    name: Optional[str] = None,
) -> tuple[keras.Model, dict[str, list[keras.layers.Layer]]]:
    """Clone ``parent``'s graph; each layer named in ``replace`` becomes the chain its callable makes.

    Every other layer is re-created from its config and gets the weights of the layer of
    the same name in ``weights_from`` (default: the parent). The parent's input names and
    input structure are kept. Returns the new model and the replacement layers by original
    name (their weights are left to the caller).
    """
    source = _as_functional(parent)
    weights_from = weights_from if weights_from is not None else source
    made: dict[str, list[keras.layers.Layer]] = {}

    def clone_function(layer):
        return layer.__class__.from_config(layer.get_config())

    def call_function(layer, *args, **kwargs):
        make = replace.get(layer.name)
        if make is None:
            return layer(*args, **kwargs)
        chain = make(source.get_layer(layer.name))
        made[layer.name] = chain
        x = args[0]
        for link in chain:
            x = link(x)
        return x

    # Named inputs, so the child's serving signature matches the parent's.
    inputs = keras.tree.map_structure(
        lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t._keras_history.operation.name), source.input
    )
    clone = keras.models.clone_model(source, input_tensors=inputs, clone_function=clone_function,
                                     call_function=call_function)
    made_ids = {id(link) for chain in made.values() for link in chain}
    for layer in clone.layers:
        if id(layer) in made_ids or isinstance(layer, keras.layers.InputLayer):
            continue
        layer.set_weights(weights_from.get_layer(layer.name).get_weights())
    return keras.Model(clone.input, clone.output, name=name or f"{parent.name}_lrf"), made


def rebuild_model(
    model: keras.Model, fitted: Mapping[str, FittedLayer | ChosenLayer], *, name: Optional[str] = None
) -> keras.Model:
    """A new model in which each layer named in ``fitted`` is replaced by its factor chain.

    ``fitted`` values need only their ``specs`` (a fit, or a decision read back from disk).

    The parent is not modified. Layers not in ``fitted`` keep their weights exactly.
    """
    summary = describe_model(model)  # refuses subclassed models up front
    for layer_name in fitted:
        if layer_name not in summary.names:
            raise RebuildError(f"Cannot replace layer `{layer_name}`: model `{model.name}` has no such top-level layer.")
        record = summary.record(layer_name)
        if record.geometry is None:
            raise RebuildError(f"Cannot replace layer `{layer_name}`: {record.skip_reason}.")
    replace = {
        layer_name: (lambda layer, fit=fit: instantiate_chain(fit.specs, layer.name, dtype=layer.dtype_policy.name))
        for layer_name, fit in fitted.items()
    }
    child, chains = clone_replacing(model, replace, name=name)
    for layer_name, chain in chains.items():
        set_chain_weights(fitted[layer_name].specs, chain)
    logger.info("rebuilt %s: %d layers factorized", model.name, len(chains))
    return child
