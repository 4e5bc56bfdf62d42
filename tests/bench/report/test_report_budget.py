"""The accuracy-budget section: budgets side by side, recovery rungs, the validation gap, early abandon."""

import pytest

from tests.bench.report.rows import budget_row


def test_budget_section_orders_budgets_and_names_the_largest_that_still_passes_the_gate():
    from bench.harness import budget_of, budget_variant
    from bench.report.budget import budget_points, budget_section

    assert budget_variant(2.0) == "lrflow_budget2" and budget_of("lrflow_budget2") == 2.0
    assert budget_of("lrflow_guarded") is None
    rows = [budget_row("lrflow_budget4", 0.2, 0.3, 5.0, 1.5, False), budget_row("lrflow", 0.6, 0.7, 0.2, -0.5, True),
            budget_row("lrflow_budget2", 0.4, 0.5, 1.8, 0.4, True), budget_row("energy95_svd", 0.5, 0.5, 3.0, 0.2, True)]
    compare = {"m": {"gate_points": 1.0, "rows": rows, "parent_extra_epochs": {"test_accuracy": 0.91}},
               "alone": {"gate_points": 1.0, "rows": rows[1:2]}}  # the default alone: no budget comparison
    points = budget_points(compare)
    assert list(points) == ["m"]
    assert [(b, r["variant"]) for b, r in points["m"]] == [(1.0, "lrflow"), (2.0, "lrflow_budget2"), (4.0, "lrflow_budget4")]
    text = "\n".join(budget_section(compare))
    assert "| m | 2 |  | 40.0 % | 50.0 % | — | +1.80 | +0.40 | — | +1.40 | pass |" in text  # vs control: 91 − 89.6
    assert "Validation vs test" not in text  # no validation accuracies recorded: no gap line
    assert "Largest budget whose child still passes the gate: m: 2 point(s) (params 40.0 %, MACs 50.0 % kept, " \
           "drop after fine-tune +0.40)." in text
    assert budget_section({"alone": compare["alone"]}) == []


def test_the_recovery_line_lists_every_attempt_and_the_kept_one():
    from bench.report.budget import budget_section

    rows = [budget_row("lrflow", 0.6, 0.7, 0.2, -0.5, True), budget_row("lrflow_budget4", 0.2, 0.3, 5.0, 0.8, True),
            {**budget_row("lrflow_recovery", 0.2, 0.3, 5.0, 0.8, True), "finetune_s": 300.0}]
    tried = [{"max_drop_before_finetune": 8.0, "val_drop_after_finetune": 1.7, "kept": False},
             {"max_drop_before_finetune": 4.0, "val_drop_after_finetune": 0.4, "kept": True}]
    compare = {"m": {"gate_points": 1.0, "rows": rows, "extras": {"lrflow_recovery": {"recovery": tried}}}}
    text = "\n".join(budget_section(compare))
    assert ("- m: 8 pt → validation drop +1.70, 4 pt → validation drop +0.40 **kept**; test drop +0.80 (pass), "
            "params 20.0 %, MACs 30.0 % kept, 2 fine-tune(s) in 300 s") in text
    # with the drops through each fine-tune (recorded since the per-epoch attempts): how early each fate showed
    tried[0]["val_drop_by_epoch"] = [6.5, 2.25, 1.7]
    text = "\n".join(budget_section(compare))
    assert "8 pt → validation drop +1.70 (+6.50 untuned → +2.25 → +1.70 by epoch), 4 pt → validation drop +0.40 **kept**" in text


def test_the_accepted_bound_is_matched_by_cost_not_by_lambda():
    from bench.harness import accepted_bound

    path = [{"lambda": 1e-2, "params_kept": 0.4, "est_drop_ucb95": 0.9}, {"lambda": 1e-1, "params_kept": 0.2, "est_drop_ucb95": 3.0},
            {"lambda": 2e-2, "params_kept": 0.4, "est_drop_ucb95": 0.9}]
    assert accepted_bound(path, 0.4) == 0.9 and accepted_bound(path, 0.2) == 3.0 and accepted_bound(path, 0.3) is None


def test_the_validation_gap_after_the_fine_tune_is_reported_per_model():
    from bench.report.budget import budget_section, validation_gap

    def row(variant, drop, val_accuracy, finetuned=True, status="ok"):
        return {**budget_row(variant, 0.2, 0.3, 1.0, drop, True, status), "val_accuracy": val_accuracy,
                "finetuned": finetuned}

    rows = [row("lrflow", 0.4, 0.935),             # validation 0.70 down, test 0.40: gap +0.30
            row("lrflow_budget4", 0.6, 0.928),     # 1.40 vs 0.60: +0.80
            row("sigma@macs50", 0.3, 0.930, finetuned=False),  # not fine-tuned: not counted
            row("lrflow_budget2", 0.5, None),      # no validation accuracy: not counted
            row("dprp", 9.0, 0.5, status="error")]
    compare = {"m": {"gate_points": 1.0, "rows": rows, "parent": {"val_accuracy": 0.942}}}
    (gap, n), = validation_gap(compare).values()
    assert n == 2 and gap == pytest.approx(0.55)
    text = "\n".join(budget_section(compare))
    assert "mean (validation drop − test drop): m +0.55 pt over 2 children." in text
    assert "| m | 4 |  | 20.0 % | 30.0 % | — | +1.00 | +0.60 | +1.40 | — | pass |" in text


