"""The report's "responsible" column is computed from the result JSON alone: check it on hand-made rows."""

import pytest

from bench.report import _block_medians, _sigma_blame, _sigma_gains, _slow_blame, _slow_short, goals


def _row(variant, drop_no_ft, macs_kept, status="ok"):
    return {"variant": variant, "status": status, "test_drop_no_ft": drop_no_ft, "macs_kept": macs_kept}


def _block(kind, method, chain_over_dense, macs_before=100, macs_after=50, variant="lrflow"):
    return {"type": kind, "method": method, "chain_over_dense": chain_over_dense, "macs_before": macs_before,
            "macs_after": macs_after, "variant": variant}


def test_sigma_gain_per_cut_is_frobenius_drop_minus_sigma_drop_sorted_by_macs_kept():
    compare = {"m": {"rows": [_row("sigma@macs70", 0.5, 0.7), _row("frobenius@macs70", 0.6, 0.7),
                              _row("sigma@macs30", 1.0, 0.3), _row("frobenius@macs30", 4.0, 0.3),
                              _row("sigma@macs50", 0.4, 0.49), _row("frobenius@macs50", 1.2, 0.49),
                              _row("sigma@macs90", 0.1, 0.9), _row("frobenius@macs90", 0.0, 0.9, status="failed")]}}
    cuts = _sigma_gains(compare)["m"]
    assert [k for k, _, _ in cuts] == [0.3, 0.49, 0.7]  # the cut whose Frobenius row failed is left out
    assert [round(g, 6) for _, g, _ in cuts] == [3.0, 0.8, 0.1]
    (text,) = _sigma_blame(compare)  # one part per model
    assert text.startswith("m: Σ gains ")
    assert "+3.00 / +0.80 / +0.10 pt at MACs kept 30 / 49 / 70 %" in text
    assert "at 49 % Frobenius itself drops +1.20 pt" in text


def test_block_medians_group_by_layer_type_and_method():
    compare = {"a": {"timing": {"blocks": [_block("Conv2D 3x3", "cp", 1.25), _block("Conv2D 3x3", "cp", 0.8, 100, 25),
                                           _block("Conv2D 3x3", "cp", 1.0, 100, 20)]}},
               "b": {"timing": {"blocks": [_block("Dense", "svd", 0.5, macs_after=None)]}}}
    medians = _block_medians(compare)
    assert set(medians) == {"Conv2D 3x3 → cp", "Dense → svd"}
    speed, ratio, n = medians["Conv2D 3x3 → cp"]
    assert (speed, ratio, n) == (1.0, 4.0, 3)  # speedups 0.8, 1.0, 1.25; MACs ratios 2, 4, 5
    assert medians["Dense → svd"] == (2.0, None, 1)  # no MACs after: no ratio, still a speedup


def test_slow_blame_names_only_chains_slower_than_their_dense_layer_and_the_noise():
    timing = {"blocks": [_block("Conv2D 3x3", "cp", 1.1), _block("Dense", "svd", 0.5, variant="uniform_conv_svd")],
              "tf": {"1": {"parent": {"median_s": 1.0}, "control": {"median_s": 0.98}}}}
    noise, chains = _slow_blame({"m": {"rows": [], "timing": timing}}, "speedup_tf_b1")  # no guarded rows: 2 parts
    assert noise == "timing noise (same-structure control vs parent, ideally 1.00): m control/parent 0.98"
    assert "Conv2D 3x3 → cp 0.91×" in chains and "Dense → svd" not in chains
    assert "every timed child" in chains  # blocks from more than the lrflow child
    assert _slow_short({"m": {"rows": [], "timing": timing}}, "speedup_tf_b1") == (
        "timing noise: control/parent 0.98–0.98; chains slower than their dense layer: Conv2D 3x3 → cp 0.91×")


