"""`make demo`: train a small CNN on the bundled digits, inspect it, factorize it, compare.

Runs the same `lrf` commands a user would type (in-process): a hand-written plan rebuilt
with the Σ (distribution-aware) and the plain Frobenius objective, compared without
fine-tuning, then `lrf compress` choosing method and rank per layer within an accuracy
budget and fine-tuning once.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

OUT = Path(os.environ.get("LRF_DEMO_OUT", "demo-out"))
DATA = "sklearn:digits"

#: A plan mixing methods; layers not named stay dense (conv1 is too small to gain anything).
PLAN = {
    "conv2": {"method": "tucker2", "rank": [12, 12]},
    "conv3": {"method": "cp", "rank": 24},
    "fc1": {"method": "svd", "rank": 16},
}


def _run(argv: list[str]) -> None:
    from flows.cli import main

    print(f"\n$ lrf {shlex.join(argv)}", flush=True)
    status = main(argv)
    if status != 0:
        sys.exit(status)


def main() -> None:
    from lrf_core.data import load_dataset, split_dataset
    from lrf_core.graph import model_cost
    from lrf_core.model_io import load_model, save_model_atomic
    from lrf_core.zoo import accuracy, digits_cnn, train_classifier

    OUT.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train_all = load_dataset(DATA, split="train")
    test = load_dataset(DATA, split="test")
    train, val = split_dataset(train_all, (0.85, 0.15), seed=0)
    print(f"Training the demo parent on {DATA}: {len(train)} train / {len(val)} validation / {len(test)} held-out images")
    parent = digits_cnn(train.sample_shape, train.num_classes)
    result = train_classifier(parent, train, val, epochs=30, seed=0, patience=5)
    save_model_atomic(parent, OUT / "parent.keras")
    print(f"  {result.epochs} epochs, validation accuracy {result.val_accuracy:.2%}")

    _run(["inspect", str(OUT / "parent.keras")])
    (OUT / "plan.json").write_text(json.dumps(PLAN, indent=2) + "\n")
    print(f"\nPlan ({OUT / 'plan.json'}): {json.dumps(PLAN)}")
    for objective in ("sigma", "frobenius"):
        _run([
            "rebuild", str(OUT / "parent.keras"), "--plan", str(OUT / "plan.json"), "--data", DATA,
            "--objective", objective, "--out", str(OUT / f"compressed-{objective}.keras"),
            "--report", str(OUT / f"report-{objective}.json"),
        ])

    rows = [("parent", parent)] + [
        (f"factorized, {objective} fit", load_model(OUT / f"compressed-{objective}.keras"))
        for objective in ("sigma", "frobenius")
    ]
    base = model_cost(parent)
    base_acc = accuracy(parent, test)
    print("\nSummary (held-out digits split, no fine-tuning yet):")
    print(f"  {'model':<26}{'params':>10}{'MACs/image':>13}{'accuracy':>10}{'drop':>8}")
    for label, model in rows:
        cost, acc = model_cost(model), accuracy(model, test)
        print(f"  {label:<26}{cost.params:>10,}{cost.macs:>13,}{acc:>10.2%}{100 * (base_acc - acc):>7.2f}p")
    child = model_cost(rows[1][1])
    print(f"\n  kept {child.params / base.params:.1%} of the parameters and {child.macs / base.macs:.1%} of the MACs.")
    print(f"  Files in {OUT}/: parent.keras, plan.json, compressed-*.keras, report-*.json")

    print("\nNow let lrflow choose method and rank per layer itself, within a 1-point accuracy budget,")
    print("and fine-tune the result once:")
    _run(["compress", str(OUT / "parent.keras"), "--data", DATA, "--max-drop", "1.0", "--out", str(OUT / "compress")])
    print(f"  Read {OUT / 'compress' / 'report.md'} and look at {OUT / 'compress' / 'pareto.png'}.")
    print("  The rebuilt models use standard Keras layers only: keras.saving.load_model works without lrflow.")
    print(f"Demo finished in {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
