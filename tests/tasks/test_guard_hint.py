"""The gate's hint when the latency guard left nothing factorized (tasks.steps.guard_hint: pure, no TF)."""

from __future__ import annotations

from tasks.steps import guard_hint

DENSE = [{"layer": "a", "status": "kept"}, {"layer": "b", "status": "kept"}]


def test_a_guard_that_left_every_layer_dense_says_why_and_what_to_set():
    report = {"layers": DENSE, "candidate_counts": {"a": {"dropped_latency": 5}, "b": {"dropped_latency": 2}},
              "latency_guard": {"reverted": ["a"]}}
    hint = guard_hint(report, latency_batch=1)
    assert "batch 1" in hint and "dropped 7 candidate" in hint and "sent 1 layer(s) back" in hint
    assert "gate.latency_batch" in hint and "search.latency_guard: false" in hint
    assert "search.block_latency_rule: false" in hint  # blocks were dropped one by one: the rule can be relaxed
    reverted_only = guard_hint({**report, "candidate_counts": {"a": {"dropped_latency": 0}}}, latency_batch=1)
    assert "sent 1 layer(s) back" in reverted_only and "block_latency_rule" not in reverted_only


def test_no_hint_when_something_was_factorized_or_the_guard_played_no_part():
    guarded = {"candidate_counts": {"a": {"dropped_latency": 5}}, "latency_guard": {"reverted": ["b"]}}
    assert guard_hint({**guarded, "layers": [*DENSE, {"layer": "c", "status": "factorized"}]}, 1) is None
    assert guard_hint({"layers": DENSE, "candidate_counts": {"a": {"dropped_latency": 0}}}, 1) is None  # the budget
    assert guard_hint({"layers": DENSE}, 64) is None
