"""Dynamic parameter rank pruning (METHODS.md §5): parameterisation, regularisers, pruning, export."""

from __future__ import annotations

import zipfile

import keras
import numpy as np
import pytest

from lrf_core.dprp import (
    DPRPConfig,
    DPRPConfigError,
    SVDConv2D,
    SVDDense,
    energy_rank,
    orthogonality_penalty,
    parameterise,
    sparsity_penalty,
    train_dprp,
)
from lrf_core.errors import LRFError


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


@pytest.fixture(scope="module")
def parent(digits_model_path):
    return keras.saving.load_model(digits_model_path)


@pytest.fixture(scope="module")
def dprp_run(parent, digits_split):
    """One DPRP run with the default config, shared by the tests below (the slow part)."""
    train, val, _ = digits_split
    weights_before = [w.copy() for w in parent.get_weights()]
    seen = []
    result = train_dprp(parent, train, val, DPRPConfig(), on_epoch=seen.append)
    return result, weights_before, seen


# -- parameterisation --------------------------------------------------------------------
def test_parameterised_model_reproduces_parent_at_init(parent, digits_split, tmp_path):
    _, val, _ = digits_split
    model = parameterise(parent)
    kinds = {layer.name: type(layer) for layer in model.layers}
    assert kinds["conv1"] is SVDConv2D and kinds["conv3"] is SVDConv2D and kinds["fc1"] is SVDDense
    assert kinds["logits"] is keras.layers.Dense  # the classifier stays dense by default
    assert model.get_layer("fc1").s.shape == (128,)  # full rank min(512, 128)
    x = val.x[:128]
    expected = parent.predict(x, verbose=0)
    assert _rel(expected, model.predict(x, verbose=0)) <= 1e-5
    # the training layers are registered and serialize (safe_mode round trip)
    model.save(tmp_path / "svd.keras")
    loaded = keras.saving.load_model(tmp_path / "svd.keras", safe_mode=True)
    assert type(loaded.get_layer("conv3")) is SVDConv2D
    assert _rel(expected, loaded.predict(x, verbose=0)) <= 1e-5


# -- regularisers and the energy rule ------------------------------------------------------
def test_orthogonality_penalty_zero_for_orthonormal_factors_positive_otherwise(rng):
    u, _ = np.linalg.qr(rng.standard_normal((12, 5)))
    v, _ = np.linalg.qr(rng.standard_normal((20, 5)))
    assert float(orthogonality_penalty(u, v)) == pytest.approx(0.0, abs=1e-12)
    # ‖UᵀU − I‖² = ‖(4−1)·e₁e₁ᵀ‖² = 9 for U scaled by 2 in one column; V orthonormal; / r² = 25
    u2 = u.copy()
    u2[:, 0] *= 2.0
    assert float(orthogonality_penalty(u2, v)) == pytest.approx(9.0 / 25.0, rel=1e-9)


def test_hoyer_and_l1_regularisers_on_a_known_vector():
    s = np.array([3.0, -4.0, 0.0])
    assert float(sparsity_penalty(s, "l1")) == pytest.approx(7.0)
    assert float(sparsity_penalty(s, "hoyer")) == pytest.approx(7.0 / 5.0, rel=1e-6)
    assert float(sparsity_penalty(np.array([2.0, 0.0, 0.0]), "hoyer")) == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(DPRPConfigError, match="regularizer"):
        sparsity_penalty(s, "l2")


def test_energy_rank_keeps_smallest_set_holding_the_energy():
    s = np.array([4.0, 3.0, 0.0])  # s² = 16, 9, 0 → 0.64, 1.0, 1.0 cumulative
    assert energy_rank(s, 0.64) == 1
    assert energy_rank(s, 0.65) == 2
    assert energy_rank(s, 1.0) == 2
    assert energy_rank(s, 0.5, min_rank=3) == 3


