"""A catalogue of bad inputs through the real flow: each gives one clear error, publishes nothing,
and leaves what was published before exactly as it was."""

from __future__ import annotations

import numpy as np
import pytest

from tasks import registry, s3io
from tasks.params import params_from_mapping

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]

PREFIX = "lrflow"
NAME = "guarded"


@pytest.fixture(scope="module")
def published(s3_server, digits_model_path, tmp_path_factory):
    """A registry holding one good version of NAME with its alias: what no bad input may touch."""
    from flows.pipeline import compress_model

    bucket = "lrf-bad-inputs"
    s3io.ensure_bucket(s3io.s3_client(s3_server.endpoint_url), bucket)
    workspace = tmp_path_factory.mktemp("bad-inputs")
    good = _params(digits_model_path, bucket, workspace)
    assert compress_model(good)["promoted"]
    return bucket, workspace, _snapshot(bucket)


def _params(model_path, bucket, workspace, **overrides):
    base = {"name": NAME, "model": str(model_path), "workspace": str(workspace),
            "search": {"target_params": 0.5, "methods_conv": ["svd"], "methods_dense": ["svd"], "grid_points": 4,
                       "latency_guard": False},
            "finetune": {"epochs": 1}, "gate": {"measure_latency": False},
            "registry": {"bucket": bucket, "prefix": PREFIX}}
    for key, value in overrides.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return params_from_mapping(base)


def _snapshot(bucket):
    client = s3io.s3_client()
    keys = {k: client.head_object(Bucket=bucket, Key=k)["ETag"] for k in s3io.list_keys(client, bucket, PREFIX)}
    return keys


def _models(tmp_path, digits_model_path):
    """Bad model files, by kind."""
    import keras

    good = digits_model_path.read_bytes()
    (tmp_path / "corrupt.keras").write_bytes(b"PK\x03\x04 this is not a keras archive" * 10)
    (tmp_path / "truncated.keras").write_bytes(good[: len(good) // 2])
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=10, padding="same")(inputs)
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x)).save(tmp_path / "unsupported.keras")
    y = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    y = keras.layers.Flatten()(y)
    keras.Model(inputs, keras.layers.Dense(10)(y)).save(tmp_path / "lambda.keras")

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(10)

        def call(self, x):
            return self.dense(keras.ops.reshape(x, (-1, 64)))

    sub = Subclassed()
    sub(np.zeros((1, 8, 8, 1), np.float32))
    sub.save(tmp_path / "subclassed.keras")
    return tmp_path


def _data(tmp_path, digits_split, problem):
    train, _, test = digits_split
    x, y = train.x.copy(), train.y.copy()
    if problem == "nan":
        x[:5, 2, 2, 0] = np.inf
    elif problem == "shape":
        x = x[:, :6, :6, :]
    elif problem == "dtype":
        x = (x * 255).astype(np.uint8)
    elif problem == "labels":
        y[:7] = 12
    elif problem == "empty":
        x, y = x[:0], y[:0]
    path = tmp_path / f"{problem}.npz"
    np.savez(path, x_train=x, y_train=y, x_test=test.x, y_test=test.y, num_classes=10)
    return f"npz:{path}"


MODEL_CASES = {
    "corrupt": "not a valid",
    "truncated": "not a valid",
    "unsupported": "No layer of the model can be factorized",
    "lambda": "--allow-unsafe-model",
    "subclassed": "cannot be rebuilt",
}
DATA_CASES = {
    "nan": "NaN or inf",
    "shape": "shape",
    "dtype": "float32",
    "labels": "label",
    "empty": "empty",
}


def _fails_cleanly(params, match, bucket, before):
    from flows.pipeline import compress_model
    from lrf_core.errors import LRFError

    state = compress_model(params, return_state=True)
    assert state.is_failed()
    with pytest.raises(LRFError) as error:
        state.result()
    message = str(error.value)
    assert "\n" not in message.strip() or "check failed" in message  # one statement (GE lists its checks)
    assert match.lower() in message.lower(), message
    assert _snapshot(bucket) == before  # nothing published, nothing changed
    return message


@pytest.mark.parametrize("kind", list(MODEL_CASES))
def test_bad_model_files(kind, published, digits_model_path, tmp_path):
    bucket, workspace, before = published
    path = _models(tmp_path, digits_model_path) / f"{kind}.keras"
    message = _fails_cleanly(_params(path, bucket, workspace), MODEL_CASES[kind], bucket, before)
    assert str(path) in message or kind == "unsupported"  # names the user's file, not the workspace copy


def test_lambda_model_is_accepted_when_explicitly_allowed(published, digits_model_path, tmp_path):
    from tasks import steps

    bucket, workspace, _ = published
    path = _models(tmp_path, digits_model_path) / "lambda.keras"
    record = steps.fetch_model(_params(path, bucket, workspace, allow_unsafe_model=True), tmp_path / "out")
    assert record.params > 0