def test_the_sigma_goal_row_carries_its_blame():
    rows = [_row("sigma@macs50", 0.5, 0.5), _row("frobenius@macs50", 1.0, 0.5)]
    out = {g["goal"]: g for g in goals({"compare": {"m": {"rows": rows}}})}
    row = out["Σ ≥ 1 point better than Frobenius at equal ranks (no fine-tune, MACs ≤ 50 %)"]
    assert row["met"] is False and row["value"] == "m +0.50 pt"
    assert len(row["why"]) == 1 and "Frobenius itself drops +1.00 pt" in row["why"][0]
    assert row["short"] == "smallest gain m +0.50 pt, where Frobenius itself drops only +1.00 pt at 50 % MACs"


def test_budget_blame_names_the_chosen_estimate_and_the_closest_cheaper_refused_point():
    from bench.report import _budget_blame

    def point(params, macs, est, ucb, examples=8048):
        return {"params_kept": params, "macs_kept": macs, "est_drop": est, "est_drop_ucb95": ucb, "examples": examples}

    path = [point(0.01, 0.01, 80.0, 82.0, 2048), point(0.27, 0.49, 0.58, 0.85), point(0.18, 0.48, 0.84, 1.14),
            point(0.06, 0.14, 11.3, 12.7, 2048)]
    c = {"data": {"val": 6000},
         "rows": [{"variant": "lrflow", "params_kept": 0.27, "macs_kept": 0.487, "test_drop_no_ft": 0.5}],
         "extras": {"lrflow": {"lambda_path": path}}}
    text = _budget_blame(c)
    assert "est drop +0.58 pt, 95 % bound +0.85 on 8048 validation + training images (test drop without fine-tune +0.50)" in text
    assert "closest cheaper point (params 18 %, MACs 48 %) refused at bound +1.14" in text
    assert _budget_blame({"rows": c["rows"], "extras": {}}) == ""  # no λ path recorded: nothing claimed


def test_guard_summary_reports_the_guarded_childs_speedup_and_the_layers_sent_back():
    from bench.report import _guard_summary

    c = {"rows": [{"variant": "lrflow_guarded", "status": "ok", "macs_kept": 0.9, "latency": {"speedup_tf_b1": 1.04}},
                  {"variant": "lrflow", "status": "ok", "macs_kept": 0.5}],
         "extras": {"lrflow_guarded": {"latency_guard": {"reverted": ["conv1", "conv2"], "ratio": 0.97}}}}
    (text,) = _guard_summary({"m": c}, "speedup_tf_b1")
    assert text.startswith("with the latency guard on (lrflow_guarded): m ×1.04 at MACs kept 90.0 % (unguarded "
                           "lrflow 50.0 %")
    assert "then 2 layer(s) sent back by the whole-model check, child ÷ parent time in the search 0.97)" in text
    assert "lrflow_model_guard" not in text  # not run: nothing claimed
    assert _guard_summary({"m": {"rows": []}}, "speedup_tf_b1") == []

    c["rows"].append({"variant": "lrflow_model_guard", "status": "ok", "macs_kept": 0.6, "latency": {"speedup_tf_b1": 1.1}})
    c["extras"]["lrflow_model_guard"] = {"latency_guard": {"reverted": ["conv1"], "ratio": 0.95,
                                                           "steps": [{"factorized": 3, "ratio": 1.29}]}}
    guarded, model_only = _guard_summary({"m": c}, "speedup_tf_b1")
    assert guarded == text
    assert model_only == ("with the latency guard on (lrflow_model_guard): m ×1.10 at MACs kept 60.0 % (unguarded lrflow "
                          "50.0 %: no per-block rule, 1 layer(s) sent back by the whole-model check (chosen child with 3 "
                          "layer(s) factorized timed at 1.29), child ÷ parent time in the search 0.95)")