# -- configuration errors ------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"energy": 0.0}, "energy"),
        ({"energy": 1.5}, "energy"),
        ({"regularizer": "l2"}, "regularizer"),
        ({"epochs": 0}, "epochs"),
        ({"prune_every": 0}, "prune_every"),
        ({"min_rank": 0}, "min_rank"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"lambda_orth": -1.0}, "lambda_orth"),
        ({"lr_schedule": "step"}, "lr_schedule"),
        ({"layers": "conv1"}, "layers"),
    ],
)
def test_bad_config_raises_naming_the_field(kwargs, field):
    with pytest.raises(DPRPConfigError, match=f"DPRPConfig.{field}") as info:
        DPRPConfig(**kwargs)
    assert isinstance(info.value, LRFError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("name, reason", [("nope", "no such layer"), ("bn2", "cannot be parameterised")])
def test_unknown_or_ineligible_layer_name_raises_before_training(parent, digits_split, name, reason):
    train, val, _ = digits_split
    with pytest.raises(DPRPConfigError, match=f"DPRPConfig.layers names `{name}`.*{reason}"):
        train_dprp(parent, train, val, DPRPConfig(layers=(name,)))


# -- training, pruning, export --------------------------------------------------------------
def test_dprp_shrinks_during_training_and_keeps_accuracy(dprp_run):
    result, _, seen = dprp_run
    config = DPRPConfig()
    params = [result.params_before] + [h.params for h in result.history]
    assert len(result.history) == config.epochs and list(seen) == list(result.history)
    assert all(b <= a for a, b in zip(params, params[1:]))
    assert any(b < a for a, b in zip(params, params[1:]))
    assert result.params_after == result.history[-1].params < result.params_before
    assert result.params_after <= 0.8 * result.params_before  # measured: −28.9 %
    # pruning physically slices U, s, V: the trained model's own size goes down too
    train_params = [h.train_params for h in result.history]
    assert any(b < a for a, b in zip(train_params, train_params[1:]))
    assert not result.history[-1].pruned  # the final ranks are fine-tuned before export
    for name, rank in result.ranks.items():
        assert result.svd_model.get_layer(name).s.shape == (rank,)
    assert result.val_accuracy >= result.val_accuracy_parent - 0.01


def test_exported_model_is_standard_keras_and_round_trips(dprp_run, parent, digits_split, tmp_path):
    result, _, _ = dprp_run
    _, val, _ = digits_split
    model = result.model
    for layer in model.layers:
        assert type(layer).__module__.startswith("keras."), layer
    assert model.count_params() == result.params_after
    # kept chains are the svd chain of METHODS.md §1; others are restored as the dense layer
    for name, rank in result.ranks.items():
        if name in result.restored_dense:
            assert type(model.get_layer(name)).__name__ in ("Conv2D", "Dense")
        else:
            first, last = model.get_layer(f"{name}_lrf_0"), model.get_layer(f"{name}_lrf_1")
            original = parent.get_layer(name)
            assert type(first) is type(last) is type(original) and not first.use_bias
            assert first.kernel.shape[-1] == rank and last.kernel.shape[-1] == original.kernel.shape[-1]
            if isinstance(original, keras.layers.Conv2D):
                assert first.kernel_size == original.kernel_size and last.kernel_size == (1, 1)
    assert set(result.ranks) - set(result.restored_dense), "at least one layer should stay factorized"

    x = val.x[:128]
    trained = result.svd_model.predict(x, verbose=0)
    assert _rel(trained, model.predict(x, verbose=0)) <= 1e-5

    path = tmp_path / "dprp.keras"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        assert "lrflow" not in archive.read("config.json").decode()
    registry = keras.saving.get_custom_objects()
    hidden = {k: registry.pop(k) for k in list(registry) if k.startswith("lrflow>")}
    assert hidden, "the training layers should be registered while lrflow is imported"
    try:
        loaded = keras.saving.load_model(path, safe_mode=True)
    finally:
        registry.update(hidden)
    assert _rel(trained, loaded.predict(x, verbose=0)) <= 1e-5


def test_parent_weights_unchanged_after_training(dprp_run, parent):
    _, before, _ = dprp_run
    after = parent.get_weights()
    assert len(before) == len(after)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_layers_that_cannot_shrink_are_skipped_or_exported_dense(parent, digits_split):
    train, val, _ = digits_split
    # min_rank 6: conv1 (D=9, T=16) cannot save (6·25 ≥ 144) → skipped; one epoch, no prune
    result = train_dprp(parent, train, val, DPRPConfig(epochs=1, min_rank=6))
    assert [name for name, _ in result.skipped] == ["conv1"] and "conv1" not in result.ranks
    assert set(result.restored_dense) == set(result.ranks)  # all at full rank ≥ break-even
    assert result.params_after == result.params_before == result.model.count_params()
    assert not any("_lrf_" in layer.name for layer in result.model.layers)
