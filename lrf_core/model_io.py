"""Read and write Keras models, with errors that say what is wrong with the file.

* :func:`load_model` reads a Keras 3 ``.keras`` archive, a legacy ``.h5`` file, or a
  SavedModel directory written by Keras 2 / ``tf.keras`` (converted to an equivalent
  Keras 3 functional model: every layer rebuilt from its config, weights copied).
* :func:`save_model_atomic` writes a ``.keras`` file so that a failure never leaves a
  partial file behind.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import tempfile
import zipfile
from typing import Any

import keras

from lrf_core.errors import ModelLoadError

__all__ = ["load_model", "save_model_atomic", "SUPPORTED_KINDS"]

logger = logging.getLogger(__name__)

#: What :func:`load_model` accepts.
SUPPORTED_KINDS = (
    "a Keras 3 `.keras` file",
    "a legacy Keras `.h5` file",
    "a SavedModel directory written by Keras 2 / tf.keras (with keras_metadata.pb)",
)

_UNSAFE_HINT = (
    "only load it if you trust its source, with safe_mode=False (CLI: `--allow-unsafe-model`)"
)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# ----------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------
def load_model(path: str | os.PathLike, *, safe_mode: bool = True) -> keras.Model:
    """Load a Keras model for factorization (not compiled).

    Parameters
    ----------
    path : str or PathLike
        A ``.keras`` file, a ``.h5`` file, or a Keras 2 SavedModel directory (one holding
        ``saved_model.pb`` and ``keras_metadata.pb``).
    safe_mode : bool
        Refuse Python ``lambda`` code stored in ``Lambda`` layers (arbitrary code execution).

    Returns
    -------
    keras.Model
        A functional or Sequential model (a SavedModel becomes a functional model).

    Raises
    ------
    ModelLoadError
        Missing path, corrupt/truncated file, unknown kind, a ``Lambda`` layer under
        ``safe_mode``, a SavedModel without Keras metadata, or a model that cannot be rebuilt
        (subclassed without ``get_config``, custom layers).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelLoadError(f"Model `{path}` does not exist.")
    if os.path.isdir(path):
        return _load_saved_model(path, safe_mode=safe_mode)
    lower = path.lower()
    if lower.endswith(".keras"):
        _check_keras_archive(path)
        model = _keras_load(path, safe_mode=safe_mode, kind=".keras archive",
                            advice="Re-export it with model.save('model.keras').")
    elif lower.endswith((".h5", ".hdf5")):
        model = _keras_load(path, safe_mode=safe_mode, kind="HDF5 (.h5) model",
                            advice="Re-export it with model.save('model.keras').")
    else:
        raise ModelLoadError(
            f"Cannot read model `{path}`: unknown kind. Supported: {'; '.join(SUPPORTED_KINDS)}."
        )
    _check_rebuildable(model, path)
    logger.info("Loaded model %r from %s (%d layers)", model.name, path, len(model.layers))
    return model