def _budget_row(variant, params, macs, drop_no_ft, drop, passed, status="ok"):
    return {"variant": variant, "status": status, "params_kept": params, "macs_kept": macs, "est_drop_ucb95": None,
            "test_drop_no_ft": drop_no_ft, "test_drop": drop, "test_accuracy": 0.9 - drop / 100, "gate_passed": passed,
            "finetuned": True}


def test_budget_section_orders_budgets_and_names_the_largest_that_still_passes_the_gate():
    from bench.harness import budget_of, budget_variant
    from bench.report import _budget_section, budget_points

    assert budget_variant(2.0) == "lrflow_budget2" and budget_of("lrflow_budget2") == 2.0
    assert budget_of("lrflow_guarded") is None
    rows = [_budget_row("lrflow_budget4", 0.2, 0.3, 5.0, 1.5, False), _budget_row("lrflow", 0.6, 0.7, 0.2, -0.5, True),
            _budget_row("lrflow_budget2", 0.4, 0.5, 1.8, 0.4, True), _budget_row("energy95_svd", 0.5, 0.5, 3.0, 0.2, True)]
    compare = {"m": {"gate_points": 1.0, "rows": rows, "parent_extra_epochs": {"test_accuracy": 0.91}},
               "alone": {"gate_points": 1.0, "rows": rows[1:2]}}  # the default alone: no budget comparison
    points = budget_points(compare)
    assert list(points) == ["m"]
    assert [(b, r["variant"]) for b, r in points["m"]] == [(1.0, "lrflow"), (2.0, "lrflow_budget2"), (4.0, "lrflow_budget4")]
    text = "\n".join(_budget_section(compare))
    assert "| m | 2 |  | 40.0 % | 50.0 % | — | +1.80 | +0.40 | — | +1.40 | pass |" in text  # vs control: 91 − 89.6
    assert "Validation vs test" not in text  # no validation accuracies recorded: no gap line
    assert "Largest budget whose child still passes the gate: m: 2 point(s) (params 40.0 %, MACs 50.0 % kept, " \
           "drop after fine-tune +0.40)." in text
    assert _budget_section({"alone": compare["alone"]}) == []


def test_the_recovery_line_lists_every_attempt_and_the_kept_one():
    from bench.report import _budget_section

    rows = [_budget_row("lrflow", 0.6, 0.7, 0.2, -0.5, True), _budget_row("lrflow_budget4", 0.2, 0.3, 5.0, 0.8, True),
            {**_budget_row("lrflow_recovery", 0.2, 0.3, 5.0, 0.8, True), "finetune_s": 300.0}]
    tried = [{"max_drop_before_finetune": 8.0, "val_drop_after_finetune": 1.7, "kept": False},
             {"max_drop_before_finetune": 4.0, "val_drop_after_finetune": 0.4, "kept": True}]
    compare = {"m": {"gate_points": 1.0, "rows": rows, "extras": {"lrflow_recovery": {"recovery": tried}}}}
    text = "\n".join(_budget_section(compare))
    assert ("- m: 8 pt → validation drop +1.70, 4 pt → validation drop +0.40 **kept**; test drop +0.80 (pass), "
            "params 20.0 %, MACs 30.0 % kept, 2 fine-tune(s) in 300 s") in text
    # with the drops through each fine-tune (recorded since the per-epoch attempts): how early each fate showed
    tried[0]["val_drop_by_epoch"] = [6.5, 2.25, 1.7]
    text = "\n".join(_budget_section(compare))
    assert "8 pt → validation drop +1.70 (+6.50 untuned → +2.25 → +1.70 by epoch), 4 pt → validation drop +0.40 **kept**" in text


