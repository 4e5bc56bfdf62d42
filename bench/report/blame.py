"""Where a missed goal goes: the phase, layer type, factor chain or budget responsible, from the recorded
timings, profiles, per-layer blocks and λ paths (and the per-model medians and gains that text is built from);
none measures anything."""

from __future__ import annotations

from bench.report.fmt import extras_of, latency_of, median, pct, row_of, show, top_types
from bench.report.targets import GOALS


def worst_layer(row) -> str:
    layers = [r for r in row.get("layers") or [] if r.get("sigma_error") is not None]
    if not layers:
        return "—"
    worst = max(layers, key=lambda r: r["sigma_error"])
    return f"{worst['layer']} {worst['method']}{worst['rank']} {worst['sigma_error']:.3f}"


def phase_blame(row, top: int = 2) -> str:
    """``search 59 s: candidates 25 s (44 %), allocation 19 s (33 %)``: the ``top`` phases of a row's search;
    with ``top=1`` just the largest (``candidates 44 %``)."""
    phases = row.get("search_phases_s") or {}
    total = sum(phases.values()) or 1
    ranked = sorted(phases.items(), key=lambda kv: -kv[1])[:top]
    if top == 1:
        return ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in ranked)
    wall = row.get("search_wall_s") or 0
    return f"search {wall:.0f} s: " + ", ".join(f"{k} {v:.0f} s ({100 * v / total:.0f} %)" for k, v in ranked)


def profile_blame(compare) -> list[str]:
    """Per model, the two functions with the most self time in the cProfile of the default search."""
    parts = []
    for m, c in compare.items():
        prof = extras_of(c, "lrflow").get("profile")
        if prof:
            top = prof["top_tottime"][:2]
            parts.append(f"{m}, self time (cProfile of the default search): "
                         + ", ".join(f"`{p['function']}` {p['tottime']:.0f} s" for p in top))
    return parts


def budget_blame(c: dict) -> str:
    """What stopped the default's λ search: the accuracy budget is checked before the fine-tune, on the paired
    95 % upper bound of the drop over the estimation set. Names the chosen point's estimate (beside its test
    drop without fine-tune) and the closest cheaper point the budget refused."""
    row, path = row_of(c, "lrflow"), extras_of(c, "lrflow").get("lambda_path") or []
    if not row or not path or row.get("macs_kept") is None:
        return ""
    chosen = min(path, key=lambda q: abs(q["macs_kept"] - row["macs_kept"]) + abs(q["params_kept"] - row["params_kept"]))
    cheaper = [q for q in path if q["macs_kept"] + q["params_kept"] < chosen["macs_kept"] + chosen["params_kept"]]
    n_val = (c.get("data") or {}).get("val")
    examples = chosen.get("examples")  # not recorded by runs before the estimation set was topped up
    images = ("" if examples is None else
              f" on {examples} {'validation' if n_val is not None and examples <= n_val else 'validation + training'} images")
    text = (f"; the budget (before fine-tune) binds: chosen point est drop {chosen['est_drop']:+.2f} pt, 95 % bound "
            f"{chosen['est_drop_ucb95']:+.2f}{images} (test drop without fine-tune "
            f"{show(row.get('test_drop_no_ft'), '{:+.2f}')})")
    if cheaper:
        near = max(cheaper, key=lambda q: q["macs_kept"] + q["params_kept"])
        text += (f", closest cheaper point (params {100 * near['params_kept']:.0f} %, MACs {100 * near['macs_kept']:.0f} %) "
                 f"refused at bound {near['est_drop_ucb95']:+.2f}")
    return text


def sigma_detail(model: str, row: dict, c: dict) -> str:
    """One model's Σ row at −50 % MACs: its drop, worst layer, and where the parent's MACs are when over the bound."""
    text = f"{model}: {row['test_drop_no_ft']:+.2f} pt at MACs kept {100 * row['macs_kept']:.0f} % (worst layer Σ-error {worst_layer(row)}"
    by_type = (c.get("parent") or {}).get("cost_by_type")
    if row["test_drop_no_ft"] > GOALS["sigma_drop_at_macs50"] and by_type:
        text += f"; the parent's MACs are in {top_types(by_type, 'macs')}"
    return text + ")"