def _check_keras_archive(path: str) -> None:
    """A ``.keras`` file is a zip with ``config.json``; Keras says "File not found" otherwise."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ModelLoadError(
            f"Cannot read model `{path}`: the file is not a valid .keras archive ({_one_line(e)}). "
            f"Re-export it with model.save('model.keras')."
        ) from None
    if "config.json" not in names:
        raise ModelLoadError(
            f"Cannot read model `{path}`: the file is not a valid .keras archive (no config.json "
            f"inside; found {sorted(names)[:5]}). Re-export it with model.save('model.keras')."
        )


def _keras_load(path: str, *, safe_mode: bool, kind: str, advice: str) -> keras.Model:
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except Exception as e:  # noqa: BLE001 - every failure becomes one clear ModelLoadError
        message = str(e)
        if "Lambda" in message and ("safe_mode" in message or "arbitrary code" in message):
            raise ModelLoadError(
                f"Model `{path}` contains a Lambda layer with Python code, refused under safe_mode "
                f"(loading it can run arbitrary code): {_UNSAFE_HINT}."
            ) from None
        missing = re.search(r"Could not locate class '([^']+)'", message)
        if missing:
            raise ModelLoadError(
                f"Model `{path}` uses the custom class {missing.group(1)!r}, which cannot be rebuilt "
                f"(Keras cannot locate it). "
                f"lrflow needs a Sequential or functional model of standard Keras layers; a "
                f"subclassed model without get_config cannot be rebuilt: rebuild it as a functional "
                f"model and save it with model.save('model.keras')."
            ) from None
        raise ModelLoadError(
            f"Cannot read model `{path}`: the file is not a valid {kind} ({_one_line(e)}). {advice}"
        ) from None


def _check_rebuildable(model: Any, path: str) -> None:
    from keras.src.models.functional import Functional  # Sequential derives from it too

    if not isinstance(model, keras.Model):
        raise ModelLoadError(f"`{path}` holds a {type(model).__name__}, not a Keras model.")
    if not isinstance(model, (Functional, keras.Sequential)):
        raise ModelLoadError(
            f"Model `{path}` is a subclassed model ({type(model).__name__}) that cannot be rebuilt "
            f"layer by layer: save a Sequential or functional model instead."
        )


# -- legacy SavedModel (Keras 2 / tf.keras) ----------------------------------------------
def _load_saved_model(path: str, *, safe_mode: bool) -> keras.Model:
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise ModelLoadError(
            f"Cannot read model `{path}`: a directory must be a SavedModel (saved_model.pb missing). "
            f"Supported: {'; '.join(SUPPORTED_KINDS)}."
        )
    metadata_path = os.path.join(path, "keras_metadata.pb")
    if not os.path.isfile(metadata_path):
        raise ModelLoadError(
            f"SavedModel `{path}` has no Keras metadata (keras_metadata.pb), e.g. it was written by "
            f"Keras 3 `model.export` or tf.saved_model.save: it holds a traced graph, not layers, "
            f"so there is nothing to factorize. Provide the `.keras` file of the model instead."
        )
    class_names = _saved_model_class_names(metadata_path)
    if "Lambda" in class_names and safe_mode:
        raise ModelLoadError(
            f"Model `{path}` contains a Lambda layer with Python code, refused under safe_mode "
            f"(loading it can run arbitrary code): {_UNSAFE_HINT}."
        )
    import tf_keras  # Keras 2, only for this legacy format

    try:
        legacy = tf_keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(
            f"Cannot read model `{path}`: the directory is not a readable Keras 2 SavedModel "
            f"({_one_line(e)}). Re-export it with model.save('model.keras')."
        ) from None
    try:
        config = json.loads(legacy.to_json())
    except Exception as e:  # noqa: BLE001 - NotImplementedError from a missing get_config
        raise ModelLoadError(
            f"Model `{path}` ({type(legacy).__name__}) has no layer config ({_one_line(e)}): a "
            f"subclassed model without get_config cannot be rebuilt. Save a Sequential or "
            f"functional model instead."
        ) from None
    model = _convert_legacy_model(config, path)
    _copy_legacy_weights(legacy, model, path)
    logger.info("Converted Keras 2 SavedModel %s to a Keras 3 functional model (%d layers)",
                path, len(model.layers))
    return model


def _saved_model_class_names(metadata_path: str) -> set[str]:
    from tf_keras.protobuf import saved_metadata_pb2

    metadata = saved_metadata_pb2.SavedMetadata()
    try:
        with open(metadata_path, "rb") as f:
            metadata.ParseFromString(f.read())
        return {json.loads(node.metadata).get("class_name", "") for node in metadata.nodes}
    except Exception as e:  # noqa: BLE001 - DecodeError, JSON errors
        raise ModelLoadError(
            f"Cannot read model `{os.path.dirname(metadata_path)}`: keras_metadata.pb is corrupt "
            f"({_one_line(e)}). Re-export it with model.save('model.keras')."
        ) from None


def _convert_legacy_model(config: dict, path: str) -> keras.Model:
    """Keras 2 ``Sequential``/``Functional`` config → Keras 3 functional model (no weights)."""
    class_name, body = config.get("class_name"), config.get("config", {})
    if class_name == "Sequential":
        layer_configs = list(body["layers"])
        first = layer_configs[0] if layer_configs else {}
        if first.get("class_name") == "InputLayer":
            inputs = _legacy_input(layer_configs.pop(0)["config"], path)
        elif "batch_input_shape" in first.get("config", {}):
            inputs = keras.Input(batch_shape=tuple(first["config"]["batch_input_shape"]))
        else:
            raise ModelLoadError(f"Sequential model `{path}` has no input shape in its config.")
        x = inputs
        for layer_config in layer_configs:
            x = _legacy_layer(layer_config, path)(x)
        return keras.Model(inputs, x, name=body.get("name"))
    if class_name in ("Functional", "Model"):
        return _convert_legacy_functional(body, path)
    raise ModelLoadError(
        f"Model `{path}` is a {class_name!r}, not a Sequential or functional model: it cannot be "
        f"rebuilt layer by layer."
    )


def _convert_legacy_functional(body: dict, path: str) -> keras.Model:
    """Replay the Keras 2 node graph (``inbound_nodes``) with Keras 3 layers."""
    outputs: dict[tuple[str, int], list] = {}  # (layer name, node index) -> output tensors
    pending = []  # (layer config, layer object or None, node index, node)
    layers: dict[str, Any] = {}
    for layer_config in body["layers"]:
        name = layer_config["config"]["name"]
        if layer_config["class_name"] == "InputLayer":
            outputs[(name, 0)] = [_legacy_input(layer_config["config"], path)]
            continue
        layers[name] = _legacy_layer(layer_config, path)
        for node_index, node in enumerate(layer_config.get("inbound_nodes", [])):
            pending.append((name, node_index, node))
    while pending:
        remaining = []
        for name, node_index, node in pending:
            refs = node if isinstance(node, list) else []
            ready = all((ref[0], ref[1]) in outputs for ref in refs) and (
                node_index == 0 or (name, node_index - 1) in outputs
            )
            if not ready:
                remaining.append((name, node_index, node))
                continue
            args = [outputs[(ref[0], ref[1])][ref[2]] for ref in refs]
            kwargs = {}
            for ref in refs:
                if len(ref) > 3 and isinstance(ref[3], dict):
                    kwargs.update(ref[3])
            result = layers[name](args[0] if len(args) == 1 else args, **kwargs)
            outputs[(name, node_index)] = list(result) if isinstance(result, (list, tuple)) else [result]
        if len(remaining) == len(pending):
            names = sorted({name for name, _, _ in remaining})
            raise ModelLoadError(
                f"Model `{path}`: cannot resolve the layer graph (unsupported node format) at "
                f"layers {names[:5]}. Re-export it with model.save('model.keras')."
            )
        pending = remaining

    def tensors(refs):
        if refs and isinstance(refs[0], str):  # a single [name, node, tensor]
            refs = [refs]
        return [outputs[(r[0], r[1])][r[2]] for r in refs]

    inputs, outs = tensors(body["input_layers"]), tensors(body["output_layers"])
    return keras.Model(
        inputs[0] if len(inputs) == 1 else inputs, outs[0] if len(outs) == 1 else outs,
        name=body.get("name"),
    )


def _legacy_input(config: dict, path: str):
    shape = config.get("batch_input_shape") or config.get("batch_shape")
    if shape is None:
        raise ModelLoadError(f"Model `{path}`: input layer {config.get('name')!r} has no shape.")
    return keras.Input(
        batch_shape=tuple(shape), dtype=_legacy_dtype(config.get("dtype")),
        sparse=bool(config.get("sparse", False)), name=config.get("name"),
    )


def _legacy_dtype(dtype: Any) -> Any:
    """Keras 2 ``{"class_name": "Policy", "config": {"name": ...}}`` → the policy name."""
    if isinstance(dtype, dict):
        return dtype.get("config", {}).get("name", "float32")
    return dtype


def _init_parameters(cls: type) -> set[str]:
    """Keyword arguments a Keras 3 layer class accepts (its ``__init__`` chain)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                    names.add(p.name)
        if klass is keras.layers.Layer:
            break
    return names - {"self"}