def test_the_compression_goals_are_stated_for_the_recovery_variant_too_and_only_where_it_ran():
    def row(variant, params, macs, drop, passed=True):
        return {**_budget_row(variant, params, macs, None, drop, passed), "cost_by_type": {"Dense": {"macs": 1}}}

    tried = [{"max_drop_before_finetune": 8.0, "val_drop_after_finetune": 0.5, "kept": True}]
    compare = {"a": {"rows": [row("lrflow", 0.5, 0.6, 0.1), {**row("lrflow_recovery", 0.05, 0.2, 0.9), "finetune_s": 90}],
                     "extras": {"lrflow_recovery": {"recovery": tried}}},
               "b": {"rows": [row("lrflow", 0.7, 0.8, -0.2)]}}
    from bench.report import _compression_goals

    out = {g["goal"]: g for v, label in (("lrflow", "lrflow default"), ("lrflow_recovery", "lrflow with recovery budgets"))
           for g in _compression_goals(compare, v, label)}
    assert out["params −90 % avg at ≤ 1.0 point test drop (lrflow default)"]["value"] == "−40.0 %"
    recovery = out["params −90 % avg at ≤ 1.0 point test drop (lrflow with recovery budgets) over a"]
    assert recovery["value"] == "−95.0 %" and recovery["met"] is True
    assert recovery["why"][0].endswith("; rungs: 8 pt → validation drop +0.50 **kept**; test drop +0.90 (pass), "
                                       "params 5.0 %, MACs 20.0 % kept, 1 fine-tune(s) in 90 s")
    assert recovery["short"] == "rung kept on validation: a the 8 pt one after 1 fine-tune(s)"
    assert out["MACs −70 % avg at ≤ 1.0 point test drop (lrflow with recovery budgets) over a"]["met"] is True
    # each recovery variant is blamed with its own attempts
    guarded = [{"max_drop_before_finetune": 8.0, "val_drop_after_finetune": 1.5, "kept": False},
               {"max_drop_before_finetune": 4.0, "val_drop_after_finetune": 0.2, "kept": True}]
    compare["a"]["rows"].append({**row("lrflow_pipeline", 0.1, 0.3, 0.4), "finetune_s": 150})
    compare["a"]["extras"]["lrflow_pipeline"] = {"recovery": guarded}
    (params_goal, _) = _compression_goals(compare, "lrflow_pipeline", "pipeline")
    assert "rungs: 8 pt → validation drop +1.50, 4 pt → validation drop +0.20 **kept**" in params_goal["why"][0]
    assert params_goal["short"] == "rung kept on validation: a the 4 pt one after 2 fine-tune(s)"
    assert params_goal["value"] == "−90.0 %"


def test_the_accepted_bound_is_matched_by_cost_not_by_lambda():
    from bench.harness import accepted_bound

    path = [{"lambda": 1e-2, "params_kept": 0.4, "est_drop_ucb95": 0.9}, {"lambda": 1e-1, "params_kept": 0.2, "est_drop_ucb95": 3.0},
            {"lambda": 2e-2, "params_kept": 0.4, "est_drop_ucb95": 0.9}]
    assert accepted_bound(path, 0.4) == 0.9 and accepted_bound(path, 0.2) == 3.0 and accepted_bound(path, 0.3) is None


def test_the_validation_gap_after_the_fine_tune_is_reported_per_model():
    from bench.report import _budget_section, validation_gap

    def row(variant, drop, val_accuracy, finetuned=True, status="ok"):
        return {**_budget_row(variant, 0.2, 0.3, 1.0, drop, True, status), "val_accuracy": val_accuracy,
                "finetuned": finetuned}

    rows = [row("lrflow", 0.4, 0.935),             # validation 0.70 down, test 0.40: gap +0.30
            row("lrflow_budget4", 0.6, 0.928),     # 1.40 vs 0.60: +0.80
            row("sigma@macs50", 0.3, 0.930, finetuned=False),  # not fine-tuned: not counted
            row("lrflow_budget2", 0.5, None),      # no validation accuracy: not counted
            row("dprp", 9.0, 0.5, status="error")]
    compare = {"m": {"gate_points": 1.0, "rows": rows, "parent": {"val_accuracy": 0.942}}}
    (gap, n), = validation_gap(compare).values()
    assert n == 2 and gap == pytest.approx(0.55)
    text = "\n".join(_budget_section(compare))
    assert "mean (validation drop − test drop): m +0.55 pt over 2 children." in text
    assert "| m | 4 |  | 20.0 % | 30.0 % | — | +1.00 | +0.60 | +1.40 | — | pass |" in text


