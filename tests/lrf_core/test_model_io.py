"""Tests of lrf_core.model_io: loading every supported kind, clear errors, atomic saves."""

from __future__ import annotations

import hashlib
import os

import keras
import numpy as np
import pytest

from lrf_core.errors import ModelLoadError
from lrf_core.model_io import load_model, save_model_atomic
from tasks.files import file_sha256

X = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)


def _keras3_model() -> keras.Model:
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inputs, outputs, name="tiny")
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(size=w.shape).astype("float32") + (1.5 if i == 5 else 0)
                       for i, w in enumerate(model.get_weights())])  # i == 5: moving variance > 0
    return model


@pytest.fixture(scope="module")
def tiny():
    return _keras3_model()


@pytest.fixture(scope="module")
def keras_file(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    tiny.save(path)
    return path


# -- loading what works ------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_load_round_trip_gives_identical_predictions(tiny, tmp_path, suffix):
    path = tmp_path / f"tiny{suffix}"
    tiny.save(path)
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(X, verbose=0), tiny.predict(X, verbose=0))
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in tiny.layers]
    assert not loaded.compiled


def _legacy_models():
    import tf_keras

    L = tf_keras.layers
    rng = np.random.default_rng(2)
    sequential = tf_keras.Sequential([
        L.InputLayer((8, 8, 1)),
        L.Conv2D(4, 3, padding="same", activation="relu", name="c1"),
        L.BatchNormalization(name="bn"),
        L.DepthwiseConv2D(3, name="dw"),
        L.ReLU(name="relu"),
        L.MaxPooling2D(name="pool"),
        L.Flatten(name="flat"),
        L.Dropout(0.2, name="drop"),
        L.Dense(5, activation="softmax", name="head"),
    ], name="legacy_seq")
    inputs = L.Input((8, 8, 1), name="img")
    a = L.Conv2D(4, 3, padding="same", name="a")(inputs)
    b = L.Conv2D(4, 1, name="b")(inputs)
    x = L.Add(name="add")([a, b])
    x = L.Concatenate(name="cat")([a, x])
    x = L.ZeroPadding2D(1, name="pad")(x)
    x = L.AveragePooling2D(name="avg")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Reshape((8,), name="reshape")(x)
    x = L.Activation("tanh", name="act")(x)
    functional = tf_keras.Model(inputs, L.Dense(3, name="head")(x), name="legacy_fn")
    for model in (sequential, functional):
        model.set_weights([rng.normal(size=w.shape).astype("float32") ** 2 + 0.1
                           for w in model.get_weights()])
    return {"sequential": sequential, "functional": functional}


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_legacy_saved_model_converts_with_identical_predictions(tmp_path, kind):
    legacy = _legacy_models()[kind]
    path = tmp_path / f"{kind}_savedmodel"
    legacy.save(path, save_format="tf")
    assert (path / "keras_metadata.pb").is_file()
    model = load_model(path)
    assert isinstance(model, keras.Model) and type(model).__name__ == "Functional"
    def layers(m):
        return [(type(layer).__name__, layer.name) for layer in m.layers if type(layer).__name__ != "InputLayer"]

    assert layers(model) == layers(legacy)
    np.testing.assert_allclose(model.predict(X, verbose=0), legacy.predict(X, verbose=0), rtol=1e-5, atol=1e-6)


def test_legacy_saved_model_with_lambda_refused_under_safe_mode(tmp_path):
    import tf_keras

    legacy = tf_keras.Sequential([tf_keras.layers.InputLayer((3,)),
                                  tf_keras.layers.Lambda(lambda t: t * 2.0, name="times2")])
    path = tmp_path / "lambda_savedmodel"
    legacy.save(path, save_format="tf")
    with pytest.raises(ModelLoadError, match=r"lambda_savedmodel` contains a Lambda layer .*safe_mode"):
        load_model(path)


def test_saved_model_without_keras_metadata_asks_for_keras_file(tiny, tmp_path):
    path = tmp_path / "exported"
    tiny.export(path, verbose=False)
    with pytest.raises(ModelLoadError, match=r"exported` has no Keras metadata .*Provide the `.keras` file"):
        load_model(path)


