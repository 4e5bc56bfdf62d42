"""train_classifier's rate schedule (the rate falls exactly when validation accuracy stalls), its per-epoch
reports, and its checkpoints (a resumed run continues where it stood)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lrf_core.data import load_dataset, split_dataset
from lrf_core.zoo import TrainCheckpoint, accuracy, digits_cnn, train_classifier

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


#: The scheduled training of these tests: the rate is cut after every stalled epoch, so cuts are frequent.
SCHEDULE = dict(epochs=25, patience=4, lr_patience=1, learning_rate=3e-3, min_learning_rate=1e-6)


def _train(splits, **kwargs):
    """A fresh width-8 digits CNN trained on ``splits`` with ``kwargs``: (model, TrainResult, EpochLogs)."""
    train, val = splits
    model = digits_cnn(train.sample_shape, train.num_classes, width=8)
    reported = []
    result = train_classifier(model, train, val, on_epoch=reported.append, **kwargs)
    return model, result, reported


@pytest.fixture(scope="module")
def scheduled(digits_splits):
    """One training with the rate schedule: the model, its TrainResult, the EpochLogs and checkpoints it handed out."""
    checkpoints = []
    return (*_train(digits_splits, **SCHEDULE, on_checkpoint=checkpoints.append), checkpoints)


def test_rate_falls_when_validation_stalls_and_best_weights_are_kept(digits_splits, scheduled):
    _, val = digits_splits
    model, result, *_ = scheduled

    assert len(result.learning_rates) == len(result.val_accuracy_history) == result.epochs
    expected = _expected_rates(result.val_accuracy_history, 3e-3, lr_patience=1, factor=0.1, floor=1e-6)
    np.testing.assert_allclose(result.learning_rates, expected, rtol=1e-5)
    assert min(result.learning_rates) < 3e-3, "4 stalled epochs before stopping imply at least one drop"
    _assert_stopped_by_the_rule(result, SCHEDULE)
    assert result.val_accuracy == pytest.approx(accuracy(model, val))


def test_every_epoch_is_reported_with_the_rate_it_trained_at(scheduled):
    _, result, reported, _ = scheduled
    assert [e.epoch for e in reported] == list(range(1, result.epochs + 1))
    assert all(e.max_epochs == 25 for e in reported)
    # the same figures the result keeps: a rate cut at an epoch's end shows from the next epoch on
    assert [e.val_accuracy for e in reported] == pytest.approx(result.val_accuracy_history)
    assert [e.learning_rate for e in reported] == pytest.approx(result.learning_rates)
    assert len({e.learning_rate for e in reported}) > 1
    assert all(e.seconds > 0 and np.isfinite(e.loss) and 0 <= e.accuracy <= 1 for e in reported)


def _assert_stopped_by_the_rule(result, schedule) -> None:
    """Early stopping as documented: ``patience`` epochs after the (first) best, or the cap; best weights kept."""
    best = int(np.argmax(result.val_accuracy_history))
    assert result.epochs == min(schedule["epochs"], best + 1 + schedule["patience"])
    assert result.kept_epoch == best + 1
    assert result.val_accuracy == pytest.approx(max(result.val_accuracy_history), abs=1e-6)


def test_constant_rate_without_a_schedule(digits_splits):
    _, result, reported = _train(digits_splits, epochs=3, patience=3)
    assert result.learning_rates == pytest.approx((1e-3,) * 3)
    assert [e.learning_rate for e in reported] == pytest.approx((1e-3,) * 3)  # Keras logs no rate without a schedule
    _assert_stopped_by_the_rule(result, dict(epochs=3, patience=3))  # at the cap Keras 3 also keeps the best


def _mid_plateau(checkpoints):
    """The first checkpoint taken while early stopping was counting stalled epochs (and the rate had been cut):
    a resume that lost the schedules' counters would count that stall afresh."""
    chosen = next((c for c in checkpoints if c.early_stopping["wait"] > 0 and not c.stopped), None)
    assert chosen is not None, "the schedule of these tests stalls before it stops"
    assert chosen.history["learning_rate"][-1] > chosen.learning_rate > 0, "the stall has cut the rate"
    return chosen


