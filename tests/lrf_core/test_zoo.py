"""train_classifier's rate schedule (the rate falls exactly when validation accuracy stalls) and its per-epoch reports."""

from __future__ import annotations

import numpy as np
import pytest

from lrf_core.data import load_dataset, split_dataset
from lrf_core.zoo import accuracy, digits_cnn, train_classifier

# ReduceLROnPlateau counts an epoch as a gain only above best + min_delta (Keras' default 1e-4)
PLATEAU_MIN_DELTA = 1e-4


def _expected_rates(val_history, start: float, lr_patience: int, factor: float, floor: float) -> list[float]:
    """Replay the documented rule: ×factor after lr_patience epochs without a gain (counter restarts), not below floor."""
    rates, rate, best, wait = [], start, -np.inf, 0
    for acc in val_history:
        rates.append(rate)
        if acc > best + PLATEAU_MIN_DELTA:
            best, wait = acc, 0
        else:
            wait += 1
            if wait >= lr_patience:
                rate, wait = max(rate * factor, floor), 0
    return rates


@pytest.fixture(scope="module")
def digits_splits():
    train_all = load_dataset("sklearn:digits", split="train")
    return split_dataset(train_all, (0.85, 0.15), seed=0)


@pytest.fixture(scope="module")
def scheduled(digits_splits):
    """One training with the rate schedule: the model, its TrainResult and the EpochLogs it reported."""
    train, val = digits_splits
    model = digits_cnn(train.sample_shape, train.num_classes, width=8)
    reported = []
    result = train_classifier(model, train, val, epochs=25, patience=4, lr_patience=1, learning_rate=3e-3,
                              min_learning_rate=1e-6, on_epoch=reported.append)
    return model, result, reported


def test_rate_falls_when_validation_stalls_and_best_weights_are_kept(digits_splits, scheduled):
    _, val = digits_splits
    model, result, _ = scheduled

    assert len(result.learning_rates) == len(result.val_accuracy_history) == result.epochs
    expected = _expected_rates(result.val_accuracy_history, 3e-3, lr_patience=1, factor=0.1, floor=1e-6)
    np.testing.assert_allclose(result.learning_rates, expected, rtol=1e-5)
    assert min(result.learning_rates) < 3e-3, "4 stalled epochs before stopping imply at least one drop"
    if result.epochs < 25:  # stopped early: the best epoch's weights are restored
        assert result.kept_epoch == int(np.argmax(result.val_accuracy_history)) + 1
        assert result.val_accuracy == pytest.approx(max(result.val_accuracy_history), abs=1e-6)
    assert result.val_accuracy == pytest.approx(accuracy(model, val))


def test_every_epoch_is_reported_with_the_rate_it_trained_at(scheduled):
    _, result, reported = scheduled
    assert [e.epoch for e in reported] == list(range(1, result.epochs + 1))
    assert all(e.max_epochs == 25 for e in reported)
    # the same figures the result keeps: a rate cut at an epoch's end shows from the next epoch on
    assert [e.val_accuracy for e in reported] == pytest.approx(result.val_accuracy_history)
    assert [e.learning_rate for e in reported] == pytest.approx(result.learning_rates)
    assert len({e.learning_rate for e in reported}) > 1
    assert all(e.seconds > 0 and np.isfinite(e.loss) and 0 <= e.accuracy <= 1 for e in reported)


def test_constant_rate_without_a_schedule(digits_splits):
    train, val = digits_splits
    model = digits_cnn(train.sample_shape, train.num_classes, width=8)
    reported = []
    result = train_classifier(model, train, val, epochs=3, patience=3, on_epoch=reported.append)
    assert result.learning_rates == pytest.approx((1e-3,) * 3)
    assert [e.learning_rate for e in reported] == pytest.approx((1e-3,) * 3)  # Keras logs no rate without a schedule
    assert result.kept_epoch == 3  # epoch cap: Keras keeps the last weights


@pytest.mark.parametrize("lr_patience, patience", [(3, 3), (0, 3), (4, 2)])
def test_schedule_must_leave_epochs_for_the_reduced_rate(digits_splits, lr_patience, patience):
    train, val = digits_splits
    model = digits_cnn(train.sample_shape, train.num_classes, width=8)
    with pytest.raises(ValueError, match="lr_patience must be in"):
        train_classifier(model, train, val, epochs=2, patience=patience, lr_patience=lr_patience)
