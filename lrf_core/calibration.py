"""Stream calibration data through a model and accumulate each target layer's input statistics.

For a Conv2D the input vectors are the im2col patches (zero padded and strided exactly
as the layer, :func:`lrf_core.layout.extract_patches`); for a Dense layer the input
vectors. Statistics are float64 sums (METHODS.md §2), so memory is ``D²`` per layer;
patches are materialised a few images at a time, never for the whole set.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping, Optional, Sequence

import keras
import numpy as np

from lrf_core.covariance import InputStatistics, StatisticsAccumulator
from lrf_core.decompose.base import LayerGeometry
from lrf_core.errors import DataError
from lrf_core.graph import layer_geometry
from lrf_core.layout import extract_patches

__all__ = ["collect_statistics", "layer_input_vectors"]

logger = logging.getLogger(__name__)

#: Patches materialised at once (elements); bounds the transient memory of im2col.
PATCH_CHUNK_ELEMENTS = 16_000_000


def layer_input_vectors(inputs: np.ndarray, geometry: LayerGeometry) -> np.ndarray:
    """Input vectors of a layer, shape ``(count, D)``: im2col patches (Conv2D) or rows (Dense)."""
    if geometry.kind == "conv2d":
        patches = extract_patches(
            inputs,
            geometry.kernel_size,
            strides=geometry.strides,
            padding=geometry.padding,
            dilation=geometry.dilation,
        )
        return patches.reshape(-1, geometry.input_dim)
    return np.asarray(inputs).reshape(-1, geometry.input_dim)


def _chunks(inputs: np.ndarray, geometry: LayerGeometry):
    """Yield slices of a batch of layer inputs whose patches fit in the chunk budget."""
    if geometry.kind != "conv2d":
        yield inputs
        return
    h, w = geometry.output_hw
    per_image = max(1, h * w * geometry.input_dim)
    step = max(1, PATCH_CHUNK_ELEMENTS // per_image)
    for start in range(0, inputs.shape[0], step):
        yield inputs[start : start + step]


def collect_statistics(
    model: keras.Model,
    inputs: np.ndarray | Sequence[np.ndarray],
    layer_names: Sequence[str],
    *,
    batch_size: int = 64,
    on_batch: Optional[Callable[[int, int], None]] = None,
) -> Mapping[str, InputStatistics]:
    """Input statistics of the named Conv2D/Dense layers over calibration inputs.

    Parameters
    ----------
    model : built Sequential or functional model
    inputs : array ``(N, ...)`` matching the model input (or one array per model input)
    layer_names : the layers to measure (each called exactly once in the graph)
    batch_size : images per forward pass
    on_batch : optional progress callback ``on_batch(images_done, images_total)``

    Returns
    -------
    dict mapping layer name → :class:`InputStatistics` (``D = kh·kw·S`` or ``m``)
    """
    arrays = [np.asarray(inputs)] if isinstance(inputs, np.ndarray) else [np.asarray(a) for a in inputs]
    total = arrays[0].shape[0]
    if total == 0:
        raise DataError("The calibration set is empty: provide at least one example.")
    if not layer_names:
        return {}
    layers = [model.get_layer(name) for name in layer_names]
    geometries = {layer.name: layer_geometry(layer) for layer in layers}
    probe = keras.Model(model.inputs, [layer.input for layer in layers], name=f"{model.name}_probe")
    accumulators = {name: StatisticsAccumulator(g.input_dim) for name, g in geometries.items()}
    for start in range(0, total, batch_size):
        batch = [a[start : start + batch_size] for a in arrays]
        outputs = probe.predict_on_batch(batch if len(batch) > 1 else batch[0])
        if len(layers) == 1:
            outputs = [outputs]
        for layer, layer_inputs in zip(layers, outputs):
            geometry = geometries[layer.name]
            for chunk in _chunks(np.asarray(layer_inputs), geometry):
                accumulators[layer.name].update(layer_input_vectors(chunk, geometry))
        if on_batch is not None:
            on_batch(min(start + batch_size, total), total)
    stats = {name: acc.result() for name, acc in accumulators.items()}
    logger.info("calibration statistics for %d layers over %d examples", len(stats), total)
    return stats
