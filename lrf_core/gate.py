"""The accuracy gate: may the compressed model replace its parent?

Compared on a held-out split that neither calibration nor fine-tuning saw. The gate
passes only when every check holds:

* ``accuracy_drop``: the observed top-1 drop ``100·(acc_parent − acc_child)`` is at most
  ``max_drop`` points (the papers' criterion);
* ``confidence``: **[beyond the papers]** a paired bootstrap over the held-out examples
  (resampling examples, each keeping its parent-correct and child-correct flags, so the
  two models' shared difficulty cancels) puts at least ``confidence`` (95 %) of its mass on
  drops below ``max_drop + tolerance``. A 0.9-point drop measured on 200 images passes the
  first check by luck as often as not; this one refuses it;
* ``compressed``: the child keeps less than all of the parent's params or MACs. A search
  that factorized nothing (every candidate too inaccurate, or slower than its dense layer
  on this machine) hands back a fine-tuned parent; promoting that as the compressed model
  would be a lie;
* cost checks: each fraction kept (params, MACs) at most its target, and the measured
  latency ratio child/parent at most ``max_latency_ratio + latency_tolerance`` (a
  compressed model must not be slower) when latency was measured. The tolerance absorbs
  timing noise: medians of interleaved runs on a shared CPU still move a few percent from
  run to run, and a gate that flips on noise is not a gate.

The verdict lists every check with its value and threshold, so a reader sees why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping, Optional

import numpy as np

from lrf_core.errors import DataError, PlanError

__all__ = ["AccuracyJudgement", "GateConfig", "GateCheck", "GateVerdict", "bootstrap_drops", "gate_verdict",
           "heldout_pass_probability", "judge_accuracy"]


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the gate (points are accuracy percentage points)."""

    max_drop: float = 1.0
    tolerance: float = 0.5
    confidence: float = 0.95
    bootstrap_samples: int = 2000
    max_latency_ratio: float = 1.0
    latency_tolerance: float = 0.05
    targets: Mapping[str, float] = field(default_factory=dict)  # e.g. {"params_kept": 0.3}
    seed: int = 0

    def __post_init__(self) -> None:
        if self.latency_tolerance < 0:
            raise PlanError(f"gate: latency_tolerance must be >= 0 (got {self.latency_tolerance}).")
        if self.max_drop < 0 or self.tolerance < 0:
            raise PlanError(f"gate: max_drop and tolerance are points >= 0 (got {self.max_drop}, {self.tolerance}).")
        if not 0.5 <= self.confidence < 1:
            raise PlanError(f"gate: confidence is a probability in [0.5, 1) (got {self.confidence}).")
        if self.bootstrap_samples < 100:
            raise PlanError(f"gate: bootstrap_samples must be >= 100 (got {self.bootstrap_samples}).")
        unknown = set(self.targets) - {"params_kept", "macs_kept"}
        if unknown:
            raise PlanError(f"gate: unknown cost targets {sorted(unknown)}; use params_kept and/or macs_kept.")


@dataclass(frozen=True)
class GateCheck:
    """One line of the verdict: ``value op threshold`` and whether it held."""

    name: str
    value: Optional[float]
    op: str
    threshold: float
    passed: Optional[bool]  # None: not measured, so not checked
    note: str = ""


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    examples: int
    parent_accuracy: float
    child_accuracy: float
    drop_points: float
    drop_bootstrap_q: float  # the `confidence` quantile of the bootstrap drop distribution
    checks: tuple[GateCheck, ...]

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if c.passed is False]

    def as_dict(self) -> dict:
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """The gate metrics by check name (what the Great Expectations gate suite validates)."""
        return {c.name: c.value for c in self.checks if c.value is not None}


