"""The search decision survives JSON + arrays and rebuilds the same model."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from lrf_core.apply_plan import apply_plan
from lrf_core.decision import decision_from_data, decision_to_data
from lrf_core.errors import PlanError
from lrf_core.rebuild import rebuild_model


@pytest.fixture(scope="module")
def planned():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10, 10, 4))
    x = keras.layers.Conv2D(8, 3, strides=(2, 1), padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.Conv2D(8, (3, 1), padding="valid", name="tall")(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(6, name="fc")(x))
    calibration = np.random.default_rng(0).normal(size=(64, 10, 10, 4)).astype(np.float32)
    plan = {"conv": {"method": "cp", "rank": 5}, "tall": {"method": "tucker2", "rank": [2, 3]},
            "fc": {"method": "tt", "rank": [2, 2]}}
    return model, apply_plan(model, plan, calibration=calibration), calibration


def test_round_trip_rebuilds_identical_outputs(planned):
    model, result, x = planned
    meta, arrays = decision_to_data({f.layer: f for f in result.fitted})
    meta = json.loads(json.dumps(meta))  # what the file holds
    chosen = decision_from_data(meta, {k: v.copy() for k, v in arrays.items()})
    assert {k: (v.method, v.rank) for k, v in chosen.items()} == {f.layer: (f.method, f.rank) for f in result.fitted}
    rebuilt = rebuild_model(model, chosen)
    np.testing.assert_array_equal(rebuilt.predict(x, verbose=0), result.model.predict(x, verbose=0))
    assert rebuilt.count_params() == result.model.count_params()


def test_incomplete_decision_is_refused(planned):
    _, result, _ = planned
    meta, arrays = decision_to_data({f.layer: f for f in result.fitted})
    arrays.pop(next(iter(arrays)))
    with pytest.raises(PlanError, match="re-run the search"):
        decision_from_data(meta, arrays)
    with pytest.raises(PlanError, match="schema"):
        decision_from_data({**meta, "schema": 99}, arrays)
