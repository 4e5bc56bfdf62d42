"""Search-stage scale-out (issue 6): one zoo parent's search with its layer jobs in this process,
on a local Dask cluster of 1 worker and of 2 workers (processes, one thread each).

``python -m bench.dask_search [--quick]`` writes ``dask_search.json``: for each runner the search
wall time (MACs ≤ 50 %) and its phases (calibration, candidates, allocation, refit), the decision, and the
speedups of 2 workers over 1 (whole search and the candidate phase, which is what moves). The
flow's process keeps the latency timing, similarity scores and the allocation's evaluations
(:mod:`lrf_core.search.jobs`), so on this 2-core machine it shares the cores with the workers.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

from bench.common import ZOO_DIR, configure_tensorflow, load_splits, log, machine_info, max_rss_bytes, write_result

__all__ = ["run_dask_search"]

MODEL = "fashion_resnet"  # the zoo parent with the most layers to fit
WORKERS = (1, 2)
TARGET_MACS = 0.5


def _warm(address: str) -> None:
    """Import the numerics in every worker before timing (the first job would pay for it otherwise)."""
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        client.run(lambda: __import__("lrf_core.search.jobs"))


def _timed_search(parent, data, config, layer_map) -> dict:
    from lrf_core.search.compress import search

    started = time.perf_counter()
    searched = search(parent, data, config, layer_map=layer_map)
    wall = time.perf_counter() - started
    return {"search_wall_s": wall, "phases_s": searched.report["phases_s"],
            "decision": {name: f"{c.method}{list(c.rank)}" for name, c in searched.fitted.items()}}


def run_dask_search(mode, out_dir: Path, *, model: Optional[str] = None, zoo_dir: Path = ZOO_DIR) -> dict:
    """Time the search of ``model`` (MACs ≤ 50 %, the mode's grid) in process and on 1 and 2 workers.

    ``model`` defaults to the ResNet-style parent, or the mode's first model when it has none.
    """
    from distributed import LocalCluster

    from bench.harness import _base_config
    from bench.zoo import load_or_train
    from lrf_core.data import stratified_sample
    from lrf_core.search.allocate import CostTargets
    from lrf_core.search.compress import CompressData
    from lrf_core.search.jobs import local_map
    from tasks.distributed import layer_map_on

    model = model or (MODEL if MODEL in mode.models else mode.models[0])
    splits = load_splits(mode.data_uri, train_examples=mode.train_examples, test_examples=mode.test_examples)
    parent, _ = load_or_train(model, splits, mode=mode.name, directory=zoo_dir)
    data = CompressData(stratified_sample(splits.train, mode.calibration, seed=0), splits.train, splits.val, splits.test)
    # a cost target, as in the depth sweep and the ResNet-50 run: every run factorizes, and the
    # accuracy bisection's forward passes (flow-process work) do not dilute what is distributed
    config = _base_config(mode, max_drop=None, targets=CostTargets(macs=TARGET_MACS))
    runs = {"in_process": _timed_search(parent, data, config, local_map)}
    log(f"dask search {model}: in process {runs['in_process']['search_wall_s']:.1f} s")
    for n in WORKERS:
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            _warm(cluster.scheduler_address)
            with layer_map_on(cluster.scheduler_address) as layer_map:
                runs[f"dask_{n}"] = _timed_search(parent, data, config, layer_map)
        log(f"dask search {model}: {n} worker(s) {runs[f'dask_{n}']['search_wall_s']:.1f} s "
            f"(candidates {runs[f'dask_{n}']['phases_s'].get('candidates', 0):.1f} s)")

    one, two = runs["dask_1"], runs["dask_2"]
    result = {
        "experiment": "dask_search", "model": model, "mode": mode.name, "machine": machine_info(mode.threads),
        "settings": {"grid_points": mode.grid_points, "search_iterations": mode.search_iterations,
                     "conv_methods": mode.conv_methods, "calibration": mode.calibration, "target_macs": TARGET_MACS,
                     "workers": list(WORKERS),
                     "threads_per_worker": 1},
        "runs": runs,
        "same_decisions": len({tuple(sorted(r["decision"].items())) for r in runs.values()}) == 1,
        "speedup_2_vs_1": one["search_wall_s"] / two["search_wall_s"],
        "candidates_speedup_2_vs_1": one["phases_s"]["candidates"] / two["phases_s"]["candidates"],
        "max_rss_mb": round(max_rss_bytes() / 2**20, 1),
    }
    write_result(Path(out_dir) / "dask_search.json", result)
    return result


def main(argv=None) -> None:
    from bench.harness import MODES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--mode", help="a mode of bench.harness.MODES (overrides --quick)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    mode = MODES[args.mode or ("quick" if args.quick else "full")]
    configure_tensorflow()
    run_dask_search(mode, args.out or mode.results_dir)


if __name__ == "__main__":
    main()