def bootstrap_drops(parent_correct: np.ndarray, child_correct: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Paired bootstrap of the drop in points: ``samples`` resamples of the n examples.

    Shapes: ``parent_correct``, ``child_correct`` (n,) booleans → (samples,) floats. Only the
    per-example difference ``d_i = p_i − c_i ∈ {−1, 0, 1}`` matters, so a resample's drop is
    100·mean(d over the resampled indices); drawn as multinomial counts of the three values
    (exact, and O(samples) instead of O(samples·n)).
    """
    d = parent_correct.astype(np.int8) - child_correct.astype(np.int8)
    n = d.size
    probs = np.array([np.mean(d == -1), np.mean(d == 0), np.mean(d == 1)])
    counts = np.random.default_rng(seed).multinomial(n, probs, size=samples)
    return 100.0 * (counts[:, 2] - counts[:, 0]) / n


@dataclass(frozen=True)
class AccuracyJudgement:
    """The gate's two accuracy checks on one split: the observed drop and the bootstrap confidence.

    ``drop_points`` = 100·(acc_parent − acc_child); ``confidence`` = P(drop < ``bound``) under
    the paired bootstrap, ``bound`` = max_drop + tolerance; ``quantile`` = the bootstrap drop
    distribution's ``confidence`` quantile (config.confidence).
    """

    drop_points: float
    confidence: float
    bound: float
    quantile: float
    drop_ok: bool
    confidence_ok: bool

    @property
    def passed(self) -> bool:
        return self.drop_ok and self.confidence_ok


def judge_accuracy(parent_correct: np.ndarray, child_correct: np.ndarray, config: GateConfig) -> AccuracyJudgement:
    """The gate's accuracy criterion on per-example flags ``(n,)`` booleans of the same examples.

    One function for the gate (held-out split) and for the recovery search's acceptance of a
    fine-tuned child (validation split), so a child the search keeps has passed the test the
    gate will apply, on data the gate does not use.
    """
    parent_correct, child_correct = np.asarray(parent_correct, bool), np.asarray(child_correct, bool)
    if parent_correct.shape != child_correct.shape or parent_correct.ndim != 1 or parent_correct.size == 0:
        raise DataError(f"gate: per-example flags {parent_correct.shape}/{child_correct.shape} must be two non-empty "
                        "vectors over the same examples.")
    drop = 100.0 * (parent_correct.mean() - child_correct.mean())
    drops = bootstrap_drops(parent_correct, child_correct, config.bootstrap_samples, config.seed)
    bound = config.max_drop + config.tolerance
    confidence = float(np.mean(drops < bound))
    return AccuracyJudgement(float(drop), confidence, bound, float(np.quantile(drops, config.confidence)),
                             bool(drop <= config.max_drop + 1e-12), bool(confidence >= config.confidence))


def heldout_pass_probability(parent_correct: np.ndarray, child_correct: np.ndarray, max_drop: float,
                             heldout_examples: int) -> float:
    """P(the gate's point check passes on a held-out split of ``heldout_examples``), predicted from validation.

    ``parent_correct``, ``child_correct``: (n,) booleans on the validation split. With
    ``d_i = p_i − c_i`` and ``v = var(d_i)``, the validation drop ``D_v = 100·mean(d)`` estimates
    the true drop ``μ`` with variance ``100²·v/n``, and the held-out drop ``D_h`` an independent
    split measures has variance ``100²·v/n_h`` about ``μ``; so ``D_h − D_v ≈ N(0, 100²·v·(1/n + 1/n_h))``
    and ``P(D_h ≤ max_drop) = Φ((max_drop − D_v) / (100·sqrt(v·(1/n + 1/n_h))))``.

    Why: a recovery child kept at a validation drop just under ``max_drop`` fails the held-out
    check about half the time (fashion_vgg, converged parent: 0.74 on validation, 1.14 on the
    test split), and the bootstrap confidence at ``max_drop + tolerance`` does not see that.
    Only the held-out split's size is used, never its labels.
    """
    d = np.asarray(parent_correct, np.float64) - np.asarray(child_correct, np.float64)
    if d.ndim != 1 or d.size == 0 or heldout_examples < 1:
        raise DataError(f"gate: need validation flags (n,) with n > 0 and a held-out size >= 1 "
                        f"(got {d.shape}, {heldout_examples}).")
    drop = 100.0 * d.mean()
    sd = 100.0 * math.sqrt(d.var() * (1.0 / d.size + 1.0 / heldout_examples))
    if sd == 0.0:  # identical predictions on every validation example: no spread to predict from
        return float(drop <= max_drop + 1e-12)
    return 0.5 * math.erfc(-(max_drop - drop) / (sd * math.sqrt(2.0)))


def _check(name: str, value: Optional[float], threshold: float, note: str = "") -> GateCheck:
    passed = None if value is None else bool(value <= threshold + 1e-12)
    return GateCheck(name, value, "≤", threshold, passed, note)


def gate_verdict(
    parent_out: np.ndarray,
    child_out: np.ndarray,
    labels: np.ndarray,
    config: GateConfig,
    *,
    params_kept: float,
    macs_kept: float,
    latency_ratio: Optional[float] = None,
) -> GateVerdict:
    """Decide the gate from both models' outputs on the held-out split.

    ``parent_out``, ``child_out``: (n, classes) logits or probabilities; ``labels``: (n,).
    """
    labels = np.asarray(labels)
    if parent_out.shape != child_out.shape or parent_out.shape[0] != labels.shape[0] or labels.size == 0:
        raise DataError(f"gate: outputs {parent_out.shape}/{child_out.shape} and labels {labels.shape} must be "
                        "non-empty and agree on the number of held-out examples.")
    parent_correct = np.argmax(parent_out, axis=-1) == labels
    child_correct = np.argmax(child_out, axis=-1) == labels
    accuracy = judge_accuracy(parent_correct, child_correct, config)
    checks = [
        GateCheck("accuracy_drop_points", accuracy.drop_points, "≤", config.max_drop, accuracy.drop_ok),
        GateCheck("confidence_drop_below_bound", accuracy.confidence, "≥", config.confidence, accuracy.confidence_ok,
                  f"P(drop < {accuracy.bound:g} points), paired bootstrap"),
        GateCheck("compressed", min(params_kept, macs_kept), "<", 1.0, bool(min(params_kept, macs_kept) < 1.0),
                  "min(params, MACs) kept: the child must be cheaper"),
        *(_check(name, value, config.targets[name]) for name, value in
          (("params_kept", params_kept), ("macs_kept", macs_kept)) if name in config.targets),
        _check("latency_ratio", latency_ratio, config.max_latency_ratio + config.latency_tolerance,
               f"timing tolerance {config.latency_tolerance:g}" if latency_ratio is not None else "latency not measured"),
    ]
    return GateVerdict(
        passed=all(c.passed is not False for c in checks),
        examples=int(labels.size),
        parent_accuracy=float(parent_correct.mean()),
        child_accuracy=float(child_correct.mean()),
        drop_points=accuracy.drop_points,
        drop_bootstrap_q=accuracy.quantile,
        checks=tuple(checks),
    )
