"""Rebuild of a functional model: parity, parent untouched, save/load, TFLite."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from lrf_core.apply_plan import apply_plan
from lrf_core.decompose.registry import METHODS
from lrf_core.errors import MethodNotApplicableError, PlanError, RebuildError
from lrf_core.graph import describe_model


def _functional_model():
    """Two inputs, BatchNorm, a residual Add, a Concatenate, a depthwise conv, two outputs."""
    keras.utils.set_random_seed(3)
    image = keras.Input((12, 12, 3), name="image")
    extra = keras.Input((6,), name="extra")
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(image)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="body")(x)
    x = keras.layers.Add(name="residual")([x, y])
    d = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Concatenate(name="concat")([x, d])
    x = keras.layers.Conv2D(12, 3, strides=2, padding="same", name="down")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Concatenate(name="join")([x, extra])
    h = keras.layers.Dense(24, activation="relu", name="fc")(x)
    logits = keras.layers.Dense(6, name="logits")(h)
    aux = keras.layers.Dense(2, name="aux")(h)
    model = keras.Model([image, extra], [logits, aux], name="multi")
    # give BatchNorm non-trivial statistics
    model.get_layer("bn").set_weights([w + 0.3 * np.arange(w.size).reshape(w.shape) / w.size for w in model.get_layer("bn").get_weights()])
    return model


def _inputs(rng, n=16):
    return [rng.normal(size=(n, 12, 12, 3)).astype(np.float32), rng.normal(size=(n, 6)).astype(np.float32)]


def _full_plan():
    """Each conv layer gets a different conv method and each dense a dense method, all at full rank."""
    conv = [m.id for m in METHODS if m.kind == "conv2d"]
    dense = [m.id for m in METHODS if m.kind == "dense"]
    plan = {}
    for i, layer in enumerate(("stem", "body", "down")):
        plan[layer] = {"method": conv[i % len(conv)], "rank": "full"}
    for i, layer in enumerate(("fc", "logits")):
        plan[layer] = {"method": dense[i % len(dense)], "rank": "full"}
    return plan


def _outputs(model, x):
    return [np.asarray(o) for o in model(x)]


def test_full_rank_rebuild_keeps_outputs_and_graph(rng):
    model = _functional_model()
    x = _inputs(rng)
    result = apply_plan(model, _full_plan(), calibration=x)
    for got, want in zip(_outputs(result.model, x), _outputs(model, x)):
        assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 1e-5
    names = [l.name for l in result.model.layers]
    for kept in ("bn", "residual", "concat", "dw", "join", "aux", "image", "extra"):
        assert kept in names
    assert "stem" not in names and "stem_lrf_0" in names
    summary = describe_model(model)
    assert summary.record("dw").skip_reason == "depthwise convolution is never factorized"
    total = result.report["total"]
    assert total["params_after"] == result.model.count_params()
    assert total["params_after"] - total["params_before"] == sum(
        l["params_after"] - l["params_before"] for l in result.report["layers"]
    )


def test_parent_weights_unchanged_by_rebuild_and_child_training(rng):
    model = _functional_model()
    before = [w.copy() for w in model.get_weights()]
    x = _inputs(rng)
    plan = {"body": {"method": "svd", "rank": 3}, "fc": {"method": "svd", "rank": 4}}
    child = apply_plan(model, plan, calibration=x).model
    child.compile(optimizer=keras.optimizers.SGD(0.1), loss=["mse", "mse"])
    child.fit(x, [np.ones((16, 6)), np.ones((16, 2))], epochs=2, verbose=0)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    parent_vars = {id(v) for v in model.weights}
    assert not parent_vars & {id(v) for v in child.weights}


def test_sequential_model_is_rebuilt(rng):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(6, 3, activation="relu", name="c"),
                              keras.layers.Flatten(), keras.layers.Dense(4, name="d")])
    x = rng.normal(size=(5, 8, 8, 1)).astype(np.float32)
    child = apply_plan(model, {"c": {"method": "svd", "rank": "full"}}).model
    np.testing.assert_allclose(np.asarray(child(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_keras_round_trip_with_safe_mode_without_lrflow(tmp_path, rng):
    model = _functional_model()
    x = _inputs(rng)
    child = apply_plan(model, _full_plan(), calibration=x).model
    path = tmp_path / "child.keras"
    child.save(path)
    np.save(tmp_path / "x0.npy", x[0]), np.save(tmp_path / "x1.npy", x[1])
    np.save(tmp_path / "want.npy", _outputs(child, x)[0])
    # A fresh interpreter in which `import lrf_core` fails: the file must need only Keras.
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.modules["lrf_core"] = None
        import keras
        m = keras.saving.load_model({str(path)!r}, safe_mode=True)
        out = m([np.load({str(tmp_path / 'x0.npy')!r}), np.load({str(tmp_path / 'x1.npy')!r})])[0]
        want = np.load({str(tmp_path / 'want.npy')!r})
        err = float(np.abs(np.asarray(out) - want).max())
        print("MAXERR", err)
        sys.exit(0 if err < 1e-5 else 1)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "MAXERR" in done.stdout


@pytest.mark.slow
def test_tflite_conversion_keeps_the_factor_chain_and_outputs(rng, run_tflite):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="c2")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(4, name="d")(keras.layers.Dense(16, activation="relu", name="fc")(x))
    model = keras.Model(inputs, outputs)
    data = rng.normal(size=(8, 10, 10, 3)).astype(np.float32)
    conv = [m.id for m in METHODS if m.kind == "conv2d"]
    plan = {"c2": {"method": conv[-1], "rank": 2}, "fc": {"method": "svd", "rank": 3}}
    child = apply_plan(model, plan, calibration=data).model
    chain_convs = sum(isinstance(l, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) for l in child.layers)

    ops, got = run_tflite(child, data)
    assert sum(op in ("CONV_2D", "DEPTHWISE_CONV_2D") for op in ops) == chain_convs
    assert ops.count("FULLY_CONNECTED") == 3  # fc split in two, plus d
    want = np.asarray(child(data))
    assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 1e-4


def test_plan_errors_name_the_layer_and_what_was_expected():
    model = _functional_model()
    summary = describe_model(model)
    with pytest.raises(PlanError, match=r"Plan names layer `bodyy`.*Did you mean: body"):
        apply_plan(model, {"bodyy": {"method": "svd", "rank": 2}})
    with pytest.raises(MethodNotApplicableError, match=r"Layer `dw` \(DepthwiseConv2D\) cannot be factorized: depthwise"):
        apply_plan(model, {"dw": {"method": "svd", "rank": 2}})
    with pytest.raises(Exception, match=r"Unknown method `tt` for a conv2d layer \(`tt` exists for dense layers only\)"):
        apply_plan(model, {"body": {"method": "tt", "rank": 2}})
    limit = summary.record("body").geometry.out_channels
    with pytest.raises(Exception, match=rf"Invalid rank for layer `body` \(method `svd`\): expected 1 <= r <= {limit}\. Received: \(99,\)\."):
        apply_plan(model, {"body": {"method": "svd", "rank": 99}})
    with pytest.raises(PlanError, match=r"unknown keys \['ranks'\]"):
        apply_plan(model, {"body": {"method": "svd", "rank": 2, "ranks": 3}})


def test_subclassed_model_is_refused_up_front():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(RebuildError, match="subclassed model"):
        describe_model(net)