def sigma_gains(compare: dict) -> dict:
    """Per model, per objective cut: ``(MACs kept, Σ's gain over Frobenius (pt), Frobenius's own drop (pt))``."""
    out = {}
    for m, c in compare.items():
        cuts = []
        for s in c["rows"]:
            if not (s["variant"].startswith("sigma@") and s["status"] == "ok"):
                continue
            f = row_of(c, "frobenius@" + s["variant"].split("@", 1)[1])
            if f and f["status"] == "ok":
                cuts.append((s["macs_kept"], f["test_drop_no_ft"] - s["test_drop_no_ft"], f["test_drop_no_ft"]))
        if cuts:
            out[m] = sorted(cuts)
    return out


def sigma_blame(compare: dict) -> list[str]:
    """Why Σ's gain is what it is, per model: the gain at every cut, and Frobenius's own drop (the gain
    cannot exceed it)."""
    parts = []
    for m, cuts in sigma_gains(compare).items():
        near = _near_half(cuts)
        parts.append(f"{m}: Σ gains " + " / ".join(f"{g:+.2f}" for _, g, _ in cuts) + " pt at MACs kept "
                     + " / ".join(f"{100 * k:.0f}" for k, _, _ in cuts)
                     + f" %; at {100 * near[0]:.0f} % Frobenius itself drops {near[2]:+.2f} pt, which bounds the gain")
    return parts


def _near_half(cuts: list) -> tuple:
    """The cut of :func:`sigma_gains` closest to half the MACs."""
    return min(cuts, key=lambda t: abs(t[0] - 0.5))


def sigma_short(compare: dict) -> str:
    """The model whose gain at −50 % MACs is smallest, and the Frobenius drop that bounds it."""
    gains = {m: _near_half(cuts) for m, cuts in sigma_gains(compare).items()}
    if not gains:
        return ""
    m, (kept, gain, frob) = min(gains.items(), key=lambda kv: kv[1][1])
    return f"smallest gain {m} {gain:+.2f} pt, where Frobenius itself drops only {frob:+.2f} pt at {100 * kept:.0f} % MACs"


def block_medians(compare: dict) -> dict:
    """``"<layer type> → <method>"`` → (median block speedup, median MACs ratio, count) over every timed block.

    Block speedup = dense layer time ÷ factor chain time at batch 1 (``bench.timing.time_blocks``).
    """
    by_type: dict = {}
    for c in compare.values():
        for b in (c.get("timing") or {}).get("blocks", []):
            slot = by_type.setdefault(f"{b['type']} → {b['method']}", ([], []))
            slot[0].append(1.0 / b["chain_over_dense"])
            if b.get("macs_after"):
                slot[1].append(b["macs_before"] / b["macs_after"])
    return {key: (median(speed), median(ratio), len(speed)) for key, (speed, ratio) in sorted(by_type.items())}


def _block_whose(compare: dict) -> str:
    variants = {b.get("variant") for c in compare.values() for b in (c.get("timing") or {}).get("blocks", [])}
    return "lrflow children" if variants <= {"lrflow"} else "every timed child"


def block_blame(compare) -> list[str]:
    """Per layer type and method: the median block speedup (batch 1) against the median MACs ratio."""
    medians = block_medians(compare)
    if not medians:
        return []
    return [f"per-layer blocks at batch 1 ({_block_whose(compare)}), median per layer type and method; block "
            "speedup = dense layer time ÷ factor chain time:",
            *(f"{key}: block speedup {speed:.2f}× for MACs ratio {show(ratio, '{:.1f}')}× ({n} blocks)"
              for key, (speed, ratio, n) in medians.items())]


def block_short(compare) -> str:
    """The range of the block medians: the factor chains' speedup is far below their MACs ratio."""
    medians = [(speed, ratio) for speed, ratio, _ in block_medians(compare).values() if ratio]
    if not medians:
        return ""
    speeds, ratios = [s for s, _ in medians], [r for _, r in medians]
    return (f"factor chains' speedup over their dense layer {min(speeds):.2f}–{max(speeds):.2f}× against MACs ratios "
            f"{min(ratios):.1f}–{max(ratios):.1f}× (medians per layer type and method, batch 1)")


