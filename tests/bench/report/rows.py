"""Hand-made result rows shared by the report's tests."""


def drop_row(variant, drop_no_ft, macs_kept, status="ok"):
    """A variant's row with only what the Σ goals read: its drop without fine-tune and MACs kept."""
    return {"variant": variant, "status": status, "test_drop_no_ft": drop_no_ft, "macs_kept": macs_kept}


def block(kind, method, chain_over_dense, macs_before=100, macs_after=50, variant="lrflow"):
    """One per-layer block timing (``bench.timing.time_blocks``)."""
    return {"type": kind, "method": method, "chain_over_dense": chain_over_dense, "macs_before": macs_before,
            "macs_after": macs_after, "variant": variant}


def budget_row(variant, params, macs, drop_no_ft, drop, passed, status="ok"):
    """A fine-tuned variant's row with what the budget section and the compression goals read."""
    return {"variant": variant, "status": status, "params_kept": params, "macs_kept": macs, "est_drop_ucb95": None,
            "test_drop_no_ft": drop_no_ft, "test_drop": drop, "test_accuracy": 0.9 - drop / 100, "gate_passed": passed,
            "finetuned": True}