def _legacy_layer(layer_config: dict, path: str) -> keras.layers.Layer:
    """One Keras 3 layer from a Keras 2 layer config (unknown Keras 2 keys dropped)."""
    class_name = layer_config.get("class_name")
    config = dict(layer_config.get("config", {}))
    name = config.get("name")
    if class_name == "Lambda":
        raise ModelLoadError(
            f"Model `{path}`: layer `{name}` is a Keras 2 Lambda, whose Python code cannot be "
            f"converted to Keras 3. Re-create the model without it, or save it as `.keras` with Keras 3."
        )
    cls = getattr(keras.layers, str(class_name), None)
    if class_name in ("Sequential", "Functional", "Model") or not (
        isinstance(cls, type) and issubclass(cls, keras.layers.Layer)
    ):
        raise ModelLoadError(
            f"Model `{path}`: layer `{name}` of class {class_name!r} is not a standard Keras layer "
            f"(nested models and custom layers cannot be converted from a Keras 2 SavedModel). "
            f"Save the model as `.keras` with Keras 3 instead."
        )
    config["dtype"] = _legacy_dtype(config.get("dtype"))
    if class_name == "BatchNormalization" and isinstance(config.get("axis"), list):
        if len(config["axis"]) == 1:  # Keras 2 stores [3]; Keras 3 wants 3
            config["axis"] = config["axis"][0]
    accepted = _init_parameters(cls)
    dropped = sorted(k for k in config if k not in accepted)
    if dropped:
        logger.debug("Layer %s (%s): dropping Keras 2 config keys %s", name, class_name, dropped)
    try:
        return cls.from_config({k: v for k, v in config.items() if k in accepted})
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(
            f"Model `{path}`: cannot convert layer `{name}` ({class_name}) to Keras 3 "
            f"({_one_line(e)}). Save the model as `.keras` with Keras 3 instead."
        ) from None


def _copy_legacy_weights(legacy: Any, model: keras.Model, path: str) -> None:
    for old in legacy.layers:
        weights = old.get_weights()
        if not weights:
            continue
        try:
            new = model.get_layer(old.name)
            new.set_weights(weights)
        except Exception as e:  # noqa: BLE001 - ValueError on a shape or count mismatch
            raise ModelLoadError(
                f"Model `{path}`: cannot copy the weights of layer `{old.name}` to Keras 3 "
                f"({_one_line(e)})."
            ) from None


# ----------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------
def save_model_atomic(model: keras.Model, path: str | os.PathLike) -> None:
    """Save ``model`` to ``path`` (``.keras``) atomically.

    The model is written to a temporary file in the same directory, then moved over
    ``path`` with :func:`os.replace`; if saving fails, the temporary file is removed and an
    existing ``path`` is left untouched.
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ModelLoadError(f"Cannot save model to `{path}`: the path must end with `.keras`.")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ModelLoadError(f"Cannot save model to `{path}`: directory `{directory}` does not exist.")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp.keras", dir=directory)
    os.close(fd)
    try:
        model.save(tmp, overwrite=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    logger.info("Saved model %r to %s", model.name, path)
