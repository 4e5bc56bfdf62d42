"""The goal rows and the goals table, from hand-made result rows."""

from bench.report.goals import goals
from tests.bench.report.rows import block, budget_row, drop_row


def test_the_sigma_goal_row_carries_its_blame():
    rows = [drop_row("sigma@macs50", 0.5, 0.5), drop_row("frobenius@macs50", 1.0, 0.5)]
    out = {g["goal"]: g for g in goals({"compare": {"m": {"rows": rows}}})}
    row = out["Σ ≥ 1 point better than Frobenius at equal ranks (no fine-tune, MACs ≤ 50 %)"]
    assert row["met"] is False and row["value"] == "m +0.50 pt"
    assert len(row["why"]) == 1 and "Frobenius itself drops +1.00 pt" in row["why"][0]
    assert row["short"] == "smallest gain m +0.50 pt, where Frobenius itself drops only +1.00 pt at 50 % MACs"


def test_the_compression_goals_are_stated_for_the_recovery_variant_too_and_only_where_it_ran():
    def row(variant, params, macs, drop, passed=True):
        return {**budget_row(variant, params, macs, None, drop, passed), "cost_by_type": {"Dense": {"macs": 1}}}

    tried = [{"max_drop_before_finetune": 8.0, "val_drop_after_finetune": 0.5, "kept": True}]
    compare = {"a": {"rows": [row("lrflow", 0.5, 0.6, 0.1), {**row("lrflow_recovery", 0.05, 0.2, 0.9), "finetune_s": 90}],
                     "extras": {"lrflow_recovery": {"recovery": tried}}},
               "b": {"rows": [row("lrflow", 0.7, 0.8, -0.2)]}}
    from bench.report.goals import compression_goals

    out = {g["goal"]: g for v, label in (("lrflow", "lrflow default"), ("lrflow_recovery", "lrflow with recovery budgets"))
           for g in compression_goals(compare, v, label)}
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
    (params_goal, _) = compression_goals(compare, "lrflow_pipeline", "pipeline")
    assert "rungs: 8 pt → validation drop +1.50, 4 pt → validation drop +0.20 **kept**" in params_goal["why"][0]
    assert params_goal["short"] == "rung kept on validation: a the 4 pt one after 2 fine-tune(s)"
    assert params_goal["value"] == "−90.0 %"


def test_the_goals_table_has_one_line_of_blame_and_the_details_follow_once():
    from bench.report.blame import block_blame, block_short
    from bench.report.goals import goals_section

    compare = {"a": {"timing": {"blocks": [block("Conv2D 3x3", "cp", 0.8, 100, 40), block("Dense", "svd", 0.5, 100, 10)]}}}
    blocks = block_blame(compare)
    assert blocks[1:] == ["Conv2D 3x3 → cp: block speedup 1.25× for MACs ratio 2.5× (1 blocks)",
                          "Dense → svd: block speedup 2.00× for MACs ratio 10.0× (1 blocks)"]
    assert block_short(compare) == ("factor chains' speedup over their dense layer 1.25–2.00× against MACs ratios "
                                    "2.5–10.0× (medians per layer type and method, batch 1)")
    rows = [{"goal": "first", "value": "1", "met": False, "why": blocks, "short": "s1"},
            {"goal": "second", "value": "2", "met": True, "why": blocks, "short": "s2"},
            {"goal": "third", "value": "3", "met": None, "why": [], "short": ""}]
    text = "\n".join(goals_section(rows))
    assert "| G1 | first | 1 | **not met** | s1 |" in text and "| G3 | third | 3 | n/a |  |" in text
    assert text.count("Dense → svd: block speedup") == 1  # G2 repeats G1's details: a pointer, not a copy
    assert "**G2. second**: 2, **met**.\n\n- as for G1." in text
    assert "**G3." not in text  # nothing to detail
