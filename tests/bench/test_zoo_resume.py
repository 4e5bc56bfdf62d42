"""A zoo parent's training survives interruption: the per-epoch checkpoint file, and the resume from it.

A converged Fashion parent trains for one to four hours on a slow 2-core host, longer than a
working session; ``bench/zoo.py`` writes ``<name>-<mode>.ckpt.npz`` after each epoch and
continues from it when started again with the same request.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from bench.common import load_splits  # noqa: E402
from bench.zoo import TrainPlan, checkpoint_from_arrays, checkpoint_path, load_or_train, zoo_path  # noqa: E402
from tasks.files import load_npz  # noqa: E402

PLAN = TrainPlan(max_epochs=4, patience=3, lr_patience=1)
NAME, MODE = "tiny_cnn", "resume-test"


class Interrupted(Exception):
    """Stands in for the end of a session: raised right after a checkpoint is written."""


@pytest.fixture(scope="module")
def splits():
    return load_splits("sklearn:digits", val_fraction=0.15)


def _interrupt_after(monkeypatch, epochs: int) -> None:
    """Make the zoo's checkpoint writer stop the run once ``epochs`` checkpoints are on disk."""
    import tasks.files

    write, written = tasks.files.save_npz_atomic, []

    def write_then_stop(path, arrays):
        write(path, arrays)
        written.append(path)
        if len(written) == epochs:
            raise Interrupted

    monkeypatch.setattr(tasks.files, "save_npz_atomic", write_then_stop)


@pytest.fixture(scope="module")
def interrupted_then_resumed(splits, tmp_path_factory):
    """Train tiny_cnn, stop it after 2 epochs, read its checkpoint, then start it again to the end."""
    directory = tmp_path_factory.mktemp("zoo")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _interrupt_after(monkeypatch, 2)
        with pytest.raises(Interrupted):
            load_or_train(NAME, splits, mode=MODE, directory=directory, plan=PLAN)
    saved = load_npz(checkpoint_path(NAME, MODE, directory))
    model, record = load_or_train(NAME, splits, mode=MODE, directory=directory, plan=PLAN)
    return directory, saved, model, record


def test_an_interrupted_parent_leaves_a_checkpoint_and_no_model(interrupted_then_resumed):
    directory, saved, _, record = interrupted_then_resumed
    checkpoint, resumed_at = checkpoint_from_arrays(saved, record["request"])
    assert checkpoint.epochs_done == 2 and resumed_at == ()
    assert len(checkpoint.weights) > 0 and len(checkpoint.optimizer) > 2  # step, rate, moments
    assert all(np.all(np.isfinite(w)) for w in checkpoint.weights)


def test_the_restarted_parent_continues_from_its_checkpoint(interrupted_then_resumed):
    directory, saved, model, record = interrupted_then_resumed
    checkpoint, _ = checkpoint_from_arrays(saved, record["request"])
    assert record["resumed_after_epochs"] == [2]
    assert record["val_accuracy_history"][:2] == list(checkpoint.history["val_accuracy"])
    assert len(record["val_accuracy_history"]) == len(record["learning_rates"]) == record["epochs"] > 2
    assert record["train_seconds"] > checkpoint.seconds > 0
    # the finished parent is saved and its checkpoint removed, so a third start reuses the parent
    assert zoo_path(NAME, MODE, directory).exists()
    assert not checkpoint_path(NAME, MODE, directory).exists()


def test_a_checkpoint_of_another_request_is_not_resumed(splits, interrupted_then_resumed, tmp_path):
    _, saved, _, record = interrupted_then_resumed
    assert checkpoint_from_arrays(saved, {**record["request"], "seed": 1}) is None
    # through load_or_train: a stale checkpoint (here: another seed's) is overwritten, not continued
    from tasks.files import save_npz_atomic

    save_npz_atomic(checkpoint_path(NAME, MODE, tmp_path), saved)
    _, other = load_or_train(NAME, splits, mode=MODE, directory=tmp_path, plan=PLAN, seed=1)
    assert other["resumed_after_epochs"] == [] and other["request"]["seed"] == 1
    assert not checkpoint_path(NAME, MODE, tmp_path).exists()