# -- loading what does not -------------------------------------------------------------
def test_missing_model_names_the_path(tmp_path):
    with pytest.raises(ModelLoadError, match=r"Model `.*nothere\.keras` does not exist\."):
        load_model(tmp_path / "nothere.keras")


def test_random_bytes_keras_file_is_not_a_valid_archive(tmp_path):
    path = tmp_path / "random.keras"
    path.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"Cannot read model `{path}`: the file is not a valid .keras archive (")
    assert message.endswith("Re-export it with model.save('model.keras').")
    assert "\n" not in message


def test_truncated_keras_file_is_not_a_valid_archive(keras_file, tmp_path):
    path = tmp_path / "half.keras"
    data = keras_file.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"half\.keras`: the file is not a valid \.keras archive \(BadZipFile"):
        load_model(path)


def test_truncated_h5_file_names_the_file(tiny, tmp_path):
    full = tmp_path / "full.h5"
    tiny.save(full)
    path = tmp_path / "half.h5"
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"half\.h5`: the file is not a valid HDF5 \(\.h5\) model \(OSError.*truncated"):
        load_model(path)


def test_lambda_refused_under_safe_mode_and_allowed_on_opt_in(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0, name="times2")(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    message = str(info.value)
    assert f"Model `{path}` contains a Lambda layer" in message
    assert "safe_mode=False" in message and "--allow-unsafe-model" in message
    loaded = load_model(path, safe_mode=False)
    np.testing.assert_allclose(loaded.predict(np.ones((1, 3), "float32"), verbose=0), [[2.0, 2.0, 2.0]])


def test_unknown_extension_lists_supported_kinds(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx")
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    message = str(info.value)
    assert f"`{path}`" in message and "unknown kind" in message
    assert ".keras" in message and ".h5" in message and "SavedModel" in message


def test_subclassed_model_without_config_cannot_be_rebuilt(tmp_path):
    class Subclassed(keras.Model):  # not registered, no get_config
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Subclassed()
    model(np.zeros((1, 4), "float32"))
    path = tmp_path / "sub.keras"
    model.save(path)
    with pytest.raises(ModelLoadError, match=r"sub\.keras` uses the custom class 'Subclassed'.*cannot be rebuilt"):
        load_model(path)


# -- saving and hashing ------------------------------------------------------------------
def test_save_model_atomic_writes_only_the_target(tiny, tmp_path):
    path = tmp_path / "out.keras"
    save_model_atomic(tiny, path)
    assert os.listdir(tmp_path) == ["out.keras"]
    np.testing.assert_array_equal(load_model(path).predict(X, verbose=0), tiny.predict(X, verbose=0))


def test_save_model_atomic_failure_leaves_no_partial_file(tmp_path):
    class Unsaveable(keras.layers.Layer):
        def call(self, x):
            return x

        def get_config(self):
            raise RuntimeError("cannot serialize this layer")

    inputs = keras.Input((2,))
    model = keras.Model(inputs, Unsaveable()(inputs))
    new = tmp_path / "new.keras"
    with pytest.raises(RuntimeError, match="cannot serialize"):
        save_model_atomic(model, new)
    assert os.listdir(tmp_path) == []

    existing = tmp_path / "existing.keras"
    existing.write_bytes(b"previous version")
    with pytest.raises(RuntimeError):
        save_model_atomic(model, existing)
    assert existing.read_bytes() == b"previous version"
    assert os.listdir(tmp_path) == ["existing.keras"]


def test_save_model_atomic_requires_keras_suffix(tiny, tmp_path):
    with pytest.raises(ModelLoadError, match=r"out\.h5`: the path must end with `\.keras`"):
        save_model_atomic(tiny, tmp_path / "out.h5")
    assert os.listdir(tmp_path) == []


def test_file_sha256_matches_hashlib(tmp_path):
    path = tmp_path / "blob.bin"
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # spans several chunks
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
