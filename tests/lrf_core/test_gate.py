"""The accuracy gate: observed drop, paired bootstrap confidence, cost and latency checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lrf_core.errors import DataError, PlanError
from lrf_core.gate import GateConfig, bootstrap_drops, gate_verdict, heldout_pass_probability, judge_accuracy


def _outputs(labels: np.ndarray, wrong: np.ndarray, classes: int = 10) -> np.ndarray:
    """One-hot logits that predict ``labels`` except where ``wrong`` (then the next class)."""
    predicted = np.where(wrong, (labels + 1) % classes, labels)
    return np.eye(classes)[predicted]


def _pair(n: int, child_extra_wrong: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    parent_wrong = np.zeros(n, bool)
    parent_wrong[: n // 20] = True  # the parent is 95 % right
    child_wrong = parent_wrong.copy()
    child_wrong[n // 20: n // 20 + child_extra_wrong] = True
    return _outputs(labels, parent_wrong), _outputs(labels, child_wrong), labels


def test_identical_models_pass_with_full_confidence():
    parent, _, labels = _pair(500, 0)
    verdict = gate_verdict(parent, parent, labels, GateConfig(), params_kept=0.3, macs_kept=0.4)
    assert verdict.passed and verdict.drop_points == 0.0
    check = {c.name: c for c in verdict.checks}
    assert check["confidence_drop_below_bound"].value == 1.0
    assert verdict.parent_accuracy == verdict.child_accuracy == pytest.approx(0.95)


def test_a_drop_above_the_budget_fails_and_names_the_check():
    parent, child, labels = _pair(1000, 30)  # 3 points worse
    verdict = gate_verdict(parent, child, labels, GateConfig(max_drop=1.0), params_kept=0.3, macs_kept=0.4)
    assert not verdict.passed and verdict.drop_points == pytest.approx(3.0)
    assert [c.name for c in verdict.failed] == ["accuracy_drop_points", "confidence_drop_below_bound"]
    assert verdict.failed[0].threshold == 1.0 and verdict.failed[0].value == pytest.approx(3.0)


def test_the_same_drop_passes_on_many_examples_and_fails_on_few():
    # 1.0-point drop, exactly at the budget: on 100 images one extra error is a coin flip
    few = gate_verdict(*_pair(100, 1), GateConfig(max_drop=1.0), params_kept=0.3, macs_kept=0.3)
    many = gate_verdict(*_pair(10_000, 100), GateConfig(max_drop=1.0), params_kept=0.3, macs_kept=0.3)
    assert few.drop_points == many.drop_points == pytest.approx(1.0)
    assert [c.name for c in few.failed] == ["confidence_drop_below_bound"]
    assert many.passed
    # P(Binomial(100, 0.01) <= 1) = 0.736: the bootstrap estimates it
    confidence = {c.name: c.value for c in few.checks}["confidence_drop_below_bound"]
    assert confidence == pytest.approx(0.736, abs=0.03)


def test_bootstrap_matches_resampling_examples():
    parent, child, labels = _pair(400, 12, seed=1)
    p_ok = np.argmax(parent, 1) == labels
    c_ok = np.argmax(child, 1) == labels
    drops = bootstrap_drops(p_ok, c_ok, 20_000, seed=0)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 400, size=(5000, 400))
    naive = 100 * (p_ok[idx].mean(1) - c_ok[idx].mean(1))
    assert drops.mean() == pytest.approx(naive.mean(), abs=0.03) == pytest.approx(3.0, abs=0.05)
    assert drops.std() == pytest.approx(naive.std(), rel=0.05)
    assert np.array_equal(drops, bootstrap_drops(p_ok, c_ok, 20_000, seed=0))  # seeded


def test_cost_and_latency_checks():
    parent, _, labels = _pair(500, 0)
    config = GateConfig(targets={"params_kept": 0.3})
    slow = gate_verdict(parent, parent, labels, config, params_kept=0.25, macs_kept=0.5, latency_ratio=1.2)
    assert [(c.name, c.value, c.threshold) for c in slow.failed] == [("latency_ratio", 1.2, 1.05)]
    noisy = gate_verdict(parent, parent, labels, config, params_kept=0.25, macs_kept=0.5, latency_ratio=1.03)
    assert noisy.passed  # within the timing tolerance
    big = gate_verdict(parent, parent, labels, config, params_kept=0.35, macs_kept=0.5)
    assert [c.name for c in big.failed] == ["params_kept"]
    unmeasured = {c.name: c for c in big.checks}["latency_ratio"]
    assert unmeasured.passed is None and "not measured" in unmeasured.note


def test_bad_inputs_are_refused():
    parent, child, labels = _pair(50, 0)
    with pytest.raises(DataError, match="agree"):
        gate_verdict(parent, child[:-1], labels, GateConfig(), params_kept=1, macs_kept=1)
    with pytest.raises(PlanError, match="unknown cost targets"):
        GateConfig(targets={"flops": 0.3})
    with pytest.raises(PlanError, match="confidence"):
        GateConfig(confidence=1.0)


def test_a_child_that_compresses_nothing_is_refused():
    """An empty factorization hands back a fine-tuned parent: never promoted as "compressed"."""
    parent, _, labels = _pair(500, 0)
    same = gate_verdict(parent, parent, labels, GateConfig(), params_kept=1.0, macs_kept=1.0)
    assert [(c.name, c.value) for c in same.failed] == [("compressed", 1.0)]
    macs_only = gate_verdict(parent, parent, labels, GateConfig(), params_kept=1.0, macs_kept=0.8)
    assert macs_only.passed  # either saving counts


def test_judge_accuracy_is_the_gates_accuracy_criterion():
    """The recovery search accepts on judge_accuracy; it must agree with the gate's two accuracy checks."""
    for n, extra in ((100, 1), (10_000, 100), (1000, 30), (360, 3)):
        parent, child, labels = _pair(n, extra)
        verdict = gate_verdict(parent, child, labels, GateConfig(max_drop=1.0), params_kept=0.3, macs_kept=0.3)
        judged = judge_accuracy(np.argmax(parent, 1) == labels, np.argmax(child, 1) == labels, GateConfig(max_drop=1.0))
        check = {c.name: c for c in verdict.checks}
        assert judged.drop_points == verdict.drop_points and judged.quantile == verdict.drop_bootstrap_q
        assert judged.confidence == check["confidence_drop_below_bound"].value and judged.bound == 1.5
        assert (judged.drop_ok, judged.confidence_ok) == (check["accuracy_drop_points"].passed,
                                                          check["confidence_drop_below_bound"].passed)
    assert not judged.passed and judged.drop_ok  # 3 of 360: 0.83 points, within budget, P(< 1.5) below 0.95


