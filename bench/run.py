"""The whole benchmark in one command: ResNet-50, depth sweep, zoo side by side, Dask search, report.

``python -m bench.run`` (full: ``make bench``; hours on 2 cores) or ``python -m bench.run --quick``
(``make bench-quick``; about 15 minutes). Results go to ``bench/results/`` (full) or
``bench/results/quick/``; the report to ``bench/REPORT.md`` (full) or ``bench/REPORT-quick.md``,
rendered by :mod:`bench.report` from the JSON files alone. ``--skip`` leaves out parts
(their existing result files are kept and still reported). ``--resume`` continues a zoo run that
was stopped or done in pieces (``--variants``): finished variants are kept, the rest run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import BENCH, configure_tensorflow, log

PARTS = ("resnet50", "depth", "zoo", "dask", "report")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the ≤ 15 minute reduced run")
    parser.add_argument("--mode", help="a mode of bench.harness.MODES (overrides --quick)")
    parser.add_argument("--skip", nargs="+", default=[], choices=PARTS)
    parser.add_argument("--models", nargs="+", help="zoo models to run (default: the mode's)")
    parser.add_argument("--variants", nargs="+", help="variants to run on each model (default: the mode's, in "
                                                      "bench.harness.ALL_VARIANTS order)")
    parser.add_argument("--resume", action="store_true",
                        help="zoo: continue an earlier run of the same parents and settings (keeps its rows, runs "
                             "the variants it lacks, re-times every child)")
    parser.add_argument("--redo", nargs="+", default=[], help="with --resume: variants to run again (from "
                                                                "bench.harness.ALL_VARIANTS)")
    parser.add_argument("--out", type=Path, help="results directory (default: bench/results[/MODE])")
    parser.add_argument("--report", type=Path, help="report file (default: bench/REPORT.md or bench/REPORT-MODE.md)")
    args = parser.parse_args(argv)

    from bench.harness import ALL_VARIANTS, MODES, run_zoo

    unknown = sorted(set(args.redo) - set(ALL_VARIANTS))
    if unknown:
        parser.error(f"--redo: unknown variant(s) {', '.join(unknown)}; known: {', '.join(ALL_VARIANTS)}")
    if args.redo and not args.resume:
        parser.error("--redo only makes sense with --resume (without it every variant runs anyway)")

    mode = MODES[args.mode or ("quick" if args.quick else "full")]
    out = args.out or mode.results_dir
    report = args.report or (BENCH / ("REPORT.md" if mode.name == "full" else f"REPORT-{mode.name}.md"))
    configure_tensorflow()
    started = time.perf_counter()
    timings = {}
    # the scale experiments first: shorter, and their goals do not wait for hours of zoo runs
    if "resnet50" not in args.skip and mode.scale is not None:
        from bench.scale import run_resnet50

        t0 = time.perf_counter()
        run_resnet50(mode, out)
        timings["resnet50"] = time.perf_counter() - t0
    if "depth" not in args.skip and mode.depth_blocks:
        from bench.scale import depth_sweep

        t0 = time.perf_counter()
        depth_sweep(mode, out)
        timings["depth"] = time.perf_counter() - t0
    if "zoo" not in args.skip:
        t0 = time.perf_counter()
        run_zoo(mode, models=tuple(args.models) if args.models else None, out_dir=out,
                variants=tuple(args.variants) if args.variants else None, resume=args.resume, redo=tuple(args.redo))
        timings["zoo"] = time.perf_counter() - t0
    if "dask" not in args.skip:  # after the zoo: it searches a trained zoo parent
        from bench.dask_search import run_dask_search

        t0 = time.perf_counter()
        run_dask_search(mode, out)
        timings["dask"] = time.perf_counter() - t0
    if "report" not in args.skip:
        from bench.report.load import load_results, quick_fallback
        from bench.report.render import render

        render(load_results(out, fallback=quick_fallback(out)), report, results_dir=out)
        log(f"wrote {report}")
    log(f"bench.run {mode.name}: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + f"; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
