"""`python -m flows.train_parent OUT.keras`: train the demo parent on the bundled digits.

The embedded default's "production model": a small CNN (keras functional, BatchNorm,
residual Add) trained with early stopping on a validation split, the rate cut ×0.1 whenever
validation accuracy stalls for 2 epochs (so the parent is converged at the fine-tune's lower
rate and a child's fine-tune cannot gain from the rate alone); the held-out split is left for
the accuracy gate. Used by ``make demo`` and by the DVC ``train_parent`` stage.
"""

from __future__ import annotations

import sys
from pathlib import Path

DATA = "sklearn:digits"


def train_parent(out: Path, *, epochs: int = 30, seed: int = 0) -> Path:
    from lrf_core.data import load_dataset, split_dataset
    from lrf_core.model_io import save_model_atomic
    from lrf_core.zoo import digits_cnn, train_classifier

    train_all = load_dataset(DATA, split="train")
    train, val = split_dataset(train_all, (0.85, 0.15), seed=seed)
    print(f"Training the demo parent on {DATA}: {len(train)} train / {len(val)} validation images "
          f"(the held-out split is kept for the gate)")
    parent = digits_cnn(train.sample_shape, train.num_classes)
    result = train_classifier(parent, train, val, epochs=epochs, seed=seed, patience=5, lr_patience=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model_atomic(parent, out)
    print(f"  {result.epochs} epochs (kept epoch {result.kept_epoch}, rate {result.learning_rates[result.kept_epoch - 1]:.0e}), "
          f"validation accuracy {result.val_accuracy:.2%}")
    return out


if __name__ == "__main__":
    train_parent(Path(sys.argv[1] if len(sys.argv) > 1 else "models/digits-cnn.keras"))