def test_judge_accuracy_refuses_flags_that_do_not_pair():
    with pytest.raises(DataError, match="same examples"):
        judge_accuracy(np.ones(5, bool), np.ones(4, bool), GateConfig())
    with pytest.raises(DataError, match="non-empty"):
        judge_accuracy(np.ones(0, bool), np.ones(0, bool), GateConfig())


def _flags(n: int, child_wrong: int, child_right: int = 0):
    """Parent right on the first n - child_right examples; the child wrong on child_wrong of those and right on
    the child_right the parent misses."""
    parent = np.ones(n, bool)
    parent[n - child_right:] = False
    child = parent.copy()
    child[:child_wrong] = False
    child[n - child_right:] = True
    return parent, child


def test_heldout_pass_probability_is_the_normal_prediction_of_the_heldout_drop():
    parent, child = _flags(360, 2)  # 0.56 points down on validation
    d = parent.astype(float) - child
    sd = 100 * np.sqrt(d.var() * (1 / 360 + 1 / 539))
    expected = 0.5 * (1 + math.erf((1.0 - 100 * d.mean()) / (sd * math.sqrt(2))))
    assert heldout_pass_probability(parent, child, 1.0, 539) == pytest.approx(expected, rel=1e-12)
    assert 0.80 < expected < 0.82  # the value the recovery test relies on


def test_heldout_pass_probability_behaves_like_a_probability_of_passing():
    at_budget = _flags(1000, 15, 5)  # drop exactly 1.0 point: a coin flip
    assert heldout_pass_probability(*at_budget, 1.0, 1000) == pytest.approx(0.5)
    values = [heldout_pass_probability(*_flags(1000, k), 1.0, 1000) for k in range(0, 26, 2)]
    assert values == sorted(values, reverse=True) and values[0] == 1.0 and values[-1] < 0.05
    # a larger held-out split measures the true drop more precisely, so a drop under the budget passes more surely
    small, large = (heldout_pass_probability(*_flags(1000, 6), 1.0, n) for n in (200, 20000))
    assert 0.5 < small < large < 1.0
    assert heldout_pass_probability(*_flags(1000, 0), 0.0, 50) == 1.0  # identical predictions: certain


def test_heldout_pass_probability_refuses_empty_flags():
    with pytest.raises(DataError, match="held-out size"):
        heldout_pass_probability(np.ones(0, bool), np.ones(0, bool), 1.0, 100)
    with pytest.raises(DataError, match="held-out size"):
        heldout_pass_probability(np.ones(5, bool), np.ones(5, bool), 1.0, 0)
