"""The search (`lrf compress`): targets, mixed methods, sequential selection, latency guard."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from lrf_core.data import Dataset
from lrf_core.finetune import FinetuneConfig
from lrf_core.search.allocate import CostTargets
from lrf_core.search.compress import CompressConfig, CompressData, TargetNotMetError, compress, search

pytestmark = pytest.mark.slow
SVD_ONLY = {"conv2d": ("svd",), "dense": ("svd",)}


@pytest.fixture(scope="module")
def planted():
    """Conv `a` is exactly spatial-separable (rank 2), conv `b` exactly Tucker-2 (2, 2):
    each has one method that represents it at a tiny cost and no error."""
    rng = np.random.default_rng(0)
    s = t = 16
    spatial = np.einsum("hsr,wrt->hwst", rng.normal(size=(3, s, 2)), rng.normal(size=(3, 2, t)))
    tucker = np.einsum("hwab,sa,tb->hwst", rng.normal(size=(3, 3, 2, 2)), rng.normal(size=(s, 2)), rng.normal(size=(t, 2)))
    inputs = keras.Input((8, 8, s))
    x = keras.layers.Conv2D(t, 3, padding="same", activation="relu", name="a")(inputs)
    x = keras.layers.Conv2D(t, 3, padding="same", activation="relu", name="b")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="head")(keras.layers.GlobalAveragePooling2D()(x)))
    model.get_layer("a").set_weights([spatial / np.abs(spatial).max(), np.zeros(t)])
    model.get_layer("b").set_weights([tucker / np.abs(tucker).max(), np.zeros(t)])
    x = rng.normal(size=(200, 8, 8, s)).astype(np.float32)
    data = Dataset(x, np.argmax(model.predict(x, verbose=0), axis=1), "planted", 10)
    return model, CompressData(data, data, data)


def _quick(**kwargs):
    kwargs.setdefault("grid_points", 6)
    kwargs.setdefault("finetune", FinetuneConfig(epochs=0))
    return CompressConfig(**kwargs)


def _methods(report):
    return {r["method"] for r in report["layers"] if r["status"] == "factorized"}


def test_params_target_is_met_and_totals_agree(digits_parent, digits_data):
    result = compress(digits_parent, digits_data, _quick(targets=CostTargets(params=0.3), methods=SVD_ONLY,
                                                          finetune=FinetuneConfig(epochs=2)))
    report = result.report
    assert result.met
    assert result.model.count_params() <= 0.3 * digits_parent.count_params()
    assert report["child"]["params"] == result.model.count_params()
    check = report["totals_check"]
    assert check["params_after_sum_of_layers"] == check["params_after_keras"] == result.model.count_params()
    assert report["targets"][0]["name"] == "params_kept" and report["targets"][0]["met"]
    assert set(report["phases_s"]) >= {"calibration", "candidates", "allocation", "finetune", "evaluation"}


def test_accuracy_budget_holds_on_held_out_data(digits_parent, digits_data):
    result = compress(digits_parent, digits_data, _quick(max_drop=1.0, methods=SVD_ONLY, finetune=FinetuneConfig(epochs=3)))
    report = result.report
    drop = 100 * (report["parent"]["test_accuracy"] - report["child"]["test_accuracy"])
    assert drop <= 1.0
    assert result.model.count_params() < digits_parent.count_params()  # it did compress


def test_a_clearly_too_aggressive_allocation_is_refused_on_part_of_the_estimation_set(digits_parent, digits_data,
                                                                                        monkeypatch):
    """The λ search reads a random prefix first and stops there when even the lower bound is over budget;
    it chooses what the full reading chooses."""
    from lrf_core.search import compress as core

    config = _quick(max_drop=1.0, methods=SVD_ONLY)
    monkeypatch.setattr(core, "EARLY_REJECT_EXAMPLES", 10**6)  # off: every point reads the whole set
    full = core.search(digits_parent, digits_data, config)
    monkeypatch.setattr(core, "EARLY_REJECT_EXAMPLES", 100)
    early = core.search(digits_parent, digits_data, config)

    n = max(p["examples"] for p in full.report["lambda_path"])
    short = [p for p in early.report["lambda_path"] if p["examples"] == 100]
    assert short and all(2 * p["est_drop"] - p["est_drop_ucb95"] > 1.0 for p in short)  # lower bound over budget
    assert all(p["calibration_kl"] is None for p in short)
    assert all(p["examples"] in (100, n) for p in early.report["lambda_path"])
    assert early.allocation.key() == full.allocation.key()


def test_mixed_methods_when_cheaper_and_forced_method_is_uniform(planted):
    model, data = planted
    mixed = compress(model, data, _quick(targets=CostTargets(params=0.5), skip_layers=("head",)))
    chosen = {r["layer"]: r["method"] for r in mixed.report["layers"] if r["status"] == "factorized"}
    assert chosen == {"a": "spatial", "b": "tucker2"}
    forced = compress(model, data, _quick(targets=CostTargets(params=0.5), skip_layers=("head",),
                                          methods={"conv2d": ("cp",), "dense": ("svd",)}))
    assert _methods(forced.report) == {"cp"}


def test_sequential_is_never_worse_on_the_calibration_objective(planted):
    model, data = planted
    config = dict(targets=CostTargets(params=0.3), methods=SVD_ONLY, skip_layers=("head",))
    layerwise = compress(model, data, _quick(**config))
    sequential = compress(model, data, _quick(selection="sequential", refit=True, **config))
    cmp = sequential.report["selection_comparison"]
    assert cmp["sequential_calibration_kl"] < cmp["layerwise_calibration_kl"]  # refit compensates upstream error
    assert cmp["kept"] == "sequential"
    # b is scored on the compressed network's inputs, so its similarity differs from the layerwise score
    sim = lambda r: {l["layer"]: l.get("similarity") for l in r.report["layers"]}
    assert sim(sequential)["b"] != pytest.approx(sim(layerwise)["b"], abs=1e-6)


@pytest.fixture(scope="module")
def chained():
    """1×1 convs `a` then `b` (linear), built so upstream error decides `b`'s rank.

    ``a`` has a decaying spectrum (cheap to truncate by its own output); ``b`` undoes that
    decay, so ``b∘a`` is orthogonal. Scored on the parent's inputs, ``b`` needs a high rank
    and ``a`` gets little budget; once ``a`` is truncated to rank r, ``b`` only sees an
    r-dimensional input, and refitted to it, rank r is exact: sequential selection must
    move budget from ``b`` to ``a``.
    """
    rng = np.random.default_rng(0)
    c = 32
    u, v, q = (np.linalg.qr(rng.normal(size=(c, c)))[0] for _ in range(3))
    singular = 0.9 ** np.arange(c)
    inputs = keras.Input((6, 6, c))
    x = keras.layers.Conv2D(c, 1, name="a")(inputs)
    x = keras.layers.Conv2D(c, 1, name="b")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="head")(keras.layers.GlobalAveragePooling2D()(x)))
    model.get_layer("a").set_weights([((v * singular) @ u.T)[None, None], np.zeros(c)])
    model.get_layer("b").set_weights([((u / singular) @ q.T)[None, None], np.zeros(c)])
    x = rng.normal(size=(300, 6, 6, c)).astype(np.float32)
    data = Dataset(x, np.argmax(model.predict(x, verbose=0), axis=1), "chained", 10)
    return model, CompressData(data, data, data)


@pytest.mark.parametrize("refit", [True, False])
def test_sequential_moves_rank_where_upstream_error_matters(chained, refit):
    model, data = chained
    config = dict(targets=CostTargets(params=0.4), methods=SVD_ONLY, skip_layers=("head",), grid_points=12)
    layerwise = compress(model, data, _quick(**config))
    sequential = compress(model, data, _quick(selection="sequential", refit=refit, **config))
    ranks = lambda r: {l["layer"]: l["rank"][0] for l in r.report["layers"] if l["status"] == "factorized"}
    cmp = sequential.report["selection_comparison"]
    assert cmp["layerwise_choice"] == {"a": f"svd[{ranks(layerwise)['a']}]", "b": f"svd[{ranks(layerwise)['b']}]"}
    assert ranks(layerwise)["b"] > ranks(layerwise)["a"]  # scored alone, b looks expensive to truncate
    # λ was tuned again over sequential passes, so the sequential choice meets the target too
    assert sequential.met and sequential.model.count_params() <= 0.4 * model.count_params()
    chosen = {k: int(v[4:-1]) for k, v in cmp["sequential_choice"].items()}
    if refit:
        assert chosen["b"] <= chosen["a"] and chosen != ranks(layerwise)  # rank moved from b to a
        assert cmp["kept"] == "sequential"
        assert cmp["sequential_calibration_kl"] < cmp["layerwise_calibration_kl"]
    # whichever is kept has the lower calibration KL (never worse than layerwise) and is the model built
    assert cmp[f"{cmp['kept']}_calibration_kl"] == min(cmp["sequential_calibration_kl"], cmp["layerwise_calibration_kl"])
    assert ranks(sequential) == (chosen if cmp["kept"] == "sequential" else ranks(layerwise))


def test_latency_guard_never_picks_a_slower_block(planted):
    model, data = planted
    slow_methods = {"tucker2"}  # every Tucker-2 block is "slower than the dense layer"

    def latency_fn(specs, shape):
        if len(specs) == 1:
            return 1.0  # the dense layer
        return 5.0 if len(specs) == 3 and all(s.class_name == "Conv2D" for s in specs) else 0.5

    result = compress(model, data, _quick(targets=CostTargets(params=0.5), skip_layers=("head",), latency_guard=True),
                      latency_fn=latency_fn, model_latency_fn=lambda models: [1.0] * len(models))
    assert not (_methods(result.report) & slow_methods)
    assert result.report["candidate_counts"]["b"]["dropped_latency"] > 0
    for row in result.report["layers"]:
        if row["status"] == "factorized":
            assert row["latency_after_s"] <= row["latency_before_s"]
    guard = result.report["latency_guard"]  # the whole child timed as fast as the parent: nothing given back
    assert guard["limit_met"] and guard["reverted"] == [] and guard["ratio"] == 1.0
    assert guard["steps"][0]["rounds"] == 0  # a plain function's ratio is exact: no interval, no rounds
    child = result.report["child"]  # the final timing: seconds, and the ratio with its (here zero-width) interval
    assert child["latency_s"] == result.report["parent"]["latency_s"] == 1.0
    assert child["latency_ratio"] == {"median": 1.0, "low": 1.0, "high": 1.0, "rounds": 0, "confidence": 0.95}
    assert "latency_timing" not in child  # a plain function says nothing of batch or threads


def test_without_the_block_rule_slow_blocks_stay_candidates_and_are_still_timed(planted):
    """block_latency_rule=False: no block is dropped for being slower alone; the whole model is the judge."""
    model, data = planted
    timed = lambda specs, shape: 1.0 if len(specs) == 1 else (5.0 if len(specs) == 3 else 0.5)
    config = dict(targets=CostTargets(params=0.5), skip_layers=("head",), latency_guard=True)
    runs = {rule: compress(model, data, _quick(block_latency_rule=rule, **config), latency_fn=timed,
                           model_latency_fn=lambda models: [1.0] * len(models)) for rule in (True, False)}
    counts = {rule: r.report["candidate_counts"] for rule, r in runs.items()}
    assert counts[True]["b"]["dropped_latency"] > 0
    assert all(c["dropped_latency"] == 0 for c in counts[False].values())
    assert all(counts[False][n]["pareto"] >= counts[True][n]["pareto"] for n in counts[False])
    for row in runs[False].report["layers"]:  # block times are still there for the guard's revert order
        if row["status"] == "factorized":
            assert row["latency_after_s"] in (0.5, 5.0)
    assert runs[False].report["latency_guard"]["limit_met"]


def test_a_child_timed_slower_than_its_parent_gives_its_layers_back(planted):
    """Blocks faster one by one, model slower (extra layer calls): the whole-model guard reverts layers."""
    from lrf_core.search.compress import REVERTED_REASON

    model, data = planted
    calls = []

    def model_latency_fn(models):  # every layer call costs the same: more layers, slower model
        calls.append(len(models))
        return [float(len(m.layers)) for m in models]

    result = compress(model, data, _quick(max_drop=1.0, skip_layers=("head",), latency_guard=True),
                      latency_fn=lambda specs, shape: 0.5 if len(specs) > 1 else 1.0, model_latency_fn=model_latency_fn)
    guard = result.report["latency_guard"]
    assert guard["steps"][0]["factorized"] == 2 and guard["steps"][0]["ratio"] > 1  # the search chose both convs
    assert sorted(guard["reverted"]) == ["a", "b"] and guard["limit_met"]
    assert {r["layer"]: (r["status"], r.get("reason")) for r in result.report["layers"]} == {
        "a": ("dense", REVERTED_REASON), "b": ("dense", REVERTED_REASON)}
    assert len(result.model.layers) == len(model.layers)  # the parent's structure, nothing factorized


def test_after_the_guard_sends_a_layer_back_the_budget_is_estimated_again(planted):
    model, data = planted

    def model_latency_fn(models):  # slower only with both convs factorized
        return [1.1 if {"a", "b"} <= {l.name.split("_lrf_")[0] for l in m.layers if "_lrf_" in l.name} else 1.0
                for m in models]

    searched = search(model, data, _quick(max_drop=1.0, skip_layers=("head",), latency_guard=True),
                      latency_fn=lambda specs, shape: 0.5 if len(specs) > 1 else 1.0, model_latency_fn=model_latency_fn)
    guard = searched.report["latency_guard"]
    assert len(guard["reverted"]) == 1 and len(searched.allocation.factorized) == 1
    last = searched.report["lambda_path"][-1]  # the allocation kept, evaluated on the whole estimation set
    assert guard["est_drop_ucb95_after"] == last["est_drop_ucb95"] and last["examples"] == max(
        p["examples"] for p in searched.report["lambda_path"])


def test_same_seed_gives_the_same_report(planted):
    model, data = planted
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()  # as `lrf compress` does
    config = _quick(targets=CostTargets(params=0.4), skip_layers=("head",), seed=3, finetune=FinetuneConfig(epochs=1))
    one, two = compress(model, data, config).report, compress(model, data, config).report
    assert one["finetune"]["epochs_run"] == 1

    def strip(value):
        """Drop timings (keys ending in _s or naming seconds): the issue exempts them."""
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not (k.endswith("_s") or "seconds" in k)}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    one, two = json.loads(json.dumps(one, default=float)), json.loads(json.dumps(two, default=float))
    assert "phases_s" in one and "seconds_per_epoch" in one["finetune"]

    assert strip(one) == strip(two)


def test_impossible_target_names_the_best_reachable_point(planted):
    model, data = planted
    with pytest.raises(TargetNotMetError, match=r"Cannot meet the target \(params ≤ 0%\).*reaches params kept \d"):
        compress(model, data, _quick(targets=CostTargets(params=0.001), methods=SVD_ONLY))


@pytest.mark.parametrize("rule,method", [("energy:0.95", "svd"), ("vbmf", "tucker2")])
def test_rank_baselines_use_the_rule_ranks(planted, rule, method):
    from lrf_core.rank_baselines import energy_ranks_for, vbmf_ranks_tucker2

    model, data = planted
    result = compress(model, data, _quick(ranks=rule, methods={"conv2d": (method,), "dense": ("svd",)},
                                          skip_layers=("head",)))
    kernel = model.get_layer("b").get_weights()[0]
    expected = vbmf_ranks_tucker2(kernel) if rule == "vbmf" else energy_ranks_for(kernel, "svd", 0.95)
    row = {r["layer"]: r for r in result.report["layers"]}["b"]
    assert row["status"] == "factorized" and row["method"] == method
    assert tuple(row["rank"]) == tuple(expected)
    if rule == "vbmf":
        assert tuple(row["rank"]) == (2, 2)  # the planted Tucker-2 ranks


def test_latency_target_uses_measured_latency(planted):
    model, data = planted
    calls = []

    def latency_fn(specs, shape):
        return 1.0 if len(specs) == 1 else 0.3  # every chain is faster than its dense layer

    def model_latency_fn(models):
        calls.append(len(models))
        return [1.0] if len(models) == 1 else [1.0, 0.5]  # parent, child (measured together)

    result = compress(model, data, _quick(targets=CostTargets(latency=0.6), skip_layers=("head",)),
                      latency_fn=latency_fn, model_latency_fn=model_latency_fn)
    report = result.report
    assert calls == [1, 2]  # parent once for the budget, then parent and child interleaved
    target = next(t for t in report["targets"] if t["name"] == "latency_kept")
    assert target == {"name": "latency_kept", "target": 0.6, "achieved": 0.5, "met": True}
    assert report["parent"]["latency_s"] == 1.0 and report["child"]["latency_s"] == 0.5
    assert any(r["status"] == "factorized" and r["latency_after_s"] == 0.3 for r in report["layers"])


def test_latency_target_without_timing_functions_is_refused(planted):
    model, data = planted
    from lrf_core.errors import LRFError

    with pytest.raises(LRFError, match="need latency functions"):
        compress(model, data, _quick(targets=CostTargets(latency=0.5)))


def test_the_compiled_forward_pass_gives_keras_predict_outputs(digits_parent, digits_data):
    from lrf_core.search.compress import _predict

    x = digits_data.val.x
    expected = digits_parent.predict(x, batch_size=256, verbose=0)
    assert len(x) % 64  # the last batch is short
    out = _predict(digits_parent, x, batch_size=64)
    assert out.dtype == np.float64 and out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert _predict(digits_parent, x[:0]).shape == (0, expected.shape[1])


@pytest.mark.parametrize(("n_val", "n_train", "added"), [
    (180, 1000, 1000),     # small validation, small training split: all of it
    (180, 50000, 2048),    # small validation: at most ESTIMATION_TRAIN_EXAMPLES
    (3000, 50000, 1096),   # topped up to ESTIMATION_MIN_EXAMPLES
    (6000, 54000, 0),      # large enough alone: training images would bias the drop upward
])
def test_the_estimation_set_tops_up_only_a_small_validation_split(n_val, n_train, added):
    from lrf_core.search.compress import estimation_size

    assert estimation_size(n_val, n_train) == added


def test_a_large_validation_split_estimates_the_drop_alone():
    from lrf_core.search.compress import ESTIMATION_MIN_EXAMPLES, _estimation_set

    rng = np.random.default_rng(0)
    n = ESTIMATION_MIN_EXAMPLES
    val = Dataset(np.arange(n, dtype=np.float32).reshape(n, 1), rng.integers(0, 3, n), "val", 3)
    train = Dataset(-np.ones((500, 1), np.float32), rng.integers(0, 3, 500), "train", 3)
    x, y = _estimation_set(CompressData(train, train, val), seed=0)
    assert sorted(x[:, 0].tolist()) == list(range(n))  # every validation image, no training image
    assert np.array_equal(y, val.y[x[:, 0].astype(int)])  # labels stay with their images
    assert not np.array_equal(x[:, 0], np.arange(n))  # shuffled: any prefix is a random subset
    small = Dataset(val.x[:100], val.y[:100], "val", 3)
    x, _ = _estimation_set(CompressData(train, train, small), seed=0)
    assert len(x) == 600 and (x[:, 0] == -1).sum() == 500  # a small split is topped up with training images


# -- recovery budgets: larger budgets before the fine-tune, tried first ---------------------------


@pytest.fixture(scope="module")
def recovery_search(digits_parent, digits_data):
    config = _quick(max_drop=1.0, methods=SVD_ONLY, recovery_budgets=(2.0, 6.0))
    return config, search(digits_parent, digits_data, config)


def test_recovery_rungs_are_larger_budgets_largest_first_and_leave_the_base_choice_alone(recovery_search, digits_parent,
                                                                                           digits_data):
    config, searched = recovery_search
    assert [r.max_drop for r in searched.recovery] == [6.0, 2.0] and searched.max_drop == 1.0
    plain = search(digits_parent, digits_data, _quick(max_drop=1.0, methods=SVD_ONLY))
    assert searched.allocation.key() == plain.allocation.key()  # the memo changes no decision
    totals = [sum(row["params_after"] for row in r.report["layers"]) for r in (*searched.recovery, searched)]
    assert totals[0] <= totals[1] <= totals[2]  # a larger budget never compresses less
    assert totals[0] < totals[2]  # and here it compresses more
    path = searched.report["lambda_path"]
    full = [tuple(sorted(p.items())) for p in path if p["examples"] == max(q["examples"] for q in path)]
    assert len(full) == len(set(full))  # no allocation read twice in full
    parent_params = searched.totals.params
    for r in (*searched.recovery, searched):
        # the rung's allocation as evaluated (possibly at another λ giving the same allocation)
        params = parent_params - sum(row["params_before"] - row["params_after"] for row in r.report["layers"])
        chosen = [p for p in path if abs(p["params_kept"] * parent_params - params) < 0.5]
        assert chosen and min(p["est_drop_ucb95"] for p in chosen) <= r.max_drop  # each rung within its own budget


VAL_EXAMPLES = 360  # the fake validation verdicts' size: one example is 0.28 points
UNTUNED_EXTRA_WRONG = 4  # the fake children get these wrong before their fine-tune


def _fake_rungs(monkeypatch, wrong):
    """Fine-tune stand-in: the n-th fine-tuned child gets ``wrong[n]`` more validation examples wrong than
    the parent (of :data:`VAL_EXAMPLES`, the parent right on all), by patching the per-example flags the
    acceptance judges. Returns the parameter counts of the models fine-tuned, in order."""
    from lrf_core.finetune import FinetuneResult
    from lrf_core.search import compress as core

    calls = []

    def fake_finetune(model, train, val, config, teacher=None, on_epoch=None):
        calls.append(model.count_params())
        acc = 1 - wrong[len(calls) - 1] / VAL_EXAMPLES
        before = acc - UNTUNED_EXTRA_WRONG / VAL_EXAMPLES  # the fine-tune's epoch recovers these
        return FinetuneResult(1, 1, before, acc, 0.0, (before, acc))

    def fake_correct(model, split):
        flags = np.ones(VAL_EXAMPLES, bool)
        if calls:  # a fine-tuned child; before the first fine-tune it is the parent
            flags[: wrong[len(calls) - 1]] = False
        return flags

    monkeypatch.setattr(core, "finetune", fake_finetune)
    monkeypatch.setattr(core, "_correct", fake_correct)
    return calls


@pytest.mark.parametrize("wrong, kept_at", [([11, 1, 0], 1), ([11, 7, 18], 2), ([1, 0, 0], 0)])
def test_finish_keeps_the_first_rung_the_gate_criterion_accepts_after_the_fine_tune(recovery_search, digits_parent,
                                                                                   digits_data, monkeypatch, wrong,
                                                                                   kept_at):
    from lrf_core.search import compress as core

    config, searched = recovery_search
    calls = _fake_rungs(monkeypatch, wrong)
    result = core.finish(digits_parent, searched, digits_data, config)
    tried = result.report["recovery"]
    assert len(calls) == len(tried) == kept_at + 1
    assert [t["max_drop_before_finetune"] for t in tried] == [6.0, 2.0, 1.0][: kept_at + 1]
    assert [t["kept"] for t in tried] == [False] * kept_at + [True]
    assert [t["val_drop_after_finetune"] for t in tried] == pytest.approx(
        [100 * w / VAL_EXAMPLES for w in wrong[: kept_at + 1]])
    for t, w in zip(tried, wrong):  # before the fine-tune, then after its one epoch
        assert t["val_drop_by_epoch"] == pytest.approx([100 * (w + UNTUNED_EXTRA_WRONG) / VAL_EXAMPLES,
                                                        100 * w / VAL_EXAMPLES])
    assert all(t["val_bound"] == 1.5 and t["accept_max_drop"] == 1.0 and t["accept_confidence"] == 0.95 for t in tried)
    rung = [*searched.recovery, searched][kept_at]
    assert result.report["config"]["max_drop"] == rung.max_drop
    assert result.model.count_params() == calls[-1]
    assert {r["layer"]: r.get("rank") for r in result.report["layers"]} == {r["layer"]: r.get("rank") for r in
                                                                          rung.report["layers"]}


def test_a_child_within_the_point_budget_but_not_the_bootstrap_bound_is_refused(recovery_search, digits_parent,
                                                                                 digits_data, monkeypatch):
    """The demo's refusal: 3 of 360 wrong is a 0.83-point drop, within the 1-point budget, but the paired
    bootstrap gives P(drop < 1.5) ~ 0.92 < 0.95, so the gate would refuse it; the search must not keep it."""
    from lrf_core.search import compress as core

    config, _ = recovery_search
    rungs = [(b, lambda: digits_parent) for b in (6.0, 2.0, 1.0)]
    _fake_rungs(monkeypatch, [3, 1, 0])
    kept, _, _, tried = core.finetune_first_within(lambda: digits_parent, rungs, digits_data, config)
    assert kept == 1 and [t["kept"] for t in tried] == [False, True]
    assert tried[0]["val_drop_after_finetune"] <= 1.0 and 0.85 < tried[0]["val_confidence"] < 0.95
    assert tried[1]["val_confidence"] > 0.99


def test_a_child_likely_to_fail_the_heldout_drop_check_is_refused(recovery_search, digits_parent, digits_data,
                                                                    monkeypatch):
    """fashion_vgg's failure: a child 0.74 points down on validation was kept and measured 1.14 on the test split.
    2 of 360 wrong (0.56 points) passes the point check and the bootstrap (P(drop < 1.5) > 0.95), but the held-out
    check is predicted to pass with only 0.81 < 0.95, so the next rung is tried."""
    from dataclasses import replace

    from lrf_core.search import compress as core

    config, _ = recovery_search
    rungs = [(b, lambda: digits_parent) for b in (6.0, 2.0, 1.0)]
    _fake_rungs(monkeypatch, [2, 1, 0])
    kept, _, _, tried = core.finetune_first_within(lambda: digits_parent, rungs, digits_data, config)
    assert kept == 1 and [t["kept"] for t in tried] == [False, True]
    assert tried[0]["val_confidence"] >= 0.95 and 0.80 < tried[0]["heldout_pass_probability"] < 0.82
    assert tried[0]["heldout_examples"] == len(digits_data.test) == 539
    assert tried[1]["heldout_pass_probability"] > 0.95
    # without a held-out split the validation split's size stands in for it
    _fake_rungs(monkeypatch, [2, 1, 0])
    _, _, _, tried = core.finetune_first_within(lambda: digits_parent, rungs, replace(digits_data, test=None), config)
    assert tried[0]["heldout_examples"] == len(digits_data.val)


def test_the_acceptance_thresholds_are_the_ones_passed(recovery_search, digits_parent, digits_data, monkeypatch):
    """The pipeline accepts a recovery child under its gate's thresholds at min(search.max_drop, gate.max_drop):
    a search budget set above the gate must not keep a child the gate would then refuse."""
    from lrf_core.gate import GateConfig
    from lrf_core.search import compress as core

    config, _ = recovery_search
    rungs = [(b, lambda: digits_parent) for b in (6.0, 2.0, 1.0)]
    # 0.56 and 0.28 points down: held-out pass predicted 0.81 and 0.98 at max_drop 1, 0.31 and 0.52 at 0.3;
    # bootstrap P(drop < 1.0) 0.86 and 0.98
    for accept, kept_at in ((None, 1), (GateConfig(confidence=0.8), 0), (GateConfig(max_drop=0.3, tolerance=1.0), 2),
                            (GateConfig(max_drop=1.0, tolerance=0.0, confidence=0.99), 2)):
        _fake_rungs(monkeypatch, [2, 1, 0])
        kept, _, _, tried = core.finetune_first_within(lambda: digits_parent, rungs, digits_data, config,
                                                       accept=accept)
        assert kept == kept_at and [t["kept"] for t in tried] == [False] * kept_at + [True]


@pytest.mark.parametrize("changes, words", [
    (dict(max_drop=None), "need max_drop"),
    (dict(max_drop=1.0, recovery_budgets=(1.0, 3.0)), "larger than max_drop"),
    (dict(max_drop=1.0, selection="sequential"), "layerwise only"),
    (dict(max_drop=1.0, targets=CostTargets(params=0.5)), "neither cost targets"),
    (dict(max_drop=1.0, recovery_budgets=(3.0, 3.0)), "twice"),
])
def test_recovery_budgets_are_validated(changes, words):
    from lrf_core.errors import PlanError

    kwargs = {"recovery_budgets": (3.0,), **changes}
    with pytest.raises(PlanError, match=words):
        CompressConfig(**kwargs)


def test_a_candidate_chosen_under_several_budgets_is_refitted_once(planted):
    """Each planted conv has one exact cheap candidate, chosen under every budget: two refit jobs in all, not six."""
    from lrf_core.search.jobs import RefitJob, local_map

    model, data = planted
    refits = []

    def counting_map(fn, jobs):
        jobs = list(jobs)
        refits.extend(j for j in jobs if isinstance(j, RefitJob))
        return local_map(fn, jobs)

    searched = search(model, data, _quick(max_drop=1.0, skip_layers=("head",), recovery_budgets=(2.0, 6.0)),
                      layer_map=counting_map)
    chosen = {(name, c.method, c.rank) for r in (*searched.recovery, searched) for name, c in r.allocation.factorized.items()
              if c.method != "svd"}
    assert len(refits) == len(chosen) == 2
    log = searched.report["refits"]  # one record per refit, in every choice's report
    assert sorted((r["layer"], r["method"], tuple(r["rank"])) for r in log) == sorted(chosen)
    assert all(r["seconds"] > 0 and r["sweeps"] >= 0 and r["kept"] == (r["similarity_after"] >= r["similarity_before"])
               for r in log)
    assert all(r.report["refits"] == log for r in searched.recovery)
    for r in searched.recovery:  # the very same refitted candidates
        assert all(r.allocation.choice[n] is searched.allocation.choice[n] for n in ("a", "b"))


def test_the_block_latency_rule_can_only_be_turned_off_where_latency_is_timed():
    from lrf_core.errors import PlanError

    with pytest.raises(PlanError, match="only changes the latency guard or a latency target"):
        CompressConfig(max_drop=1.0, block_latency_rule=False)
    assert not CompressConfig(max_drop=1.0, latency_guard=True, block_latency_rule=False).block_latency_rule
    assert not CompressConfig(targets=CostTargets(latency=0.9), block_latency_rule=False).block_latency_rule


def test_a_larger_budget_the_guard_sent_back_to_the_parent_is_no_recovery_choice():
    """Kept as a choice, the parent-shaped child would be "within budget" after its fine-tune and the gate would
    refuse it as not compressed (the demo's 8-point child, timed 1.02-1.04x, while the 1-point child was not)."""
    from lrf_core.search.allocate import Allocation, ModelTotals
    from lrf_core.search.compress import SearchResult, with_recovery

    def choice(max_drop, factorized):
        alloc = Allocation({"a": object() if factorized else None, "b": None}, 0.1)
        return SearchResult(alloc, {"config": {"max_drop": max_drop}}, ModelTotals(10, 10))

    base = with_recovery(choice(1.0, True), [choice(8.0, False), choice(4.0, True), choice(2.0, False)])
    assert [r.max_drop for r in base.recovery] == [4.0] and base.max_drop == 1.0
    reason = "nothing left factorized after the latency guard"
    assert base.report["recovery_skipped"] == [{"max_drop": 8.0, "reason": reason}, {"max_drop": 2.0, "reason": reason}]
    untouched = with_recovery(choice(1.0, True), [choice(4.0, True)])
    assert len(untouched.recovery) == 1 and "recovery_skipped" not in untouched.report
