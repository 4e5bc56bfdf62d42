"""The report's caveats: the commit(s) behind each zoo model's rows, and fine-tunes that kept the untuned child."""
from bench.report.notes import provenance, untuned_children


def _compare(*pieces):
    return {"runs": [{"commit": c * 40, "variants": list(v)} for c, v in pieces]}


def test_a_single_run_names_its_commit():
    notes = provenance({"vgg": _compare(("a", ["lrflow", "dprp"]))})
    assert notes == ["vgg: every variant in one run at aaaaaaaaaaaa."]


def test_pieces_list_each_commit_with_its_variants():
    (note,) = provenance({"vgg": _compare(("a", ["lrflow"]), ("b", ["dprp", "objective"]))})
    assert note.startswith("vgg: done in 2 pieces (`--resume`): lrflow at aaaaaaaaaaaa; dprp, objective at bbbbbbbbbbbb.")


def test_models_at_different_commits_are_flagged_and_at_the_same_commit_are_not():
    same = provenance({"vgg": _compare(("a", ["lrflow"])), "resnet": _compare(("a", ["lrflow"]))})
    assert len(same) == 2 and not any("different commits" in n for n in same)
    mixed = provenance({"vgg": _compare(("a", ["lrflow"])), "resnet": _compare(("b", ["lrflow"]))})
    assert len(mixed) == 3 and "different commits" in mixed[-1]


def test_runs_without_variants_are_not_pieces():
    """A timing-only re-run records no variants: it is not a piece and names no commit."""
    assert provenance({"vgg": {"runs": [{"commit": "c" * 40, "variants": []}]}}) == []


def test_children_whose_fine_tune_kept_the_starting_weights_are_named():
    def row(variant, before, after, finetuned=True, status="ok", val=(0.93, 0.93), best=None):
        return {"variant": variant, "status": status, "finetuned": finetuned, "test_accuracy_no_ft": before,
                "test_accuracy": after, "val_accuracy_no_ft": val[0], "val_accuracy": val[1], "finetune_best_epoch": best}

    c = {"rows": [row("lrflow", 0.9231, 0.9231), row("budget4", 0.91, 0.9142), row("sigma@macs50", 0.9, 0.9, finetuned=False),
                  row("dprp", None, 0.92), row("broken", 0.9, 0.9, status="failed"),
                  row("tie", 0.9, 0.9, val=(0.93, 0.94)),  # equal on test by chance: validation moved
                  row("recorded", 0.9, 0.9, best=2), row("recorded0", 0.9, 0.91, best=0)]}  # the best epoch decides
    assert untuned_children(c) == ["lrflow", "recorded0"]
