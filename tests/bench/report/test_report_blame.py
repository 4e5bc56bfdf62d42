"""What the report names as responsible for a missed goal, computed from hand-made result rows."""

from bench.report.blame import block_medians, sigma_blame, sigma_gains, slow_blame, slow_short
from tests.bench.report.rows import block, drop_row


def test_sigma_gain_per_cut_is_frobenius_drop_minus_sigma_drop_sorted_by_macs_kept():
    compare = {"m": {"rows": [drop_row("sigma@macs70", 0.5, 0.7), drop_row("frobenius@macs70", 0.6, 0.7),
                              drop_row("sigma@macs30", 1.0, 0.3), drop_row("frobenius@macs30", 4.0, 0.3),
                              drop_row("sigma@macs50", 0.4, 0.49), drop_row("frobenius@macs50", 1.2, 0.49),
                              drop_row("sigma@macs90", 0.1, 0.9), drop_row("frobenius@macs90", 0.0, 0.9, status="failed")]}}
    cuts = sigma_gains(compare)["m"]
    assert [k for k, _, _ in cuts] == [0.3, 0.49, 0.7]  # the cut whose Frobenius row failed is left out
    assert [round(g, 6) for _, g, _ in cuts] == [3.0, 0.8, 0.1]
    (text,) = sigma_blame(compare)  # one part per model
    assert text.startswith("m: Σ gains ")
    assert "+3.00 / +0.80 / +0.10 pt at MACs kept 30 / 49 / 70 %" in text
    assert "at 49 % Frobenius itself drops +1.20 pt" in text


def test_block_medians_group_by_layer_type_and_method():
    compare = {"a": {"timing": {"blocks": [block("Conv2D 3x3", "cp", 1.25), block("Conv2D 3x3", "cp", 0.8, 100, 25),
                                           block("Conv2D 3x3", "cp", 1.0, 100, 20)]}},
               "b": {"timing": {"blocks": [block("Dense", "svd", 0.5, macs_after=None)]}}}
    medians = block_medians(compare)
    assert set(medians) == {"Conv2D 3x3 → cp", "Dense → svd"}
    speed, ratio, n = medians["Conv2D 3x3 → cp"]
    assert (speed, ratio, n) == (1.0, 4.0, 3)  # speedups 0.8, 1.0, 1.25; MACs ratios 2, 4, 5
    assert medians["Dense → svd"] == (2.0, None, 1)  # no MACs after: no ratio, still a speedup


def test_slow_blame_names_only_chains_slower_than_their_dense_layer_and_the_noise():
    timing = {"blocks": [block("Conv2D 3x3", "cp", 1.1), block("Dense", "svd", 0.5, variant="uniform_conv_svd")],
              "tf": {"1": {"parent": {"median_s": 1.0}, "control": {"median_s": 0.98}}}}
    noise, chains = slow_blame({"m": {"rows": [], "timing": timing}}, "speedup_tf_b1")  # no guarded rows: 2 parts
    assert noise == "timing noise (same-structure control vs parent, ideally 1.00): m control/parent 0.98"
    assert "Conv2D 3x3 → cp 0.91×" in chains and "Dense → svd" not in chains
    assert "every timed child" in chains  # blocks from more than the lrflow child
    assert slow_short({"m": {"rows": [], "timing": timing}}, "speedup_tf_b1") == (
        "timing noise: control/parent 0.98–0.98; chains slower than their dense layer: Conv2D 3x3 → cp 0.91×")


def test_budget_blame_names_the_chosen_estimate_and_the_closest_cheaper_refused_point():
    from bench.report.blame import budget_blame

    def point(params, macs, est, ucb, examples=8048):
        return {"params_kept": params, "macs_kept": macs, "est_drop": est, "est_drop_ucb95": ucb, "examples": examples}

    path = [point(0.01, 0.01, 80.0, 82.0, 2048), point(0.27, 0.49, 0.58, 0.85), point(0.18, 0.48, 0.84, 1.14),
            point(0.06, 0.14, 11.3, 12.7, 2048)]
    c = {"data": {"val": 6000},
         "rows": [{"variant": "lrflow", "params_kept": 0.27, "macs_kept": 0.487, "test_drop_no_ft": 0.5}],
         "extras": {"lrflow": {"lambda_path": path}}}
    text = budget_blame(c)
    assert "est drop +0.58 pt, 95 % bound +0.85 on 8048 validation + training images (test drop without fine-tune +0.50)" in text
    assert "closest cheaper point (params 18 %, MACs 48 %) refused at bound +1.14" in text
    assert budget_blame({"rows": c["rows"], "extras": {}}) == ""  # no λ path recorded: nothing claimed
    # λ paths written before the estimation set was recorded: the bound without an image count, not a KeyError
    for q in path:
        del q["examples"]
    assert "95 % bound +0.85 (test drop without fine-tune +0.50)" in budget_blame(c)


def test_guard_summary_reports_the_guarded_childs_speedup_and_the_layers_sent_back():
    from bench.report.blame import guard_summary

    c = {"rows": [{"variant": "lrflow_guarded", "status": "ok", "macs_kept": 0.9, "latency": {"speedup_tf_b1": 1.04}},
                  {"variant": "lrflow", "status": "ok", "macs_kept": 0.5}],
         "extras": {"lrflow_guarded": {"latency_guard": {"reverted": ["conv1", "conv2"], "ratio": 0.97}}}}
    (text,) = guard_summary({"m": c}, "speedup_tf_b1")
    assert text.startswith("with the latency guard on (lrflow_guarded): m ×1.04 at MACs kept 90.0 % (unguarded "
                           "lrflow 50.0 %")
    assert "then 2 layer(s) sent back by the whole-model check, child ÷ parent time in the search 0.97)" in text
    assert "lrflow_model_guard" not in text  # not run: nothing claimed
    assert guard_summary({"m": {"rows": []}}, "speedup_tf_b1") == []

    c["rows"].append({"variant": "lrflow_model_guard", "status": "ok", "macs_kept": 0.6, "latency": {"speedup_tf_b1": 1.1}})
    c["extras"]["lrflow_model_guard"] = {"latency_guard": {"reverted": ["conv1"], "ratio": 0.95,
                                                           "steps": [{"factorized": 3, "ratio": 1.29}]}}
    guarded, model_only = guard_summary({"m": c}, "speedup_tf_b1")
    assert guarded == text
    assert model_only == ("with the latency guard on (lrflow_model_guard): m ×1.10 at MACs kept 60.0 % (unguarded lrflow "
                          "50.0 %: no per-block rule, 1 layer(s) sent back by the whole-model check (chosen child with 3 "
                          "layer(s) factorized timed at 1.29), child ÷ parent time in the search 0.95)")
