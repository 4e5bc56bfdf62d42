"""Scale experiments (issue 5): ResNet-50 at 224×224, and search time against network depth.

``python -m bench.scale resnet50 --mode MODE --config CONFIG --out OUT.json [--progress P.json]``
    One search of ``keras.applications.ResNet50(weights=None, 224×224×3, 10 classes)`` with a
    cost target only (MACs kept ≤ ``ScaleSpec.target_macs``), few grid points and a small
    calibration set of Fashion-MNIST images upscaled to 224×224×3 (random weights: timings and
    memory, not accuracy, are the point). ``CONFIG`` is ``all_methods`` (lrflow's default
    method set) or ``svd_only``. The progress file is rewritten at every step, so a run killed at
    its time cap (by :func:`run_resnet50`) still says how far it got.

``python -m bench.scale depth --mode MODE --out DIR`` (writes ``DIR/depth_sweep.json``)
    The ResNet-style zoo model with 1, 2, 3, … basic blocks per stage (seeded, briefly trained:
    ALS on random weights converges unrealistically slowly), one cost-target search each: calibration, candidates, allocation and total time, and peak
    RSS, against the number of eligible layers.

Both are also called from :mod:`bench.run`; the ResNet-50 search runs in a child process
so its peak RSS is its own and the cap can stop it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.common import (
    ROOT, PeakRSS, configure_tensorflow, load_splits, log, machine_info, max_rss_bytes, rss_bytes, write_result,
)

RESNET50_CONFIGS = ("all_methods", "svd_only")


def _search_config(*, grid_points, search_iterations, similarity_examples, target_macs, methods=None):
    from lrf_core.finetune import FinetuneConfig
    from lrf_core.search.allocate import CostTargets
    from lrf_core.search.compress import CompressConfig

    extra = {"methods": methods} if methods else {}
    return CompressConfig(targets=CostTargets(macs=target_macs), grid_points=grid_points,
                          search_iterations=search_iterations, similarity_examples=similarity_examples,
                          finetune=FinetuneConfig(epochs=0), **extra)


def _upscaled(dataset, size: int, name: str):
    """Grey 28×28 images as ``size``×``size``×3 (bilinear), same labels."""
    import numpy as np
    import tensorflow as tf

    from lrf_core.data import Dataset

    x = tf.image.resize(dataset.x, (size, size), method="bilinear").numpy()
    x = np.repeat(x, 3, axis=-1).astype(np.float32)
    return Dataset(x=x, y=dataset.y, name=name, num_classes=dataset.num_classes)


class _Progress:
    """Rewrites a JSON progress file: phase, step, elapsed seconds, current and peak RSS."""

    def __init__(self, path, started):
        self.path, self.started, self.peak = Path(path) if path else None, started, rss_bytes()
        self.state: dict = {"phases": {}}

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.perf_counter() - self.started
        self.peak = max(self.peak, rss_bytes())
        first = self.state["phases"].setdefault(phase, {"started_s": round(now, 2)})
        first.update(done=done, total=total, at_s=round(now, 2))
        self.state.update(phase=phase, done=done, total=total, elapsed_s=round(now, 2),
                          rss_mb=round(rss_bytes() / 2**20, 1), peak_rss_mb=round(self.peak / 2**20, 1))
        self.write()

    def write(self) -> None:
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state))
            tmp.replace(self.path)


def _memory_watchdog(progress: "_Progress", cap_gb: float) -> None:
    """Stop this process (exit 3) when its RSS passes ``cap_gb``: the machine is shared."""

    def watch():
        while True:
            time.sleep(0.5)
            rss = rss_bytes()
            progress.peak = max(progress.peak, rss)
            if rss > cap_gb * 2**30:
                progress.state.update(stopped="memory_cap", rss_mb=round(rss / 2**20, 1),
                                      peak_rss_mb=round(progress.peak / 2**20, 1))
                progress.write()
                os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def time_by_method(report: dict) -> dict:
    """Where a search's fitting time went, per method: candidate-grid seconds and fits, refit seconds,
    refits, their median sweeps and the median relative drop of the proxy error the refit bought.

    ``report``: a search report (``candidate_counts[layer]["fit_s"]``, ``refits``) → method → figures.
    """
    import numpy as np

    out: dict[str, dict] = {}

    def entry(method: str) -> dict:
        return out.setdefault(method, {"candidates_s": 0.0, "refits": 0, "refit_s": 0.0})

    for counts in report.get("candidate_counts", {}).values():
        for method, seconds in (counts.get("fit_s") or {}).items():
            entry(method)["candidates_s"] += seconds
    for method in {r["method"] for r in report.get("refits", [])}:
        refits = [r for r in report["refits"] if r["method"] == method]
        gains = [1 - r["proxy_error_after"] / r["proxy_error_before"] for r in refits if r["proxy_error_before"]]
        entry(method).update(refits=len(refits), refit_s=sum(r["seconds"] or 0.0 for r in refits),
                             refit_sweeps_median=float(np.median([r["sweeps"] for r in refits])),
                             refit_error_gain_median=float(np.median(gains)) if gains else None,
                             refits_kept=sum(r["kept"] for r in refits))
    return {m: {k: (round(v, 3) if isinstance(v, float) else v) for k, v in e.items()} for m, e in sorted(out.items())}


def resnet50_search(mode_name: str, config_name: str, progress_path=None) -> dict:
    """One capped-by-the-caller ResNet-50 search; returns the record written to the result file."""
    from bench.harness import MODES
    from bench.zoo import resnet50_scale
    from lrf_core.data import stratified_sample
    from lrf_core.graph import describe_model, model_cost
    from lrf_core.search.compress import CompressData, TargetNotMetError, search

    spec = MODES[mode_name].scale
    started = time.perf_counter()
    progress = _Progress(progress_path, started)
    _memory_watchdog(progress, spec.rss_cap_gb)
    progress("setup", 0, 1)
    model = resnet50_scale()
    splits = load_splits(train_examples=max(4 * spec.calibration, 400), test_examples=20)
    calib = _upscaled(stratified_sample(splits.train, spec.calibration, seed=0), 224, "fashion-224/calibration")
    val = _upscaled(stratified_sample(splits.val, max(spec.calibration // 2, 10), seed=0), 224, "fashion-224/val")
    data = CompressData(calib, calib, val)  # estimation set = val + calib: no extra ResNet-50 forward passes
    methods = None if config_name == "all_methods" else {"conv2d": ("svd",), "dense": ("svd",)}
    config = _search_config(grid_points=spec.grid_points, search_iterations=spec.search_iterations,
                            similarity_examples=spec.similarity_examples, target_macs=spec.target_macs,
                            methods=methods)
    summary = describe_model(model)
    setup_s = time.perf_counter() - started
    progress("setup", 1, 1)
    record = {
        "config": config_name, "methods": {k: list(v) for k, v in config.methods.items()},
        "params": model_cost(model).params, "macs": model_cost(model).macs,
        "eligible_layers": sum(r.eligible for r in summary.layers), "calibration_images": len(calib),
        "grid_points": spec.grid_points, "search_iterations": spec.search_iterations,
        "similarity_examples": spec.similarity_examples, "target_macs": spec.target_macs, "setup_s": setup_s,
    }
    t0 = time.perf_counter()
    with PeakRSS(interval=0.1) as memory:
        try:
            searched = search(model, data, config, progress=progress)
            record.update(status="ok", phases_s=searched.report["phases_s"],
                          candidate_counts=searched.report["candidate_counts"],
                          by_method=time_by_method(searched.report), refits=searched.report.get("refits", []))
            chosen = [r for r in searched.report["layers"] if r["status"] == "factorized"]
            record["factorized_layers"] = len(chosen)
            record["macs_kept"] = 1 - sum(r["macs_before"] - r["macs_after"] for r in chosen) / record["macs"]
            record["params_kept"] = 1 - sum(r["params_before"] - r["params_after"] for r in chosen) / record["params"]
        except TargetNotMetError as error:
            record.update(status="target_not_met", error=str(error), phases_s=error.report["phases_s"])
    record.update(search_wall_s=time.perf_counter() - t0, peak_rss_mb=round(max(memory.peak, max_rss_bytes()) / 2**20, 1),
                  peak_rss_sampled_mb=memory.as_dict()["peak_rss_mb"], ru_maxrss_mb=round(max_rss_bytes() / 2**20, 1))
    return record


def run_resnet50(mode, out_dir: Path) -> dict:
    """Every ResNet-50 config of ``mode.scale`` in a child process, capped; writes ``scale_resnet50.json``."""
    spec = mode.scale
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for config_name in spec.configs:
        out = out_dir / f".resnet50-{config_name}.json"
        progress = out_dir / f".resnet50-{config_name}.progress.json"
        for stale in (out, progress):
            stale.unlink(missing_ok=True)
        log(f"resnet50/{config_name}: search capped at {spec.cap_s:.0f} s")
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "bench.scale", "resnet50", "--mode", mode.name,
                                  "--config", config_name, "--out", str(out), "--progress", str(progress)],
                                 cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True)
        try:
            _, stderr = child.communicate(timeout=spec.cap_s + 120)  # + setup (TF import, model build)
            capped = False
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # our own child's process group only
            _, stderr = child.communicate()
            capped = True
        wall = time.perf_counter() - started
        state = json.loads(progress.read_text()) if progress.exists() else {}
        if out.exists():
            record = json.loads(out.read_text())
        else:
            status = "capped" if capped else ("memory_cap" if state.get("stopped") == "memory_cap" else "failed")
            record = {"config": config_name, "status": status,
                      "error": None if status != "failed" else "\n".join((stderr or "").strip().splitlines()[-10:]),
                      "peak_rss_mb": state.get("peak_rss_mb")}
        record.update(process_wall_s=wall, capped=capped, progress=state)
        for stale in (out, progress):
            stale.unlink(missing_ok=True)
        log(f"resnet50/{config_name}: {record['status']} after {wall:.0f} s, peak RSS {record.get('peak_rss_mb')} MB, "
            f"last phase {state.get('phase')} {state.get('done')}/{state.get('total')}")
        runs.append(record)
    result = {"experiment": "scale_resnet50", "mode": mode.name, "machine": machine_info(), "cap_s": spec.cap_s,
              "runs": runs}
    write_result(out_dir / "scale_resnet50.json", result)
    return result


def depth_sweep(mode, out_dir: Path) -> dict:
    """Search time against the number of layers: the ResNet-style model at 1, 2, 3, … blocks per stage."""
    from bench.zoo import resnet_fashion
    from lrf_core.data import stratified_sample
    from lrf_core.graph import describe_model, model_cost
    from lrf_core.search.compress import CompressData, TargetNotMetError, search
    from lrf_core.zoo import train_classifier

    splits = load_splits(mode.data_uri, train_examples=mode.train_examples or 10000, test_examples=200)
    calib = stratified_sample(splits.train, mode.calibration, seed=0)
    data = CompressData(calib, splits.train, splits.val)
    conv_methods = mode.depth_conv_methods or mode.conv_methods
    rows = []
    for blocks in mode.depth_blocks:
        model = resnet_fashion(splits.train.sample_shape, splits.train.num_classes, blocks=(blocks,) * 3)
        t0 = time.perf_counter()
        trained = train_classifier(model, splits.train, splits.val, epochs=mode.depth_train_epochs, seed=0,
                                   patience=mode.depth_train_epochs)
        train_s = time.perf_counter() - t0
        eligible = sum(r.eligible for r in describe_model(model).layers)
        config = _search_config(grid_points=mode.depth_grid_points, search_iterations=mode.search_iterations,
                                similarity_examples=mode.similarity_examples, target_macs=0.5,
                                methods={"conv2d": conv_methods, "dense": ("svd",)} if conv_methods else None)
        t0 = time.perf_counter()
        with PeakRSS() as memory:
            try:
                searched = search(model, data, config)
                phases, status = searched.report["phases_s"], "ok"
                fitted = sum(c.get("fitted", 0) for c in searched.report["candidate_counts"].values())
            except TargetNotMetError as error:
                phases, status, fitted = error.report["phases_s"], "target_not_met", None
        row = {"blocks_per_stage": blocks, "eligible_layers": eligible, "params": model_cost(model).params,
               "train_epochs": trained.epochs, "train_s": train_s, "val_accuracy": trained.val_accuracy,
               "macs": model_cost(model).macs, "status": status, "phases_s": phases, "candidates_fitted": fitted,
               "search_wall_s": time.perf_counter() - t0, **memory.as_dict()}
        log(f"depth: {blocks} blocks/stage, {eligible} layers: search {row['search_wall_s']:.1f} s {phases}")
        rows.append(row)
    result = {"experiment": "depth_sweep", "mode": mode.name, "machine": machine_info(),
              "settings": {"grid_points": mode.depth_grid_points, "search_iterations": mode.search_iterations,
                           "calibration": mode.calibration, "similarity_examples": mode.similarity_examples,
                           "conv_methods": conv_methods, "target_macs": 0.5,
                           "weights": f"trained {mode.depth_train_epochs} epoch(s) on {len(splits.train)} images"},
               "rows": rows}
    write_result(out_dir / "depth_sweep.json", result)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=("resnet50", "depth"))
    parser.add_argument("--mode", default="full")
    parser.add_argument("--config", choices=RESNET50_CONFIGS, default="svd_only")
    parser.add_argument("--out", type=Path, required=True, help="resnet50: the record file; depth: the results directory")
    parser.add_argument("--progress", type=Path)
    args = parser.parse_args(argv)
    from bench.harness import MODES

    configure_tensorflow()
    if args.experiment == "resnet50":
        record = resnet50_search(args.mode, args.config, args.progress)
        write_result(args.out, record)
    else:
        mode = MODES[args.mode]
        depth_sweep(mode, args.out)


if __name__ == "__main__":
    main()
