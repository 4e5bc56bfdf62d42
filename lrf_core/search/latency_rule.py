"""The per-block latency rule switch, checked alike by CompressConfig and the pipeline's parameters (no TensorFlow).

With the latency guard (or a latency target), step 3 of the search drops every candidate block
timed slower than its dense layer (METHODS.md §3 item 7), then the whole-model guard sends
layers back while the rebuilt child is slower than the parent
(:mod:`lrf_core.search.model_guard`). ``block_latency_rule=False`` keeps the first rule's
blocks as candidates, so the whole child is the only judge: one chain's extra call can be paid
for by another's saving. Measured on the Fashion-MNIST MobileNetV2-style model at batch 1
(bench/REPORT.md, ``lrflow_model_guard``): 83.5 % of the params kept instead of 100 %, and the
child still 1.05× faster than the parent; on the ResNet-style model both ways keep it dense.
"""

from __future__ import annotations

from lrf_core.errors import PlanError

__all__ = ["check_block_latency_rule"]


def check_block_latency_rule(block_latency_rule: bool, *, uses_latency: bool) -> None:
    """Refuse turning the rule off where nothing is timed (it would change nothing)."""
    if not block_latency_rule and not uses_latency:
        raise PlanError("Turning the per-block latency rule off only changes the latency guard or a latency target: "
                        "turn the latency guard on (--latency-guard, search.latency_guard), or leave the rule on.")
