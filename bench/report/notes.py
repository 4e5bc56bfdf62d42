"""Caveats for reading the numbers that follow from the data: provenance of the rows, unconverged parents,
contention, no-op variants, timing noise."""

from __future__ import annotations

from bench.report.load import ZOO_ORDER


#: Other processes' average busy cores during a variant above which its timings are flagged.
CONTENTION_CORES = 0.3


def provenance(compare: dict[str, dict]) -> list[str]:
    """Which commit each zoo model's rows come from: one run, or pieces (``--resume``) at several commits.

    A reader comparing models must know when their rows were fitted by different code; the last
    note says so when the models' commits differ.
    """
    notes, commits = [], {}
    for name, c in compare.items():
        pieces = [(str(r.get("commit"))[:12], r["variants"]) for r in c.get("runs") or [] if r.get("variants")]
        commits[name] = frozenset(commit for commit, _ in pieces)
        if len(pieces) == 1:
            notes.append(f"{name}: every variant in one run at {pieces[0][0]}.")
        elif pieces:  # a resumed run: rows from several commits, latency re-timed together at the end
            notes.append(f"{name}: done in {len(pieces)} pieces (`--resume`): " + "; ".join(
                f"{', '.join(variants)} at {commit}" for commit, variants in pieces)
                + ". Latency of every child comes from the last piece's single interleaved timing run.")
    if len({v for v in commits.values() if v}) > 1:
        notes.append("The zoo models' rows come from different commits (above), so a difference between models "
                     "may be a change in lrflow, not in the model; compare the rows of one model with each other.")
    return notes


def observations(results: dict) -> list[str]:
    """Caveats that follow from the data (not opinions): how the budget and the guard are applied, a partial run,
    variants not run, the rows' commits, unconverged parents, contention, no-op variants, fine-tunes that kept the
    untuned child, timing noise."""
    notes = ["The accuracy budget of the lrflow default (`max_drop=1.0`) is enforced **before** the fine-tune, on the "
             "paired 95 % upper bound of the drop over the estimation set (validation, topped up with training images when it "
             "has fewer than 4 096; the goals table names which images a result used); the gate here is the test "
             "drop **after** the fine-tune. The budget is therefore conservative by design: the `lrflow_budget<N>` rows "
             "(when run; section \"Accuracy budget before the fine-tune\") show what a larger one buys, and the "
             "`lrflow_target` row what the goal's cost targets cost in accuracy after the fine-tune.",
             "Every variant but `lrflow_guarded`, `lrflow_model_guard` and `lrflow_pipeline` runs with the latency "
             "guard off (the "
             "`lrf_core` default; the pipeline's `params.yaml` turns it on), so the latency columns show what the "
             "factorizations do unguarded. `lrflow_guarded` is the default with the guard on: a child timed slower "
             "than its parent (TF, batch 1, in the search's process) gives layers back before the fine-tune. "
             "`lrflow_model_guard` drops the guard's per-block rule: blocks timed slower than their dense layer stay "
             "candidates and only the whole child, timed against its parent, decides what goes back to dense. "
             "`lrflow_pipeline` is what `params.yaml` runs: the guard and recovery budgets `auto`. The guard times "
             "blocks and children in the search's own process, at TensorFlow's default intra-op threads (2 on this "
             "machine) with op determinism on, as the pipeline does; the latency columns are timed at 1 thread in a "
             "separate process. A child the guard timed slower at 2 threads can be faster at 1 (its factor chains' "
             "small ops gain less from a second thread), so compare a guarded row's decision with the guard's own "
             "child ÷ parent time, not with the unguarded row's 1-thread speedup.",
             "Params and MACs are lrflow's cost model (`lrf_core.graph.model_cost`; MACs per image, FLOPs ≈ 2 × MACs); "
             "peak RSS is the whole benchmark process sampled every 20 ms (\"+\" is the rise during the variant)."]
    compare = results["compare"]
    mode = next((c.get("mode") for c in compare.values()), None)
    missing = [m for m in ZOO_ORDER if m not in compare]
    if mode == "full" and missing:
        notes.append(f"**Partial full run**: {', '.join(f'`{m}`' for m in compare) or 'no zoo model'} ran; "
                     f"{', '.join(f'`{m}`' for m in missing)} did not, so the zoo averages above are over the models "
                     "that ran. `python -m bench.run --models MODEL ...` adds one.")
    for name, c in compare.items():
        # the objective variant's rows are named sigma@macsNN / frobenius@macsNN
        ran = {"objective" if r.get("family") == "objective" else r["variant"] for r in c["rows"]}
        not_run = [v for v in (c.get("settings") or {}).get("variants", ()) if v not in ran]
        if not_run:
            notes.append(f"{name}: variants not in this run: {', '.join(not_run)}.")
    notes.extend(provenance(compare))
    for name, c in compare.items():
        gain = (c.get("parent_extra_epochs") or {}).get("test_gain_points")
        if gain is not None and gain > 0.5:
            notes.append(f"{name}: the parent gains {gain:+.2f} points from the fine-tune epochs alone, so it was not "
                         f"converged; compare fine-tuned children with the control column, not with the parent.")
        busy = [f"{r['variant']} ({r['other_cpu_cores']:.1f})" for r in c["rows"]
                if (r.get("other_cpu_cores") or 0) >= CONTENTION_CORES]
        if busy:
            notes.append(f"{name}: other processes kept cores busy while these variants ran (average cores in "
                         f"brackets): {', '.join(busy)}. Their search and fine-tune times are inflated; "
                         f"`--resume --redo` them on a quiet machine.")
        idle = [r["variant"] for r in c["rows"] if r["status"] == "ok" and r["params_kept"] is not None
                and r["params_kept"] >= 0.9999 and r["macs_kept"] >= 0.9999]
        if idle:
            notes.append(f"{name}: {', '.join(idle)} kept every layer dense (no candidate met its rule, the budget "
                         f"or, for the guarded variants, the latency guard); "
                         f"their accuracy change is the fine-tune alone.")
        untuned = untuned_children(c)
        if untuned:
            notes.append(f"{name}: for {', '.join(untuned)} no fine-tune epoch beat the untuned child on validation, so "
                         "the fine-tune kept its starting weights (`lrf_core.finetune` restores the best, epoch 0 "
                         "included); their drop after the fine-tune is the drop without it.")
        tf_t = (c.get("timing") or {}).get("tf", {})
        for batch in ("1", "64"):
            p, k = tf_t.get(batch, {}).get("parent"), tf_t.get(batch, {}).get("control")
            if p and k and abs(k["median_s"] / p["median_s"] - 1) > 0.03:
                notes.append(f"{name}: at batch {batch} the same-structure control times {k['median_s'] / p['median_s']:.2f}× "
                             f"the parent: differences of that size are timing noise on this shared machine.")
    return notes


def untuned_children(c: dict) -> list[str]:
    """The fine-tuned variants whose fine-tune kept the starting weights: best epoch 0 where the row records it;
    in older rows, the same validation **and** test accuracy before and after (equal accuracies on both splits
    by chance, with different weights, are unlikely; the best epoch settles it)."""
    def kept_start(r):
        if r.get("finetune_best_epoch") is not None:
            return r["finetune_best_epoch"] == 0
        return all(r.get(f"{split}_accuracy_no_ft") is not None and r.get(f"{split}_accuracy") == r[f"{split}_accuracy_no_ft"]
                   for split in ("val", "test"))

    return [r["variant"] for r in c["rows"] if r["status"] == "ok" and r.get("finetuned") and kept_start(r)]
