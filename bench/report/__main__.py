"""``python -m bench.report [--results DIR] [--out REPORT.md]``: render a report from the result files."""

from __future__ import annotations

import argparse
from pathlib import Path

import bench.report
from bench.common import BENCH, RESULTS_DIR
from bench.report.load import load_results, quick_fallback
from bench.report.render import render


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=bench.report.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--out", type=Path, default=BENCH / "REPORT.md")
    args = parser.parse_args(argv)
    render(load_results(args.results, fallback=quick_fallback(args.results)), args.out, results_dir=args.results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