def test_the_early_abandon_simulation_counts_saved_epochs_and_kept_rungs_it_would_lose():
    from bench.report.budget import abandon_lines, early_abandon

    def attempt(drops, kept, accept=1.0):
        return {"val_drop_by_epoch": drops, "kept": kept, "accept_max_drop": accept, "max_drop_before_finetune": 8.0,
                "val_drop_after_finetune": drops[-1]}

    tried = [attempt([6.0, 2.4, 2.0, 1.8], False),   # refused; 2.4 after epoch 1: cut at any margin ≤ 1.4
             attempt([3.0, 1.6, 1.1, 0.9], True),    # kept: cut at margin 0 and 0.5 (1.6 > 1.5), not at 1.0
             attempt([2.0, 1.2, 1.1, 0.8], False),   # refused at 0.8 (the held-out check): cut at margin 0 only
             attempt([1.0, 0.5, 0.4, 0.3], False)]   # the last rung: never cut
    assert early_abandon(tried, 0.0) == {"epochs": 12, "saved": 6, "abandoned": 3, "late": 2, "lost": 1}
    assert early_abandon(tried, 1.0) == {"epochs": 12, "saved": 2, "abandoned": 1, "late": 0, "lost": 0}
    assert early_abandon(tried, 2.0)["abandoned"] == 0
    assert early_abandon([{"kept": False, "accept_max_drop": 1.0}, attempt([1.0, 0.5], True)], 0.0)["epochs"] == 1
    compare = {"m": {"extras": {"lrflow_recovery": {"recovery": tried}, "lrflow_pipeline": {"recovery": [{"kept": True}]}}}}
    (line, _) = abandon_lines(compare)
    assert "per-epoch drops of m lrflow_recovery)" in line  # the pipeline's attempts have no per-epoch drops
    assert ("margin +0.0 pt: 6 of 12 fine-tune epochs saved, 3 rung(s) cut short, 2 of them within the threshold by "
            "the end of their fine-tune, 1 of them the kept one") in line
    assert "margin +1.0 pt: 2 of 12 fine-tune epochs saved, 1 rung(s) cut short, 0 of them within" in line
    assert abandon_lines({"m": {"extras": {}}}) == []


def test_the_recovery_cost_is_stated_against_the_single_rung_variant_with_the_same_search():
    from bench.report.budget import recovery_cost_lines

    tried = [{"kept": False}, {"kept": False}, {"kept": True}]
    rows = [{**budget_row("lrflow", 0.6, 0.7, 0.2, 0.3, True), "finetune_s": 400.0},
            {**budget_row("lrflow_recovery", 0.6, 0.7, 0.2, 0.3, True), "finetune_s": 1400.0},
            {**budget_row("lrflow_guarded", 0.7, 0.8, 0.2, 0.3, True), "finetune_s": 500.0},
            {**budget_row("lrflow_pipeline", 0.4, 0.5, 1.2, 0.9, True), "finetune_s": 1000.0}]
    extras = {"lrflow_recovery": {"recovery": tried}, "lrflow_pipeline": {"recovery": tried[1:]}}
    (line, _) = recovery_cost_lines({"m": {"rows": rows, "extras": extras}})
    assert ("m lrflow_recovery: 3 fine-tune(s) in 1400 s against lrflow's one in 400 s (3.5×), for the same child; "
            "m lrflow_pipeline: 2 fine-tune(s) in 1000 s against lrflow_guarded's one in 500 s (2.0×), for params "
            "40.0 % kept against 70.0 %, MACs 50.0 % against 80.0 %.") in line
    # no single-rung row to compare with, or no fine-tune time: nothing claimed
    assert recovery_cost_lines({"m": {"rows": rows[1:2], "extras": extras}}) == []
    assert recovery_cost_lines({"m": {"rows": [rows[0], {**rows[1], "finetune_s": None}], "extras": extras}}) == []
    # the same size but another test accuracy: not called the same child
    (line, _) = recovery_cost_lines({"m": {"rows": [rows[0], {**rows[1], "test_accuracy": 0.8}], "extras": extras}})
    assert "for a child of the same size." in line