def slow_blame(compare, key) -> list[str]:
    """Why children run slower than the parent: factor chains slower than the layer they replace, and noise;
    and what the latency guard (``lrflow_guarded``) did about it."""
    slow = [f"{k} {speed:.2f}× (median of {n})" for k, speed, n in _slow_chains(compare)]
    return [p for p in (_noise(compare, key),
                        ("factor chains slower than the dense layer they replace, batch 1 "
                         f"({_block_whose(compare)}): " + ", ".join(slow)) if slow else "",
                        *guard_summary(compare, key)) if p]


def _slow_chains(compare) -> list[tuple[str, float, int]]:
    """``(layer type → method, median block speedup, blocks)`` for the chains slower than their dense layer."""
    return [(k, speed, n) for k, (speed, _, n) in block_medians(compare).items() if speed < 1.0]


def slow_short(compare, key) -> str:
    noise = _noise(compare, key, short=True)
    slow = [f"{k} {speed:.2f}×" for k, speed, _ in _slow_chains(compare)]
    return "; ".join(p for p in (noise, "chains slower than their dense layer: " + ", ".join(slow) if slow else "") if p)


def guard_summary(compare, key) -> list[str]:
    """Per guarded variant and model: the measured speedup, the MACs kept against the unguarded default's,
    and how many layers the whole-model check sent back to dense."""
    rules = {"lrflow_guarded": "candidate blocks timed slower than their dense layer are never chosen, then ",
             "lrflow_model_guard": "no per-block rule, "}
    sentences = []
    for variant, rule in rules.items():
        parts = []
        for m, c in compare.items():
            row = row_of(c, variant)
            if not row or row["status"] != "ok":
                continue
            guard = extras_of(c, variant).get("latency_guard") or {}
            speed, free = latency_of(row, key), row_of(c, "lrflow")
            steps, reverted = guard.get("steps") or [], guard.get("reverted") or []
            first = (f" (chosen child with {steps[0]['factorized']} layer(s) factorized timed at {show(steps[0]['ratio'])})"
                     if reverted and steps else "")
            parts.append(f"{m} ×{show(speed)} at MACs kept {pct(row['macs_kept'])} (unguarded lrflow "
                         f"{pct((free or {}).get('macs_kept'))}: {rule}{len(reverted)} layer(s) "
                         f"sent back by the whole-model check{first}, child ÷ parent time in the search {show(guard.get('ratio'))})")
        if parts:
            sentences.append(f"with the latency guard on ({variant}): " + ", ".join(parts))
    return sentences


def _noise(compare, key, *, short: bool = False) -> str:
    """The same-structure control's time over the parent's per model (ideally 1.00); ``short``: their range."""
    ratios = {}
    for m, c in compare.items():
        tf_t = (c.get("timing") or {}).get("tf", {})
        batch = "64" if key.endswith("64") else "1"
        p, k = tf_t.get(batch, {}).get("parent"), tf_t.get(batch, {}).get("control")
        if p and k:
            ratios[m] = k["median_s"] / p["median_s"]
    if not ratios:
        return ""
    if short:
        return f"timing noise: control/parent {min(ratios.values()):.2f}–{max(ratios.values()):.2f}"
    return ("timing noise (same-structure control vs parent, ideally 1.00): "
            + ", ".join(f"{m} control/parent {r:.2f}" for m, r in ratios.items()))


def scale_blame(run) -> str:
    phases = run.get("phases_s") or {}
    if phases:
        ranked = sorted(phases.items(), key=lambda kv: -kv[1])[:2]
        text = ", ".join(f"{k} {v:.0f} s" for k, v in ranked)
        by = run.get("by_method") or {}
        costly = sorted(((f"{m} {phase}", e.get(f"{key}_s") or 0.0) for m, e in by.items()
                         for phase, key in (("grids", "candidates"), ("refits", "refit"))), key=lambda t: -t[1])[:2]
        return text + ("; by method: " + ", ".join(f"{what} {v:.0f} s" for what, v in costly) if costly else "")
    progress = run.get("progress") or {}
    steps = progress.get("phases") or {}
    return "; ".join(f"{k}: {v.get('done')}/{v.get('total')} after {v.get('at_s', 0) - v.get('started_s', 0):.0f} s"
                     for k, v in steps.items())