def test_a_resumed_run_continues_where_its_checkpoint_stood(digits_splits, scheduled):
    *_, checkpoints = scheduled
    checkpoint = _mid_plateau(checkpoints)
    done = checkpoint.epochs_done
    model, result, reported = _train(digits_splits, **SCHEDULE, resume=checkpoint)

    # the history before the checkpoint is the interrupted run's; the epochs after it are numbered on
    assert result.val_accuracy_history[:done] == checkpoint.history["val_accuracy"]
    assert [e.epoch for e in reported] == list(range(done + 1, result.epochs + 1))
    assert len(result.val_accuracy_history) == len(result.learning_rates) == result.epochs > done
    # the rate and both schedules' counters carried over: the documented rules hold over the whole history
    expected = _expected_rates(result.val_accuracy_history, 3e-3, lr_patience=1, factor=0.1, floor=1e-6)
    np.testing.assert_allclose(result.learning_rates, expected, rtol=1e-5)
    _assert_stopped_by_the_rule(result, SCHEDULE)
    # the optimizer's step count carried over (Adam's bias correction depends on it)
    steps_per_epoch = -(-len(digits_splits[0]) // 64)
    assert int(model.optimizer.iterations) == result.epochs * steps_per_epoch


def test_a_resumed_run_honours_the_counters_of_its_checkpoint(digits_splits, scheduled):
    """A checkpoint whose best no epoch can beat (accuracy 1.0), one stalled epoch short of both schedules' patience:
    resumed, the next epoch must cut the rate and end the run, restoring the checkpoint's best weights. Counters
    reset on resume (Keras resets them in on_train_begin) would count that epoch as a gain and train on."""
    *_, checkpoints = scheduled
    checkpoint = _mid_plateau(checkpoints)
    unbeatable = replace(
        checkpoint,
        early_stopping={**checkpoint.early_stopping, "best": 1.0, "wait": SCHEDULE["patience"] - 1},
        plateau={**checkpoint.plateau, "best": 1.0, "wait": SCHEDULE["lr_patience"] - 1})
    model, result, reported = _train(digits_splits, **SCHEDULE, resume=unbeatable)
    assert result.epochs == checkpoint.epochs_done + 1 and len(reported) == 1
    assert reported[0].learning_rate == pytest.approx(checkpoint.learning_rate)  # the rate it was resumed at
    for restored, best in zip(model.get_weights(), checkpoint.best_weights):
        np.testing.assert_array_equal(restored, best)
    assert int(model.optimizer.iterations) == result.epochs * -(-len(digits_splits[0]) // 64)
    assert float(model.optimizer.learning_rate) == pytest.approx(checkpoint.learning_rate * 0.1)  # cut once more


def test_a_resumed_run_is_reproducible_from_its_checkpoint(digits_splits, scheduled):
    checkpoint = _mid_plateau(scheduled[-1])
    first, result, _ = _train(digits_splits, **SCHEDULE, resume=checkpoint)
    second, again, _ = _train(digits_splits, **SCHEDULE, resume=checkpoint)
    assert again == result
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_resuming_a_finished_run_trains_nothing_and_keeps_the_best_weights(digits_splits, scheduled):
    model, result, _, checkpoints = scheduled
    last = checkpoints[-1]
    assert last.epochs_done == result.epochs
    resumed, again, reported = _train(digits_splits, **SCHEDULE, resume=last)
    assert reported == [] and again.epochs == result.epochs
    assert again.val_accuracy_history == result.val_accuracy_history and again.kept_epoch == result.kept_epoch
    for a, b in zip(resumed.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_must_hold_every_epoch_it_claims():
    with pytest.raises(ValueError, match="needs that many entries"):
        TrainCheckpoint(epochs_done=2, seconds=1.0, history={"loss": (1.0,), "accuracy": (0.5,),
                                                             "val_accuracy": (0.5,), "learning_rate": (1e-3,)},
                        early_stopping={}, plateau={}, stopped=False, learning_rate=1e-3, weights=(), optimizer=())


@pytest.mark.parametrize("lr_patience, patience", [(3, 3), (0, 3), (4, 2)])
def test_schedule_must_leave_epochs_for_the_reduced_rate(digits_splits, lr_patience, patience):
    train, val = digits_splits
    model = digits_cnn(train.sample_shape, train.num_classes, width=8)
    with pytest.raises(ValueError, match="lr_patience must be in"):
        train_classifier(model, train, val, epochs=2, patience=patience, lr_patience=lr_patience)
