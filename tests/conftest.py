"""Shared fixtures. Environment switches are set before TensorFlow is imported anywhere."""

from __future__ import annotations

import os

for _key, _value in {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "CUDA_VISIBLE_DEVICES": "",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
}.items():
    os.environ.setdefault(_key, _value)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest_plugins = ["tests.s3_server", "tests.prefect_api"]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def digits_split():
    """Digits train/validation/held-out splits (the bundled embedded default)."""
    from lrf_core.data import load_dataset, split_dataset

    train_all = load_dataset("sklearn:digits", split="train")
    train, val = split_dataset(train_all, (0.85, 0.15), seed=0)
    return train, val, load_dataset("sklearn:digits", split="test")


@pytest.fixture(scope="session")
def digits_model_path(tmp_path_factory, digits_split):
    """A small CNN trained on digits once per test session, saved as .keras."""
    from lrf_core.model_io import save_model_atomic
    from lrf_core.zoo import digits_cnn, train_classifier

    train, val, _ = digits_split
    model = digits_cnn(train.sample_shape, train.num_classes, width=16)
    train_classifier(model, train, val, epochs=12, seed=0, patience=4)
    path = tmp_path_factory.mktemp("models") / "digits.keras"
    save_model_atomic(model, path)
    return path


@pytest.fixture
def run_tflite():
    """Convert a Keras model to TFLite and run it: returns ``(op names, output)`` for input ``x``."""
    import warnings

    import tensorflow as tf

    def run(model, x):
        interpreter_content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            interpreter = tf.lite.Interpreter(model_content=interpreter_content)
        inp = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(inp["index"], x.shape)
        interpreter.allocate_tensors()
        ops = [op["op_name"] for op in interpreter._get_ops_details()]
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return ops, interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    return run