def test_the_goals_table_has_one_line_of_blame_and_the_details_follow_once():
    from bench.report import _block_blame, _block_short, _goals_section

    compare = {"a": {"timing": {"blocks": [_block("Conv2D 3x3", "cp", 0.8, 100, 40), _block("Dense", "svd", 0.5, 100, 10)]}}}
    blocks = _block_blame(compare)
    assert blocks[1:] == ["Conv2D 3x3 → cp: block speedup 1.25× for MACs ratio 2.5× (1 blocks)",
                          "Dense → svd: block speedup 2.00× for MACs ratio 10.0× (1 blocks)"]
    assert _block_short(compare) == ("factor chains' speedup over their dense layer 1.25–2.00× against MACs ratios "
                                     "2.5–10.0× (medians per layer type and method, batch 1)")
    rows = [{"goal": "first", "value": "1", "met": False, "why": blocks, "short": "s1"},
            {"goal": "second", "value": "2", "met": True, "why": blocks, "short": "s2"},
            {"goal": "third", "value": "3", "met": None, "why": [], "short": ""}]
    text = "\n".join(_goals_section(rows))
    assert "| G1 | first | 1 | **not met** | s1 |" in text and "| G3 | third | 3 | n/a |  |" in text
    assert text.count("Dense → svd: block speedup") == 1  # G2 repeats G1's details: a pointer, not a copy
    assert "**G2. second**: 2, **met**.\n\n- as for G1." in text
    assert "**G3." not in text  # nothing to detail


def test_the_early_abandon_simulation_counts_saved_epochs_and_kept_rungs_it_would_lose():
    from bench.report import _abandon_lines, early_abandon

    def attempt(drops, kept, accept=1.0):
        return {"val_drop_by_epoch": drops, "kept": kept, "accept_max_drop": accept, "max_drop_before_finetune": 8.0,
                "val_drop_after_finetune": drops[-1]}

    tried = [attempt([6.0, 2.4, 2.0, 1.8], False),   # refused; 2.4 after epoch 1: cut at any margin ≤ 1.4
             attempt([3.0, 1.6, 1.1, 0.9], True),    # kept: cut at margin 0 and 0.5 (1.6 > 1.5), not at 1.0
             attempt([1.0, 0.5, 0.4, 0.3], False)]   # the last rung: never cut
    assert early_abandon(tried, 0.0) == {"epochs": 9, "saved": 4, "abandoned": 2, "lost": 1}
    assert early_abandon(tried, 1.0) == {"epochs": 9, "saved": 2, "abandoned": 1, "lost": 0}
    assert early_abandon(tried, 2.0)["abandoned"] == 0
    assert early_abandon([{"kept": False, "accept_max_drop": 1.0}, attempt([1.0, 0.5], True)], 0.0)["epochs"] == 1
    compare = {"m": {"extras": {"lrflow_recovery": {"recovery": tried}, "lrflow_pipeline": {"recovery": [{"kept": True}]}}}}
    (line, _) = _abandon_lines(compare)
    assert "per-epoch drops of m lrflow_recovery)" in line  # the pipeline's attempts have no per-epoch drops
    assert "margin +0.0 pt: 4 of 9 fine-tune epochs saved, 2 rung(s) cut short, 1 of them the kept one" in line
    assert "margin +1.0 pt: 2 of 9 fine-tune epochs saved, 1 rung(s) cut short, 0 of them the kept one" in line
    assert _abandon_lines({"m": {"extras": {}}}) == []