@pytest.mark.parametrize("problem", list(DATA_CASES))
def test_bad_calibration_data(problem, published, digits_model_path, digits_split, tmp_path):
    bucket, workspace, before = published
    uri = _data(tmp_path, digits_split, problem)
    _fails_cleanly(_params(digits_model_path, bucket, workspace, data=uri), DATA_CASES[problem], bucket, before)


@pytest.mark.parametrize("field, value, match", [
    ("data", "ftp:digits", "Unknown dataset scheme"),
    ("model", "gs://bucket/model.keras", "unsupported URI scheme"),
    ("registry", {"bucket": "no-such-bucket-here"}, "does not exist"),
])
def test_bad_uris_and_missing_bucket(field, value, match, published, digits_model_path):
    bucket, workspace, before = published
    params = _params(digits_model_path, bucket, workspace, **{field: value})
    _fails_cleanly(params, match, bucket, before)


def test_missing_credentials(published, digits_model_path, monkeypatch, tmp_path):
    bucket, workspace, before = published
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    from flows.pipeline import compress_model

    state = compress_model(_params(digits_model_path, bucket, workspace), return_state=True)
    monkeypatch.undo()  # credentials back, to look at the registry
    assert state.is_failed() and "AWS_ACCESS_KEY_ID" in str(state.result(raise_on_failure=False))
    assert _snapshot(bucket) == before


def test_unknown_parameter_keys():
    from lrf_core.errors import PlanError

    with pytest.raises(PlanError, match="unknown key `search.target_parms`"):
        params_from_mapping({"name": NAME, "model": "m.keras", "search": {"target_parms": 0.3}})


@pytest.mark.parametrize("search, match", [
    ({"max_drop": 1.0, "recovery_budgets": [0.5]}, r"`search`: .*recovery_budgets must each be larger than max_drop \(1.0\)"),
    ({"max_drop": 1.0, "target_params": 0.3, "recovery_budgets": [3.0]}, "neither cost targets"),
    ({"max_drop": 1.0, "selection": "sequential", "recovery_budgets": [3.0]}, "layerwise only"),
    ({"max_drop": 1.0, "recovery_budgets": "yes"}, r"`search.recovery_budgets`: .*\"auto\" or a list of budgets"),
    ({"max_drop": 1.0, "recovery_budgets": None}, r"`search.recovery_budgets`: .*\[\] for none"),
    ({"max_drop": 1.0, "latency_guard": False, "block_latency_rule": False}, r"`search`: .*per-block latency rule off"),
])
def test_search_parameters_that_cannot_take_effect_are_refused(search, match):
    """Checked when the parameters are read, before any step runs (same rule as lrf_core's CompressConfig)."""
    from lrf_core.errors import PlanError

    with pytest.raises(PlanError, match=match):
        params_from_mapping({"name": NAME, "model": "m.keras", "search": search})


@pytest.mark.parametrize("search, expected", [
    ({"max_drop": 1.0}, (8.0, 4.0, 2.0)),
    ({"max_drop": 1.0, "target_macs": 0.3}, ()),  # a cost target on top of the defaults is not refused
    ({"max_drop": 1.0, "recovery_budgets": []}, ()),
    ({"max_drop": 1.0, "recovery_budgets": [2.0, 5.0]}, (5.0, 2.0)),
])
def test_recovery_budgets_default_to_auto(search, expected):
    """What the search step hands lrf_core (tasks.steps.compress_config), resolved when the parameters are read."""
    from tasks.steps import compress_config

    params = params_from_mapping({"name": NAME, "model": "m.keras", "search": search})
    assert compress_config(params).recovery_budgets == expected


@pytest.mark.parametrize("rule", [True, False])
def test_block_latency_rule_reaches_the_search(rule):
    from tasks.steps import compress_config

    config = compress_config(params_from_mapping({"name": NAME, "model": "m.keras",
                                                  "search": {"max_drop": 1.0, "block_latency_rule": rule}}))
    assert config.latency_guard and config.block_latency_rule is rule


@pytest.mark.parametrize("key, value", [("latency_batch", 0), ("latency_batch", 5000), ("latency_batch", "many"),
                                        ("latency_threads", 0), ("latency_threads", 2000), ("latency_threads", "all")])
def test_a_latency_batch_or_thread_count_out_of_range_is_refused(key, value):
    from lrf_core.errors import PlanError

    with pytest.raises(PlanError, match=f"`gate.{key}`"):
        params_from_mapping({"name": NAME, "model": "m.keras", "search": {"max_drop": 1.0}, "gate": {key: value}})


def test_latency_threads_default_to_this_process():
    params = params_from_mapping({"name": NAME, "model": "m.keras", "search": {"max_drop": 1.0}})
    assert params.gate.latency_threads is None
    assert params_from_mapping({"name": NAME, "model": "m.keras", "gate": {"latency_threads": 1}}).gate.latency_threads == 1
