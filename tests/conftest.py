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
