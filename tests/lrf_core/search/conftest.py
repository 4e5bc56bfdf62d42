"""The digits parent and its compression data, shared by the search tests."""

from __future__ import annotations

import keras
import pytest

from lrf_core.data import stratified_sample
from lrf_core.search.compress import CompressData


@pytest.fixture(scope="module")
def digits_parent(digits_model_path):
    return keras.saving.load_model(digits_model_path)


@pytest.fixture(scope="module")
def digits_data(digits_split):
    train, val, test = digits_split
    return CompressData(stratified_sample(train, 256, seed=0), train, val, test)
